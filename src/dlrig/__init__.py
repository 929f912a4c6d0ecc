"""dlrig: rigorous, reproducible deep-learning experiments as a DVC pipeline."""

__version__ = "0.1.0"
