import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dlrig.errors import UserError
from dlrig.labels.detect import (
    detection_scores,
    find_label_issues,
    normalized_entropy,
    out_of_fold_proba,
)
from dlrig.labels.noise import inject_noise

# Six hand-made rows, three classes. Row 1 is labelled 0 but the model is sure it is a 1 (contradicted);
# row 3 is labelled 1 and the model cannot tell the classes apart (ambiguous).
Y = np.array([0, 0, 1, 1, 2, 2])
PROBA = np.array([
    [0.90, 0.05, 0.05],
    [0.04, 0.92, 0.04],
    [0.05, 0.90, 0.05],
    [0.34, 0.33, 0.33],
    [0.05, 0.05, 0.90],
    [0.05, 0.10, 0.85],
])


def test_hand_made_rows_known_answer():
    r = find_label_issues(Y, PROBA, 3)
    # t_j = mean p_j over rows labelled j.
    assert np.allclose(r["thresholds"], [(0.90 + 0.04) / 2, (0.90 + 0.33) / 2, (0.90 + 0.85) / 2])
    # Row 0 -> (0, 0); row 1 -> (0, 1); row 2 -> (1, 1); row 4 -> (2, 2); rows 3 and 5: no class confident.
    assert r["confident_joint"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert r["true_label_guess"].tolist() == [0, 1, 1, -1, 2, -1]
    # Calibrated: each row rescaled to the given count (2 per class), then the total to 1.
    assert np.allclose(r["calibrated_joint"], np.array([[1, 1, 0], [0, 2, 0], [0, 0, 2]]) / 6)
    assert np.isclose(r["noise_rate"], 1 / 6)
    assert r["issue_mask"].tolist() == [False, True, False, False, False, False]
    assert r["contradicted_mask"].tolist() == [False, True, False, False, False, False]
    assert r["ambiguous_mask"].tolist() == [False, False, False, True, False, False]
    s = r["summary"]
    assert (s["n_issues"], s["n_issues_likely_noise"], s["n_issues_ambiguous"], s["n_ambiguous"]) == (1, 1, 0, 1)
    assert s["n_without_confident_class"] == 2
    simple = find_label_issues(Y, PROBA, 3, filter_by="confident_joint")
    assert simple["issue_mask"].tolist() == r["issue_mask"].tolist()


def test_ambiguity_threshold_is_a_parameter():
    # Row 1 has normalised entropy ~0.30: ambiguous at a low threshold, not at the default 0.5.
    assert np.isclose(normalized_entropy(PROBA[1:2])[0], 0.3041, atol=1e-3)
    assert find_label_issues(Y, PROBA, 3, ambiguity_threshold=0.25)["ambiguous_mask"][1]
    assert np.allclose(normalized_entropy(np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])), [0, 1])


def test_summary_is_json_ready():
    import json

    proba = np.hstack([PROBA, np.zeros((6, 1))])
    summary = find_label_issues(Y, proba, 4)["summary"]  # class 3 never given: threshold None
    assert summary["thresholds"][3] is None
    json.dumps(summary)


def separable(n_per_class=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, size=(k, 10))
    centers *= 6 / np.linalg.norm(centers, axis=1, keepdims=True)  # far apart: the clean problem is easy
    X = np.concatenate([c + rng.normal(0, 1, size=(n_per_class, 10)) for c in centers])
    return X, np.repeat(np.arange(k), n_per_class)


def logistic_oof(X, y_noisy, k):
    def fit_predict(train_idx, pred_idx):
        model = LogisticRegression(max_iter=500).fit(X[train_idx], y_noisy[train_idx])
        proba = np.zeros((len(pred_idx), k))
        proba[:, model.classes_] = model.predict_proba(X[pred_idx])
        return proba

    return out_of_fold_proba(fit_predict, y_noisy, n_splits=5, seed=0)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_detects_injected_noise_and_estimates_its_rate(kind):
    X, y = separable()
    y_noisy, flipped = inject_noise(y, 4, kind, 0.2, seed=1)
    oof = logistic_oof(X, y_noisy, 4)
    for filter_by, min_f1 in (("prune_by_noise_rate", 0.9), ("confident_joint", 0.85)):
        r = find_label_issues(y_noisy, oof, 4, filter_by=filter_by)
        scores = detection_scores(r["issue_mask"], flipped)
        assert scores["f1"] > min_f1, (filter_by, scores)
        assert scores["precision"] > 0.9, (filter_by, scores)
        assert abs(r["noise_rate"] - flipped.mean()) < 0.03, (r["noise_rate"], flipped.mean())
    # "Confidently contradicted" is evidence of a wrong label: almost every such row was flipped.
    assert detection_scores(r["contradicted_mask"], flipped)["precision"] > 0.95


