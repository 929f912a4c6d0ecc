"""Scorers train and score configs for the nested-CV driver: torch models (fast batched path, resumable
cache) and scikit-learn estimators (the oracle the torch path is checked against).

Every result is a pure function of (code, data, rows, config, seed), so it is cached on disk under that
key: a run killed mid-way resumes from the finished work and gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.io import load_json, save_json
from dlrig.params import FitConfig
from dlrig.select.search import Pruner, Trial

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "neg_log_loss")


def score_proba(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """The selection metrics (higher is better for all four) from predicted probabilities."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

    pred = proba.argmax(1)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)),
        "neg_log_loss": -float(log_loss(y, np.clip(proba, 1e-15, 1), labels=np.arange(n_classes))),
    }


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
            h.update(str(part.dtype).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def code_fingerprint() -> str:
    """A hash of the dlrig sources: a cache entry from other code is never reused."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py"))
    return _digest([str(p.relative_to(root)) for p in files], *[p.read_bytes().hex() for p in files])


class ResultCache:
    """Content-addressed JSON results under ``directory`` (atomic writes; safe across processes)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        if self.directory is None or not self._path(key).is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_json(self._path(key))

    def put(self, key: str, value: Any) -> None:
        if self.directory is not None:
            save_json(self._path(key), value)


class TorchScorer:
    """Scores training configs (dotted overrides of ``base``) with the dlrig fit loop."""

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        base: FitConfig,
        metric: str,
        *,
        device: str = "cpu",
        cache: ResultCache | None = None,
        batched: bool = True,
    ) -> None:
        self.X, self.y, self.n_classes, self.base, self.metric = X, y, n_classes, base, metric
        self.device = device
        try:
            import dlrig.train.batched  # noqa: F401
        except ImportError:
            batched = False
        self.batched = batched
        self.cache = cache or ResultCache(None)
        self._fp = _digest(code_fingerprint(), X, y)

    def _jobs_key(self, kind: str, jobs: list[tuple[dict, np.ndarray, np.ndarray, int]], extra: Any) -> str:
        return _digest(self._fp, kind, extra, *[(c, _digest(tr), _digest(te), s) for c, tr, te, s in jobs])

    def fit_score(
        self,
        jobs: list[tuple[dict, np.ndarray, np.ndarray, int]],
        pruner: Pruner | None,
        keep_proba: bool = False,
    ) -> list[dict[str, Any]]:
        """Train each (config, train rows, eval rows, seed) job and score it on its eval rows."""
        from dlrig.train import fit, predict_proba

        configs = [self.base.with_overrides(c) for c, _, _, _ in jobs]
        if self.batched and pruner is None:
            from dlrig.train.batched import FitJob, fit_many

            fitted = fit_many(
                self.X,
                self.y,
                self.n_classes,
                [FitJob(tr, cfg, s) for (_, tr, _, s), cfg in zip(jobs, configs, strict=True)],
                device=self.device,
            )
            pruned = [False] * len(jobs)
        else:
            fitted, pruned, curves = [], [], []
            for (_, tr, _, s), cfg in zip(jobs, configs, strict=True):
                curve: dict[int, float] = {}
                curves.append(curve)
                stop = [False]

                def on_epoch(record: dict[str, float], curve=curve, stop=stop) -> bool:
                    score = record.get("val_accuracy", record["train_accuracy"])
                    curve[int(record["epoch"])] = score
                    if pruner is not None and pruner.should_stop(int(record["epoch"]), score):
                        stop[0] = True
                        return False
                    return True

                fitted.append(
                    fit(self.X[tr], self.y[tr], self.n_classes, cfg, s, device=self.device, on_epoch=on_epoch)
                )
                pruned.append(stop[0])
                if pruner is not None and not stop[0]:
                    pruner.record(curve)
        out = []
        for (_, _, te, _), result, was_pruned in zip(jobs, fitted, pruned, strict=True):
            proba = predict_proba(result.model, self.X[te])
            rec = {
                "metrics": score_proba(self.y[te], proba, self.n_classes),
                "n_val": int(len(te)),
                "pruned": was_pruned,
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
            }
            if pruner is not None:
                rec["curve"] = curves.pop(0)
            if keep_proba:
                rec["proba"] = np.round(proba, 6).tolist()
            out.append(rec)
        return out

    def cv_trials(
        self, configs: list[dict[str, Any]], folds, pruner: Pruner | None, seed: int
    ) -> list[Trial]:
        jobs = [(c, tr, te, seed) for c in configs for tr, te in folds]
        extra = None if pruner is None else (pruner.kind, pruner.after, pruner.curves)
        key = self._jobs_key("cv", jobs, extra)
        results = self.cache.get(key)
        if results is None:
            results = self.fit_score(jobs, pruner)
            self.cache.put(key, results)
        elif pruner is not None:  # replay what the pruner learnt from these runs
            pruner.curves.extend(
                {int(e): v for e, v in r["curve"].items()} for r in results if not r["pruned"]
            )
        trials, k = [], len(folds)
        for i, config in enumerate(configs):
            chunk = results[i * k : (i + 1) * k]
            was_pruned = any(r["pruned"] for r in chunk)
            trials.append(
                Trial(
                    number=-1,
                    config=config,
                    scores=[] if was_pruned else [r["metrics"][self.metric] for r in chunk],
                    n_val=[r["n_val"] for r in chunk],
                    pruned=was_pruned,
                    metrics={m: [r["metrics"][m] for r in chunk] for m in METRICS},
                    info={"epochs": [r["epochs"] for r in chunk]},
                )
            )
        return trials

    def holdout(
        self, config: dict[str, Any], train: np.ndarray, test: np.ndarray, seed: int, keep_proba: bool = False
    ) -> dict[str, Any]:
        jobs = [(config, train, test, seed)]
        key = self._jobs_key("holdout", jobs, keep_proba)
        result = self.cache.get(key)
        if result is None:
            result = self.fit_score(jobs, None, keep_proba=keep_proba)[0]
            self.cache.put(key, result)
        return result["metrics"]


class SklearnScorer:
    """The same interface over a scikit-learn estimator: configs are ``set_params`` keyword arguments."""

    def __init__(self, estimator: Any, X: np.ndarray, y: np.ndarray, metric: str = "accuracy") -> None:
        self.estimator, self.X, self.y, self.metric = estimator, X, y, metric

    def _score(self, config: dict[str, Any], train: np.ndarray, test: np.ndarray) -> dict[str, float]:
        from sklearn.base import clone

        model = clone(self.estimator).set_params(**config).fit(self.X[train], self.y[train])
        return {"accuracy": float(model.score(self.X[test], self.y[test]))}

    def cv_trials(self, configs, folds, pruner, seed) -> list[Trial]:
        trials = []
        for config in configs:
            scores = [self._score(config, tr, te)["accuracy"] for tr, te in folds]
            trials.append(
                Trial(-1, config, scores, [len(te) for _, te in folds], metrics={"accuracy": scores})
            )
        return trials

    def holdout(self, config, train, test, seed) -> dict[str, float]:
        return self._score(config, train, test)
