"""Scorers train and score configs for the nested-CV driver: torch models (fast batched path, resumable
cache) and scikit-learn estimators (the oracle the torch path is checked against).

Every result is a pure function of (code, library versions, device, data, rows, the full resolved training
config, seed), so it is cached on disk under a key derived from exactly those: the key is computed from the
``FitConfig`` objects the fits receive (not from the searched overrides), so a change to any training key --
searched or not -- is a miss. A run killed mid-way resumes from the finished work and gives the same numbers
as an uninterrupted one.

A fit that diverges (non-finite training loss) or raises a :class:`UserError` is a result too: its record
says ``failed`` and why, it is cached like any other, and the trial it belongs to is ``failed``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.errors import UserError
from dlrig.io import immediate, save_json
from dlrig.params import FitConfig
from dlrig.progress import NO_PROGRESS, Tally
from dlrig.select.search import Pruner, Trial
from dlrig.train.callbacks import Callback
from dlrig.train.distill import file_sha256
from dlrig.train.predict import score_proba

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "neg_log_loss")


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
            h.update(str(part.dtype).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


@functools.cache  # the sources are read once per process (every scorer and the cluster check use it)
def code_fingerprint() -> str:
    """A hash of the dlrig sources and the numeric libraries' versions: an entry from other code is unused."""
    import sklearn
    import torch

    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py"))
    versions = {"torch": torch.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__}
    names = [str(p.relative_to(root)) for p in files]
    return _digest(versions, names, *[p.read_bytes().hex() for p in files])


def device_used(device: str) -> str:
    """The device a fit runs on, for the cache key: ``auto`` is the device it resolves to on this machine
    (a CPU result and a GPU result of the same config differ in their last bits), a GPU with its model."""
    from dlrig.train.fit import resolve_device

    dev = resolve_device(device)  # a missing cuda device is refused here, before any work
    if dev.type == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return dev.type


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


class Pruning(Callback):
    """Search pruning as a fit callback: records the run's curve (early-stopping accuracy, else training
    accuracy, per epoch) and stops the run when ``pruner`` calls it hopeless."""

    def __init__(self, pruner: Pruner | None) -> None:
        self.pruner = pruner
        self.curve: dict[int, float] = {}

    def on_epoch_end(self, state, record: dict[str, float]) -> None:
        epoch = int(record["epoch"])
        score = record.get("val_accuracy", record["train_accuracy"])
        self.curve[epoch] = score
        if self.pruner is not None and self.pruner.should_stop(epoch, score):
            state.request_stop(f"pruned ({self.pruner.kind}) at epoch {epoch}", pruned=True)


