"""Small settings of every study, shared by the tests that run the whole studies pipeline (the README
recipes, the stage-deps audit): they check that each study runs and what it reads, not its findings."""

# Every study at a few seconds: the recipes check that each runs and writes its page, not its findings
# (tests/studies/ check those on their own small settings, and the committed page holds the real run).
STUDIES_SMALL = {
    "double_descent": {"subset": 200, "widths": [1, 8, 64], "epochs": 20, "epoch_width": None},
    "overparam": {"widths": [4, 32], "batch_sizes": [32, 128], "epochs": 2, "min_steps": 10, "directions": 10},
    "grokking": {"modular": {"p": 13, "op": "add"}, "steps": 40, "evals": 6},
    "gradients": {"depths": [3, 5], "activations": ["sigmoid", "relu"], "inits": ["default", "kaiming_normal"],
                  "steps": 5, "remedy_depth": 5},
    "lr_range": {"steps": 30, "seeds": 3},
    "augmentation": {"per_class": [5, 10], "epochs": 2, "min_steps": 5},
    "distillation": {"folds": 2, "epochs": 2},
    "transfer": {"samples_per_class": [5, 10], "modes": ["scratch", "linear_probe"], "extractors": ["pca"],
                 "min_steps": 5},
}