def overlapping(n_per_class=200, seed=0):
    """Classes 0 and 1 overlap heavily (centres 1 sd apart); class 2 is far from both. Labels are clean."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((3, 5))
    centers[1, 0], centers[2, 1] = 1.0, 8.0
    X = np.concatenate([c + rng.normal(0, 1, size=(n_per_class, 5)) for c in centers])
    return X, np.repeat(np.arange(3), n_per_class)


def test_ambiguity_marks_class_overlap_rather_than_noise():
    X, y = overlapping()
    r = find_label_issues(y, logistic_oof(X, y, 3), 3)
    ambiguous_per_class = np.bincount(y[r["ambiguous_mask"]], minlength=3)
    assert ambiguous_per_class[2] == 0 and ambiguous_per_class[:2].min() > 50
    overlap = r["summary"]
    # With clean but overlapping classes most flagged rows are ambiguous; with injected noise on
    # separable classes far fewer are.
    Xs, ys = separable()
    y_noisy, _ = inject_noise(ys, 4, "symmetric", 0.2, seed=1)
    noisy = find_label_issues(y_noisy, logistic_oof(Xs, y_noisy, 4), 4)["summary"]
    assert overlap["n_issues_ambiguous"] / overlap["n_issues"] > 0.7
    assert noisy["n_issues_ambiguous"] / noisy["n_issues"] < 0.6
    assert noisy["n_issues_likely_noise"] / noisy["n_issues"] > 0.4


def test_clean_labels_give_few_issues():
    X, y = separable()
    r = find_label_issues(y, logistic_oof(X, y, 4), 4)
    assert r["noise_rate"] < 0.02 and r["issue_mask"].mean() < 0.02


def test_out_of_fold_never_predicts_a_row_it_trained_on():
    y = np.repeat(np.arange(3), 10)
    calls = []

    def fit_predict(train_idx, pred_idx):
        calls.append((train_idx.copy(), pred_idx.copy()))
        proba = np.zeros((len(pred_idx), 3))
        proba[np.arange(len(pred_idx)), y[pred_idx]] = 1.0
        return proba

    oof = out_of_fold_proba(fit_predict, y, n_splits=5, seed=3)
    assert len(calls) == 5
    predicted = np.concatenate([p for _, p in calls])
    assert sorted(predicted.tolist()) == list(range(len(y)))  # every row predicted exactly once
    for train_idx, pred_idx in calls:
        assert not set(train_idx.tolist()) & set(pred_idx.tolist())
        assert np.bincount(y[pred_idx]).tolist() == [2, 2, 2]  # stratified
    assert np.array_equal(oof.argmax(1), y)
    again = []
    out_of_fold_proba(lambda t, p: again.append(p) or np.ones((len(p), 3)) / 3, y, 5, seed=3)
    assert all(np.array_equal(a, c[1]) for a, c in zip(again, calls, strict=True))  # seeded


def test_out_of_fold_refuses_bad_shapes_and_too_many_folds():
    y = np.repeat(np.arange(2), 4)
    with pytest.raises(ValueError, match=r"must return \[4, K\]"):
        out_of_fold_proba(lambda t, p: np.ones((len(p) + 1, 2)), y, n_splits=2)
    with pytest.raises(UserError, match="use fewer folds"):
        out_of_fold_proba(lambda t, p: np.ones((len(p), 2)), y, n_splits=5)


def test_detection_scores_known_answer():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    truth = np.array([1, 1, 0, 1, 0, 0], bool)
    assert detection_scores(flagged, truth) == {
        "precision": round(2 / 3, 6), "recall": round(2 / 3, 6), "f1": round(2 / 3, 6),
        "n_flagged": 3, "n_true": 3,
    }
    none = detection_scores(np.zeros(6, bool), truth)
    assert none["precision"] == 0.0 and none["f1"] == 0.0 and none["n_flagged"] == 0