def _files(cfg: FitConfig) -> tuple[str, ...]:
    """The sha256 of every checkpoint the fit reads (a distillation teacher, pretrained weights): a config
    holds their paths, and a file rewritten at the same path must be a miss. Empty when it reads none."""
    from dlrig.train.transfer import uses_checkpoint, weights_sha256

    teacher, weights = cfg.train.distill.teacher, cfg.train.transfer.pretrained
    return (*((f"teacher:{file_sha256(teacher)}",) if teacher is not None else ()),
            *((f"pretrained:{weights_sha256(weights)}",) if uses_checkpoint(cfg) else ()))


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
        progress: Tally = NO_PROGRESS,
    ) -> None:
        self.X, self.y, self.n_classes, self.base, self.metric = X, y, n_classes, base, metric
        self.device = device
        # Counts finished fits for a progress bar (dlrig.progress); never part of a result or a cache key.
        self.progress = progress
        try:
            import dlrig.train.batched  # noqa: F401
        except ImportError:
            batched = False
        self.batched = batched
        self.cache = cache or ResultCache(None)
        self._fp = _digest(code_fingerprint(), X, y, n_classes, device_used(device))
        # Records trained ahead by prefetch(), by cache key: the searches replay them (also without a cache
        # directory). Same keys as the cache, so a record means the same whichever path trained it.
        self.ready: dict[str, Any] = {}

    def resolve(self, jobs: list[Job]) -> list[FitConfig]:
        """The training config each job's fit receives: ``base`` with the job's overrides applied (validated
        once per distinct overrides: a config's folds share it)."""
        resolved: dict[str, FitConfig] = {}
        for overrides, _, _, _ in jobs:
            name = json.dumps(overrides, sort_keys=True, default=str)
            if name not in resolved:
                resolved[name] = self.base.with_overrides(overrides)
        return [resolved[json.dumps(c, sort_keys=True, default=str)] for c, _, _, _ in jobs]

    def jobs_key(self, kind: str, jobs: list[Job], extra: Any = None,
                 configs: list[FitConfig] | None = None) -> str:
        """Cache key of a list of jobs, from the resolved configs the fits receive (every training key), and
        the torch threads they run with here; pass ``configs`` when they are already resolved."""
        configs = configs if configs is not None else self.resolve(jobs)
        import torch

        return _digest(
            self._fp, kind, extra,
            torch.get_num_threads(),  # the fits run in this process: 2 threads sum in other orders than 1
            *[(cfg.model_dump(mode="json"), _digest(tr), _digest(te), s, *_files(cfg))
              for cfg, (_, tr, te, s) in zip(configs, jobs, strict=True)],
        )

    def fit_score(
        self,
        jobs: list[Job],
        pruner: Pruner | None,
        keep_proba: bool = False,
        keep_history: bool = False,
        *,
        keep_failures: bool = False,
        configs: list[FitConfig] | None = None,
        holdout_from: int | None = None,
    ) -> list[dict[str, Any]]:
        """Train each (config, train rows, eval rows, seed) job and score it on its eval rows.

        Each record says whether the fit ``failed`` and why (``reason``): it diverged, or it raised a
        UserError. A diverged fit is still scored when its model predicts finite probabilities (early
        stopping restored an epoch before the divergence). With ``keep_failures`` (the search) a fit that
        raised a UserError, or left nothing to score, is a record with ``metrics`` None; without it (one
        refit, a baseline) it raises a UserError that names the job. Jobs from ``holdout_from`` on are refits
        trained in the same stack (:meth:`prefetch`): their records keep the history, and a failure raises.
        """
        from dlrig.train import fit, predict_proba
        from dlrig.train.fit import failure_reason, resolve_device

        # A missing device is this machine's problem, not a config's: refused before any fit could record
        # (and cache) it as a failed trial.
        resolve_device(self.device)
        configs = configs if configs is not None else self.resolve(jobs)
        curves: list[dict[int, float] | None] = [None] * len(jobs)
        counter = self.progress.jobs([cfg.train.epochs for cfg in configs])  # None when no bar is shown
        if self.batched and pruner is None:
            fitted = self._fit_many(jobs, configs, keep_failures, counter and counter.on_epoch)
        else:
            fitted = []
            for i, ((_, tr, _, s), cfg) in enumerate(zip(jobs, configs, strict=True)):
                watch = Pruning(pruner)
                try:
                    result = fit(self.X[tr], self.y[tr], self.n_classes, cfg, s, device=self.device,
                                 callbacks=[watch], on_epoch=None if counter is None else counter.callback(i))
                except UserError as exc:
                    if not keep_failures:
                        raise
                    fitted.append(f"error: {exc}")
                    continue
                fitted.append(result)
                curves[i] = watch.curve
                if pruner is not None and not result.info["pruned"]:
                    pruner.record(watch.curve)
        if counter is not None:
            counter.done()
        out = []
        search_rows = len(jobs) if holdout_from is None else holdout_from
        for i, ((overrides, tr, te, s), result, curve) in enumerate(zip(jobs, fitted, curves, strict=True)):
            if i >= search_rows:  # a refit trained in the search's stack: recorded as holdout() records it
                keep_history = True
                if isinstance(result, str):
                    raise UserError(result.removeprefix("error: "))
            if isinstance(result, str):  # the fit raised a UserError: nothing to score
                rec = {"metrics": None, "n_val": int(len(te)), "pruned": False, "failed": True,
                       "reason": result, "epochs": 0, "best_epoch": 0}
                proba = None
            else:
                proba = predict_proba(result.model, self.X[te])
                failed = failure_reason(result, self.n_classes)
                pruned = bool(result.info["pruned"])
                rec = {
                    "metrics": score_proba(self.y[te], proba, self.n_classes)
                    if failed is None or np.isfinite(proba).all() else None,
                    "n_val": int(len(te)),
                    "pruned": pruned,
                    "failed": failed is not None,
                    "reason": failed or (result.info.get("stop_reason") if pruned else None),
                    "epochs": len(result.history),
                    "best_epoch": result.best_epoch,
                }
            if rec["metrics"] is None and (not keep_failures or i >= search_rows):
                raise UserError(f"training {overrides or 'the base config'} on {len(tr)} rows (seed {s}) "
                                f"failed: {rec['reason']}; lower optim.lr or fix the params named")
            if pruner is not None:
                rec["curve"] = curve
            if keep_proba and proba is not None:
                rec["proba"] = np.round(proba, 6).tolist()
            if keep_history and not isinstance(result, str):  # the per-epoch curve, for the report
                rec["history"] = [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
                                  for row in result.history]
            out.append(rec)
        return out

    def _fit_many(self, jobs: list[Job], configs: list[FitConfig], keep_failures: bool,
                  on_epoch=None) -> list[Any]:
        """The stacked trainer over every job; a job whose fit raises a UserError gives its message.

        fit_many trains a whole batch at once, so one job's UserError stops them all: then each job is
        trained alone, by the same trainer (:meth:`_stacks`), to find the failing ones and still train the
        rest (a stacked fit's bytes do not depend on its stack mates: the same as in the batch).
        """
        from dlrig.train.batched import FitJob

        many = [FitJob(tr, cfg, s) for (_, tr, _, s), cfg in zip(jobs, configs, strict=True)]
        try:
            return self._stacks(many, on_epoch)
        except UserError:
            if not keep_failures:
                raise
        out: list[Any] = []
        for j, job in enumerate(many):
            one = None if on_epoch is None else (lambda _i, record, j=j: on_epoch(j, record))
            try:
                out.append(self._stacks([job], one)[0])
            except UserError as exc:
                out.append(f"error: {exc}")
        return out

    def _stacks(self, many: list, on_epoch=None) -> list[Any]:
        """fit_many (the hand-written MLP stack), and for the jobs it would give to fit() one by one but
        :mod:`dlrig.train.stacked_func` can stack (CNNs, recurrent nets, transformers), fit_stacked; results
        in job order.

        On a GPU always (whether a model's bits there depend on its stack mates is untested); on a CPU when
        torch runs one thread (``compute.torch_threads: 1``, the default, and every ``n_jobs`` worker):
        there a stacked model's bytes depend on its own job only, never on its stack mates
        (tests/train/test_stacked_func.py), which a cached fit needs. With two threads a stack of 3 gave
        other bits than a lone fit (oneDNN splits reductions by the stack's size): CNNs then train with
        fit() one by one.
        bench/cnn_stacked.py (digits CNN, the train stage's 41 fits of nested CV, one thread, 2 cores at
        load 3-4): 2.1x the per-fit loop in CPU and wall time (a stack of 6 inner fits ~2.5-3x per fit, a
        lone refit ~1.6x), the same fold accuracies and selection. A lone CNN goes through the stack too,
        so every fit in a search is made one way; fit() called directly agrees to float tolerance only.
        """
        from dlrig.train.batched import fit_many
        from dlrig.train.stacked_func import fit_stacked, stacks_here, trains_stacked

        shape, here = self.X.shape[1:], stacks_here(self.device)
        func = {j for j, job in enumerate(many) if here and trains_stacked(job.config, shape, self.n_classes)}
        if not func:
            return fit_many(self.X, self.y, self.n_classes, many, device=self.device, on_epoch=on_epoch)
        out: list[Any] = [None] * len(many)
        for trainer, idx in ((fit_many, [j for j in range(len(many)) if j not in func]),
                             (fit_stacked, sorted(func))):
            if not idx:
                continue
            back = None if on_epoch is None else (lambda i, record, idx=idx: on_epoch(idx[i], record))
            done = trainer(self.X, self.y, self.n_classes, [many[j] for j in idx], device=self.device,
                           on_epoch=back)
            for j, result in zip(idx, done, strict=True):
                out[j] = result
        return out

    def _fit_score_shared(self, jobs: list[Job], configs: list[FitConfig], n_jobs: int) -> list[dict]:
        """:meth:`fit_score` of search jobs in this process and ``n_jobs - 1`` worker processes: every
        stack (model shape) is cut into up to ``n_jobs`` sub-stacks, handed out one at a time
        (:func:`dlrig.select.pool.shared`; a worker only once it has imported torch, and this process runs
        what a worker still holds when it has none left), so a worker that is still starting holds nothing
        up. The workers are loky's reusable ones (joblib's): warm from one call to the next (an up-front
        search's two stacks, a lock-step run's rounds)."""
        from joblib.executor import get_memmapping_executor

        from dlrig.select.pool import shared
        from dlrig.train import work
        from dlrig.train.batched import batch_key
        from dlrig.train.stacked_func import stack_key

        groups: dict[Any, list[int]] = {}
        for i, cfg in enumerate(configs):  # fit() jobs: a "stack" each
            key = batch_key(cfg) or stack_key(cfg, self.X.shape[1:], self.n_classes) or ("alone", i)
            groups.setdefault(key, []).append(i)
        chunks = [part.tolist() for members in groups.values()
                  for part in np.array_split(np.asarray(members), min(len(members), n_jobs))]

        def here(task: tuple) -> tuple[list[dict], dict]:
            return self.fit_score(task[0], None, keep_failures=True, configs=task[1]), {}  # counted here

        tasks = [([jobs[i] for i in chunk], [configs[i] for i in chunk]) for chunk in chunks]
        records: list[dict] = [{}] * len(jobs)
        # loky's process-wide reusable executor, as joblib's Parallel gets it (with the attributes it expects)
        executor = get_memmapping_executor(n_jobs - 1)
        there = functools.partial(_fit_share, self)
        for c, (part, done) in shared(tasks, here, there, executor, n_jobs - 1, warm_up=True):
            work.merge(done)  # a worker's fits, for the stage's cost record
            for i, record in zip(chunks[c], part, strict=True):
                records[i] = record
        return records

    def prefetch(self, calls: list[tuple], holdouts: list[tuple] = (), n_jobs: int = 1) -> None:
        """Train, as one fit_many call, every job of several later ``cv_trials(configs, folds, None, seed)``
        ``calls`` and ``holdout(config, train, test, seed)`` ``holdouts`` that the cache does not have.

        fit_many stacks every job of one shape into one model, so the fits of all outer folds train
        together (bigger stacks: fewer, wider steps) instead of one call's fits at a time. Each call's
        records are cached under the key that call computes, and kept in :attr:`ready` for it. An MLP
        fit's numbers do not depend on which other models share its stack (tests/select/test_upfront.py:
        byte-identical selections), a torch.func (CNN) fit's only in the last bits; so with ``n_jobs`` > 1
        the stacks are cut into shares trained in that many processes.
        """
        todo: list[tuple[str, int, int, str]] = []  # (key, first job, jobs, kind); holdouts after the calls
        jobs: list[Job] = []
        configs: list[FitConfig] = []
        units = [("cv", [(c, tr, te, seed) for c in cs for tr, te in folds], None)
                 for cs, folds, seed in calls]
        units += [("holdout", [(c, tr, te, seed)], (False, "history")) for c, tr, te, seed in holdouts]
        for kind, unit, extra in units:
            resolved = self.resolve(unit)
            key = self.jobs_key(kind, unit, extra, resolved)
            if key in self.ready:
                continue
            cached = self.cache.get(key)
            if cached is not None:
                self.ready[key] = cached
                self.progress.fits(len(unit))
                continue
            todo.append((key, len(jobs), len(unit), kind))
            jobs += unit
            configs += resolved
        if not jobs:
            return
        n_cv = sum(n for _, _, n, kind in todo if kind == "cv")
        if n_jobs > 1 and not holdouts:
            records = self._fit_score_shared(jobs, configs, n_jobs)
        else:
            records = self.fit_score(jobs, None, keep_failures=True, configs=configs, holdout_from=n_cv)
        for key, first, n, kind in todo:
            value = records[first : first + n] if kind == "cv" else records[first]
            self.cache.put(key, value)
            self.ready[key] = value

    def cv_trials(
        self, configs: list[dict[str, Any]], folds, pruner: Pruner | None, seed: int
    ) -> list[Trial]:
        jobs = [(c, tr, te, seed) for c in configs for tr, te in folds]
        extra = None if pruner is None else (pruner.kind, pruner.after, pruner.curves)
        resolved = self.resolve(jobs)
        key = self.jobs_key("cv", jobs, extra, resolved)
        if key in self.ready:  # trained (or read) by prefetch(), which counted it
            results = self.ready[key]
            return [self._trial(config, results[i * len(folds) : (i + 1) * len(folds)])
                    for i, config in enumerate(configs)]
        results = self.cache.get(key)
        if results is None:
            results = self.fit_score(jobs, pruner, keep_failures=True, configs=resolved)
            self.cache.put(key, results)
        else:
            self.progress.fits(len(jobs))  # finished earlier: done at once
            if pruner is not None:  # replay what the pruner learnt from these runs
                pruner.curves.extend(
                    {int(e): v for e, v in r["curve"].items()}
                    for r in results if not r["pruned"] and r["curve"] is not None
                )
        return [self._trial(config, results[i * len(folds) : (i + 1) * len(folds)])
                for i, config in enumerate(configs)]

    def _trial(self, config: dict[str, Any], chunk: list[dict[str, Any]]) -> Trial:
        """One config's trial from its per-fold records: failed if any fold failed, else pruned if any
        fold was pruned, else complete (scored)."""
        failed = [(j, r["reason"]) for j, r in enumerate(chunk) if r["failed"]]
        pruned = [(j, r["reason"]) for j, r in enumerate(chunk) if r["pruned"]]
        state = "failed" if failed else "pruned" if pruned else "complete"
        reason = None
        if failed or pruned:
            j, why = (failed or pruned)[0]
            others = f"; {len(failed)} of {len(chunk)} folds failed" if len(failed) > 1 else ""
            reason = f"{why} (fold {j + 1} of {len(chunk)}{others})"
        return Trial(
            number=-1,
            config=config,
            scores=[r["metrics"][self.metric] for r in chunk] if state == "complete" else [],
            n_val=[r["n_val"] for r in chunk],
            state=state,
            reason=reason,
            metrics={m: [r["metrics"][m] for r in chunk] for m in METRICS} if state != "failed" else {},
            info={"epochs": [r["epochs"] for r in chunk]},
        )

    def holdout(
        self, config: dict[str, Any], train: np.ndarray, test: np.ndarray, seed: int,
        keep_proba: bool = False, *, refit_info: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Train on ``train``, score on ``test``; ``refit_info`` (if given) receives the fit's per-epoch
        ``history`` and ``best_epoch`` (the outer refits' learning curves in the report)."""
        jobs = [(config, train, test, seed)]
        resolved = self.resolve(jobs)
        key = self.jobs_key("holdout", jobs, (keep_proba, "history"), resolved)
        result = self.ready[key] if key in self.ready else self.cache.get(key)  # ready: prefetch counted it
        if key in self.ready:
            pass
        elif result is None:
            result = self.fit_score(jobs, None, keep_proba=keep_proba, keep_history=True, configs=resolved)[0]
            self.cache.put(key, result)
        else:
            self.progress.fits(1)
        if refit_info is not None:
            refit_info.update(history=result.get("history"), best_epoch=result.get("best_epoch"))
        return result["metrics"]  # a refit that fails raised a UserError in fit_score: nothing is cached


def _fit_share(scorer: TorchScorer, task: tuple) -> tuple[list[dict], dict]:
    """A worker process's sub-stack of search jobs (:meth:`TorchScorer._fit_score_shared`), one torch
    thread; returns the records and the fits it trained (for the parent's cost record)."""
    import torch

    from dlrig.select.pool import exit_with_parent
    from dlrig.train import work

    exit_with_parent()  # a killed stage takes its workers with it
    torch.set_num_threads(1)
    before = work.snapshot()
    jobs, configs = task
    records = scorer.fit_score(jobs, None, keep_failures=True, configs=configs)
    return records, work.since(before)


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

    def holdout(self, config, train, test, seed, *, refit_info=None) -> dict[str, float]:
        return self._score(config, train, test)  # no epochs: refit_info stays empty
