import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.labels.corrupt import corrupt_training_labels
from dlrig.params import LabelsParams


def data():
    rng = np.random.default_rng(0)
    return Dataset(rng.normal(size=(300, 4)).astype(np.float32), np.repeat(np.arange(3), 100),
                   ["a", "b", "c"], "test")


def test_default_changes_nothing():
    ds = data()
    out, report, truth = corrupt_training_labels(ds, LabelsParams(), seed=0)
    assert np.array_equal(out.y, ds.y) and np.array_equal(out.X, ds.X) and not truth["flipped"].any()
    assert report["n_after"] == 300


def test_imbalance_then_noise_keeps_the_truth():
    cfg = LabelsParams.model_validate({"noise": {"kind": "symmetric", "rate": 0.4},
                                       "imbalance": {"profile": "step", "ratio": 10}})
    ds = data()
    out, report, truth = corrupt_training_labels(ds, cfg, seed=3)
    assert report["imbalance"]["counts"] == [100, 10, 10] or sorted(np.bincount(truth["y_clean"])) == [10, 10, 100]
    assert np.array_equal(truth["y_clean"], ds.y[truth["source_index"]])
    assert np.array_equal(truth["flipped"], out.y != truth["y_clean"])
    assert 0.25 < truth["flipped"].mean() < 0.55
    again = corrupt_training_labels(ds, cfg, seed=3)[0]
    assert np.array_equal(again.y, out.y)


# --------------------------------------------------------------------- enough samples for the folds
import pytest  # noqa: E402

from dlrig.data.folds import make_folds  # noqa: E402
from dlrig.errors import UserError  # noqa: E402
from dlrig.labels.corrupt import check_fold_sizes, min_per_class_for_cv  # noqa: E402
from dlrig.params import CvParams  # noqa: E402


def folds_work(count: int, cv: CvParams) -> bool:
    """Oracle: make every stratified split the train stage makes, for a class of ``count`` rows."""
    y = np.r_[np.zeros(60, np.int64), np.ones(count, np.int64)]

    def chain(rows: np.ndarray, ks: list[int], seed: int) -> None:
        if not ks:
            return
        for train, _ in make_folds(y, None, rows, ks[0], seed):
            chain(train, ks[1:], seed + 1)

    rows = np.arange(len(y))
    try:
        if cv.depth == 1:
            chain(rows, [cv.outer_folds], 0)
        elif cv.depth == 2:
            chain(rows, [cv.outer_folds, cv.inner_folds], 0)
            chain(rows, [cv.inner_folds], 0)
        else:
            chain(rows, [cv.outer_folds, cv.middle_folds, cv.inner_folds], 0)
            chain(rows, [cv.outer_folds, cv.inner_folds], 0)
            chain(rows, [cv.middle_folds, cv.inner_folds], 0)
    except UserError:
        return False
    return True


@pytest.mark.parametrize(
    "cv",
    [CvParams(depth=1, outer_folds=5), CvParams(), CvParams(outer_folds=3, inner_folds=5),
     CvParams(outer_folds=10, inner_folds=2), CvParams(depth=3, outer_folds=4, middle_folds=3, inner_folds=3)],
)
def test_min_per_class_for_cv_is_exactly_what_the_folds_need(cv):
    need = min_per_class_for_cv(cv)
    assert folds_work(need, cv) and not folds_work(need - 1, cv)


def test_check_fold_sizes_names_the_keys():
    ds = data()
    cfg = LabelsParams.model_validate({"imbalance": {"profile": "step", "ratio": 50}})
    out, _, _ = corrupt_training_labels(ds, cfg, seed=0)
    before = np.bincount(ds.y)
    with pytest.raises(UserError) as err:
        check_fold_sizes(out, before, cfg, CvParams())
    assert str(err.value) == (
        "labels: class 'b' is left with 2 training sample(s) by labels.imbalance.ratio=50 (profile step; 100 "
        "before) (1 other class(es) too), but cv.outer_folds=5, cv.inner_folds=3 (cv.depth=2) need at least 5 "
        "per class (the train stage's stratified folds); labels.detect.n_splits=3 needs at least 3 per class "
        "(the detect stage's folds): lower labels.imbalance.ratio to at most 22, or lower cv.outer_folds / "
        "cv.inner_folds / labels.detect.n_splits"
    )
    ok = LabelsParams.model_validate({"imbalance": {"profile": "step", "ratio": 22}})
    check_fold_sizes(corrupt_training_labels(ds, ok, seed=0)[0], before, ok, CvParams())  # 5 per class: fine
    no_detect = LabelsParams.model_validate({"detect": {"enabled": False}})
    small = ds.subset(np.r_[np.arange(200), 200, 201])  # class 'c' has 2 rows to begin with
    with pytest.raises(UserError, match="class 'c' has only 2 training sample.*collect more data, or lower "
                                        "cv.outer_folds / cv.inner_folds$"):
        check_fold_sizes(small, np.bincount(small.y), no_detect, CvParams())


def test_only_the_unmet_need_is_named():
    ds = data()
    small = ds.subset(np.r_[np.arange(200), 200, 201, 202])  # class 'c' has 3 rows
    cfg = LabelsParams.model_validate({"detect": {"n_splits": 4}})
    with pytest.raises(UserError) as err:
        check_fold_sizes(small, np.bincount(small.y), cfg, CvParams(depth=1, outer_folds=2))
    assert str(err.value) == (
        "labels: class 'c' has only 3 training sample(s), but labels.detect.n_splits=4 needs at least 4 per "
        "class (the detect stage's folds): collect more data, or lower labels.detect.n_splits"
    )
