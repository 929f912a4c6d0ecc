"""Scorers train and score configs for the nested-CV driver: torch models (fast batched path, resumable
cache) and scikit-learn estimators (the oracle the torch path is checked against).

Every result is a pure function of (code, library versions, device, data, rows, the full resolved training
config, seed), so it is cached on disk under a key derived from exactly those: the key is computed from the
``FitConfig`` objects the fits receive (not from the searched overrides), so a change to any training key --
searched or not -- is a miss. A run killed mid-way resumes from the finished work and gives the same numbers
as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.io import immediate, save_json
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
    """A hash of the dlrig sources and the numeric libraries' versions: an entry from other code is unused."""
    import sklearn
    import torch

    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py"))
    versions = {"torch": torch.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__}
    names = [str(p.relative_to(root)) for p in files]
    return _digest(versions, names, *[p.read_bytes().hex() for p in files])


class ResultCache:
    """Content-addressed JSON results under ``directory`` (atomic writes; safe across processes).

    Each entry stores its own key beside the value, so an entry copied or edited under another name (a
    shared cache on several machines) is never used. An unreadable or mismatched entry is a miss: it is
    recomputed and overwritten, and one line says so.
    """

    def __init__(self, directory: str | Path | None, *, log=print) -> None:
        self.directory = Path(directory) if directory else None
        self.hits = self.misses = 0
        self.log = log

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        path = None if self.directory is None else self._path(key)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._damaged(path, f"unreadable: {type(exc).__name__}")
        if not isinstance(entry, dict) or entry.get("key") != key or "value" not in entry:
            return self._damaged(path, "its stored key does not match its name")
        self.hits += 1
        return entry["value"]

    def _damaged(self, path: Path, why: str) -> None:
        self.misses += 1
        self.log(f"cache: {path} is damaged ({why}); recomputing and overwriting it")
        return None

    def put(self, key: str, value: Any) -> None:
        if self.directory is not None:
            with immediate():  # a finished fit survives a crash of the stage that ran it: that is the point
                save_json(self._path(key), {"key": key, "value": value})


Job = tuple[dict[str, Any], np.ndarray, np.ndarray, int]  # (overrides, train rows, eval rows, seed)


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
        self._fp = _digest(code_fingerprint(), X, y, n_classes, device)

    def resolve(self, jobs: list[Job]) -> list[FitConfig]:
        """The training config each job's fit receives: ``base`` with the job's overrides applied."""
        return [self.base.with_overrides(c) for c, _, _, _ in jobs]

    def jobs_key(self, kind: str, jobs: list[Job], extra: Any = None) -> str:
        """Cache key of a list of jobs, from the resolved configs the fits receive (every training key)."""
        configs = self.resolve(jobs)
        return _digest(
            self._fp, kind, extra,
            *[(cfg.model_dump(mode="json"), _digest(tr), _digest(te), s)
              for cfg, (_, tr, te, s) in zip(configs, jobs, strict=True)],
        )

    def fit_score(
        self,
        jobs: list[Job],
        pruner: Pruner | None,
        keep_proba: bool = False,
    ) -> list[dict[str, Any]]:
        """Train each (config, train rows, eval rows, seed) job and score it on its eval rows."""
        from dlrig.train import fit, predict_proba

        configs = self.resolve(jobs)
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
        key = self.jobs_key("cv", jobs, extra)
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
        key = self.jobs_key("holdout", jobs, keep_proba)
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
