"""The compare stage's Markdown table."""

from dlrig.evaluate.compare import compare_fold_scores, markdown_table


def test_constant_fold_differences_give_a_table_not_a_crash():
    """Separable data: the same difference on every fold has no spread, so t is undefined (None)."""
    folds = compare_fold_scores([0.9, 0.9, 0.9], [1.0, 1.0, 1.0], 100, 50, labels=("tuned", "logreg"))
    assert folds["corrected_t"]["statistic"] is None
    row = markdown_table({"logreg": {"folds": folds}}, "tuned", "accuracy").splitlines()[2]
    assert row.startswith("| logreg | 1.0000 | 0.9000 | n/a (0) | n/a (0) |")
