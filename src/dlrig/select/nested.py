"""Nested cross-validation: select hyperparameters on inner folds, score the selection on outer folds.

``cv.depth`` chooses how honest the estimate is:

1. plain CV -- the best config's score on the very folds that chose it (optimistic; labelled so);
2. nested -- an inner search on each outer-train, the winner refit there and scored on its outer-test;
3. a middle loop between them chooses among ``cv.candidates`` (model families or search strategies),
   each candidate judged by its own nested estimate on the outer-train.

The *optimism* (best inner score - outer score) shows whether the nesting mattered on this data. The final
config is selected the same way on the whole training split. The driver does not know what a model is: a
``Scorer`` trains and scores (torch models, or a scikit-learn estimator for the oracle test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dlrig.data.folds import Folds, make_folds
from dlrig.errors import UserError
from dlrig.params import CvParams, SearchParams
from dlrig.seeds import derive_seed
from dlrig.select.search import Pruner, SearchResult, Trial, run_search
from dlrig.select.space import Dimension


class Scorer(Protocol):
    metric: str

    def cv_trials(
        self, configs: list[dict[str, Any]], folds: Folds, pruner: Pruner | None, seed: int
    ) -> list[Trial]: ...

    def holdout(
        self, config: dict[str, Any], train: np.ndarray, test: np.ndarray, seed: int, *,
        refit_info: dict[str, Any] | None = None,
    ) -> dict[str, float]: ...


def _where(where: tuple) -> str:
    """A selection's place in words: ("outer", 2) -> "outer fold 2", ("final",) -> "final selection"."""
    if where and where[0] == "final":
        return "final selection on all training rows"
    if where and where[0] == "plain":
        return "plain CV"
    return " ".join(f"{w} fold" if w in ("outer", "middle") else str(w) for w in where)


@dataclass
class Selection:
    config: dict[str, Any]
    inner_score: float
    search: SearchResult | None
    candidates: dict[str, float] | None = None  # depth 3: each candidate's middle-loop estimate
    candidate: str | None = None


