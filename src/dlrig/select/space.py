"""The search space declared in ``params.search.space``: what each hyperparameter may take.

A hyperparameter is a dotted training key (``optim.lr``, ``model.hidden``) with either a list of values
or a range ``{low, high, log, base, count, refine}``. Integer keys get integer points. Everything not in
the space is held at its params value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrig.params import FitConfig, RangeSpec


def _is_int_key(base: FitConfig, key: str) -> bool:
    section, _, leaf = key.partition(".")
    node: Any = getattr(base, section)
    for part in leaf.split(".")[:-1]:
        node = getattr(node, part)
    return isinstance(getattr(node, leaf.split(".")[-1]), int) and not isinstance(
        getattr(node, leaf.split(".")[-1]), bool
    )


def _round(value: float) -> float:
    """Grid points with 6 significant digits: 0.001 stays 0.001, not 0.0010000000000000002."""
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "float" | "int" | "categorical"
    values: tuple[Any, ...] | None  # the discrete candidates (lists, and ranges on a grid)
    low: float | None = None
    high: float | None = None
    log: bool = False
    base: float = 10.0
    refine: int = 0

    @property
    def numeric(self) -> bool:
        return self.kind in {"float", "int"}

    def grid(self) -> list[Any]:
        return list(self.values or ())

    def cast(self, value: float) -> Any:
        return int(round(value)) if self.kind == "int" else _round(value)

    def sample_unit(self, u: float) -> Any:
        """Map u in [0, 1) into the dimension: log-uniform / uniform over a range, or a list entry."""
        if self.low is None:
            values = self.grid()
            return values[min(int(u * len(values)), len(values) - 1)]
        if self.log:
            lo, hi = math.log(self.low, self.base), math.log(self.high, self.base)
            return self.cast(self.base ** (lo + u * (hi - lo)))
        return self.cast(self.low + u * (self.high - self.low))

    def refine_around(self, best: Any, count: int) -> list[Any]:
        """``count`` points between the grid neighbours of ``best`` (same spacing rule), best included."""
        values = sorted(self.grid())
        i = values.index(best)
        lo, hi = values[max(i - 1, 0)], values[min(i + 1, len(values) - 1)]
        points = _spaced(lo, hi, count + 2, self.log, self.base)
        return sorted({self.cast(p) for p in points} | {best})

    def describe(self) -> dict[str, Any]:
        """The JSON form analysis and figures use."""
        return {
            "type": self.kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "values": self.grid() or None,
        }


def _spaced(low: float, high: float, count: int, log: bool, base: float) -> list[float]:
    if log:
        return [float(v) for v in np.logspace(math.log(low, base), math.log(high, base), count, base=base)]
    return [float(v) for v in np.linspace(low, high, count)]


def build_space(space: dict[str, list[Any] | RangeSpec], base: FitConfig) -> list[Dimension]:
    """Dimensions in sorted key order (the order scikit-learn's ParameterGrid also uses)."""
    dims = []
    for name in sorted(space):
        spec = space[name]
        is_int = _is_int_key(base, name)
        if isinstance(spec, RangeSpec):
            kind = "int" if is_int else "float"
            dim = Dimension(name, kind, None, spec.low, spec.high, spec.log, spec.base, spec.refine)
            points = _spaced(spec.low, spec.high, spec.count, spec.log, spec.base)
            values = tuple(dict.fromkeys(dim.cast(p) for p in points))
            dims.append(Dimension(name, kind, values, spec.low, spec.high, spec.log, spec.base, spec.refine))
        else:
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec)
            kind = ("int" if is_int else "float") if numeric else "categorical"
            values = tuple(dict.fromkeys(spec))
            # A numeric list spanning two decades or more is read (and plotted) on a log scale.
            log = bool(numeric and len(values) > 1 and min(values) > 0 and max(values) / min(values) >= 100)
            dims.append(Dimension(name, kind, values, log=log))
    return dims


def config_key(config: dict[str, Any]) -> tuple:
    return tuple(sorted(config.items()))


def describe_space(dims: list[Dimension]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in dims:
        desc = d.describe()
        if d.low is None and d.numeric and d.values and len(d.values) > 1:
            desc["low"], desc["high"] = min(d.values), max(d.values)
        out[d.name] = desc
    return out