class NestedCV:
    def __init__(
        self,
        scorer: Scorer,
        y: np.ndarray,
        groups: np.ndarray | None,
        dims: list[Dimension],
        search: SearchParams,
        cv: CvParams,
        seed: int,
        start: dict[str, Any],
    ) -> None:
        self.scorer, self.y, self.groups, self.dims = scorer, y, groups, dims
        self.search, self.cv, self.seed, self.start = search, cv, seed, start

    # ------------------------------------------------------------------ one selection on some rows
    def _search(
        self,
        rows: np.ndarray,
        fixed: dict[str, Any],
        strategy: str | None,
        where: tuple,
        folds: Folds | None = None,
    ) -> Selection:
        # The inner splitter's random_state is the same for every outer fold, as when one GridSearchCV
        # object is cross-validated (the oracle test relies on it).
        folds = folds or make_folds(self.y, self.groups, rows, self.cv.inner_folds, self.seed + 1)
        job_seed = derive_seed(self.seed, *where)

        def evaluate(configs: list[dict[str, Any]], pruner: Pruner | None) -> list[Trial]:
            trials = self.scorer.cv_trials([{**fixed, **c} for c in configs], folds, pruner, job_seed)
            for trial, config in zip(trials, configs, strict=True):
                trial.config = config
            return trials

        try:
            result = run_search(
                self.dims, self.search, evaluate, seed=job_seed, start=self.start, strategy=strategy
            )
        except UserError as exc:  # every trial failed: say in which selection
            raise UserError(f"{_where(where)}: {exc}") from None
        return Selection({**fixed, **result.best.config}, result.best.score, result)

    def _strategy(self, fixed: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        fixed = dict(fixed)
        return fixed, fixed.pop("search.strategy", None)

    def select(self, rows: np.ndarray, where: tuple) -> Selection:
        """Choose a config using only ``rows`` (depth 3 adds the candidate choice)."""
        if self.cv.depth < 3:
            return self._search(rows, {}, None, where)
        estimates: dict[str, float] = {}
        middle = make_folds(self.y, self.groups, rows, self.cv.middle_folds, self.seed + 2)
        for name, overrides in sorted((self.cv.candidates or {}).items()):
            fixed, strategy = self._strategy(overrides)
            scores = []
            for m, (m_train, m_test) in enumerate(middle):
                chosen = self._search(m_train, fixed, strategy, (*where, "middle", m, name))
                seed = derive_seed(self.seed, *where, "middle-refit", m, name)
                scores.append(self.scorer.holdout(chosen.config, m_train, m_test, seed)[self.scorer.metric])
            estimates[name] = float(np.mean(scores))
        best_name = max(sorted(estimates), key=lambda n: estimates[n])
        fixed, strategy = self._strategy(self.cv.candidates[best_name])
        chosen = self._search(rows, fixed, strategy, (*where, "chosen", best_name))
        chosen.candidates, chosen.candidate = estimates, best_name
        return chosen

    # ------------------------------------------------------------------------------ the estimates
    def outer_fold(self, k: int, train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
        chosen = self.select(train, ("outer", k))
        refit: dict[str, Any] = {}
        scores = self.scorer.holdout(chosen.config, train, test, derive_seed(self.seed, "outer-refit", k),
                                     refit_info=refit)
        record = self._fold_record(k, train, test, chosen, scores)
        record["refit"] = refit or None  # the refit's per-epoch history, for the report's per-fold curves
        return record

    def _fold_record(self, k, train, test, chosen: Selection, scores) -> dict[str, Any]:
        """One outer fold's record: a pure function of the params (no wall-clock time, so two runs of the
        same params write byte-identical reports/cv/folds.json; timings go to reports/run/train.json)."""
        return {
            "fold": k,
            "train_index": train.tolist(),
            "test_index": test.tolist(),
            "best_config": chosen.config,
            "best_inner_score": round(chosen.inner_score, 6),
            "outer_score": round(scores[self.scorer.metric], 6),
            "outer_metrics": {m: round(v, 6) for m, v in scores.items()},
            "candidates": chosen.candidates,
            "candidate": chosen.candidate,
            "search": chosen.search.to_json() if chosen.search else None,
        }

    # ------------------------------------------------------------------------ the work, counted
    def planned_fits(self) -> int:
        """How many fits the whole run trains (the progress bar's total), counted from the design.

        Exact for grid without refinement and for random search over a range; an upper bound otherwise
        (a bayes or random proposal seen before reuses its fits, ``stop_when`` or ``budget_minutes`` stops
        early, refinement reuses the grid points it already has). The final refit on all rows (the train
        stage's) is not included: it is no part of the selection.
        """
        cv = self.cv
        if cv.depth == 1:
            return self._search_size(None) * cv.outer_folds
        selection = self._search_size(None) * cv.inner_folds
        if cv.depth >= 3:
            candidates = (cv.candidates or {}).items()
            sizes = {name: self._search_size(self._strategy(o)[1]) for name, o in candidates}
            middle = sum(cv.middle_folds * (size * cv.inner_folds + 1) for size in sizes.values())
            selection = middle + max(sizes.values(), default=1) * cv.inner_folds
        return cv.outer_folds * (selection + 1) + selection  # + 1: each outer refit; + the final selection

    def _search_size(self, strategy: str | None) -> int:
        """Configs one search evaluates (at most); see :meth:`planned_fits`."""
        dims, search = self.dims, self.search
        if not dims:
            return 1
        strategy = strategy or search.strategy
        grid = int(np.prod([len(d.grid()) for d in dims]))
        if strategy == "grid":
            rounds = max((d.refine for d in dims), default=0)
            refined = int(np.prod([max(len(d.grid()) - 2, 1) + 2 if _refined(d) else 1 for d in dims]))
            return grid + rounds * refined
        if strategy == "coordinate":
            return min(search.n_trials, sum(len(d.grid()) for d in dims))
        if all(d.low is None for d in dims):  # random / bayes over lists: at most every combination
            return min(search.n_trials, grid)
        return search.n_trials

    def outer_folds(self, rows: np.ndarray) -> Folds:
        return make_folds(self.y, self.groups, rows, self.cv.outer_folds, self.seed)

    def plain_cv(self, rows: np.ndarray) -> tuple[list[dict[str, Any]], Selection]:
        """Depth 1: select and score on the same folds (optimistic), one record per fold."""
        folds = self.outer_folds(rows)
        chosen = self._search(rows, {}, None, ("plain",), folds=folds)
        best = chosen.search.best
        records = []
        for k, (train, test) in enumerate(folds):
            scores = {m: vs[k] for m, vs in best.metrics.items()} or {self.scorer.metric: best.scores[k]}
            rec = self._fold_record(k, train, test, chosen, scores)
            rec["search"] = None
            records.append(rec)
        return records, chosen

    # ------------------------------------------------------------------ the work, known up front
    def upfront(self) -> bool:
        """Whether every search's first batch is known before any fit: grid and random search, depth 2,
        nothing that makes the search one trial at a time (pruning, ``stop_when``, a wall-clock budget).
        Then :meth:`first_batch` of every selection can be trained together (bigger stacks)."""
        s = self.search
        return (self.cv.depth == 2 and s.strategy in ("grid", "random") and s.pruning == "none"
                and s.stop_when is None and getattr(s, "budget_minutes", None) is None)

    def lockstep(self) -> bool:
        """Whether the selections can run side by side, one search step each per round (:mod:`dlrig.select.
        run`'s lock-step): depth 2, a search that asks one batch at a time and is not known up front (bayes;
        random or coordinate with ``stop_when``), no pruning (its on-epoch decisions need the trial's own
        fit loop), no wall clock (``budget_minutes``: a round's time would be every selection's) and no
        shared Optuna storage (its studies learn from other processes' trials as they arrive)."""
        s = self.search
        return (self.cv.depth == 2 and not self.upfront() and s.strategy != "grid" and s.pruning == "none"
                and s.budget_minutes is None and s.storage is None)

    def first_batch(self, rows: np.ndarray, where: tuple) -> tuple[list[dict[str, Any]], Folds, int]:
        """The (configs, inner folds, seed) of the first ``scorer.cv_trials`` call that :meth:`select` on
        ``rows`` makes: the search itself is run up to that call, so the batch is the search's own, in its
        order (grid refinement rounds come later and are not in it)."""
        captured: list[tuple] = []

        class _Captured(Exception):
            pass

        class _Recorder:  # a scorer that records the call and stops the search there
            metric = self.scorer.metric

            def cv_trials(self, configs, folds, pruner, seed):
                captured.append((configs, folds, seed))
                raise _Captured

        scorer, self.scorer = self.scorer, _Recorder()
        try:
            self.select(rows, where)
        except _Captured:
            pass
        finally:
            self.scorer = scorer
        return captured[0]


def _refined(d: Dimension) -> bool:
    """Whether grid refinement adds points on this dimension (as ``search.grid_search`` decides)."""
    return bool(d.refine and d.numeric and d.low is not None)


def summarise(records: list[dict[str, Any]], metric: str, depth: int) -> dict[str, Any]:
    """Mean ± std, a t interval, and the optimism of selection over the outer folds."""
    from scipy import stats

    outer = np.array([r["outer_score"] for r in records])
    inner = np.array([r["best_inner_score"] for r in records])
    k = len(outer)
    half = float(stats.t.ppf(0.975, k - 1) * outer.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    optimism = inner - outer
    return {
        "metric": metric,
        "depth": depth,
        "optimistic": depth == 1,
        "mean": round(float(outer.mean()), 6),
        "std": round(float(outer.std(ddof=1)) if k > 1 else 0.0, 6),
        "ci95": [round(float(outer.mean()) - half, 6), round(float(outer.mean()) + half, 6)],
        "scores": [round(float(s), 6) for s in outer],
        "optimism": round(float(optimism.mean()), 6) if depth > 1 else None,
        "optimism_per_fold": [round(float(o), 6) for o in optimism] if depth > 1 else None,
    }
