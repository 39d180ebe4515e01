"""Our numpy metrics against scikit-learn and torchmetrics (the ``test`` extra), pinning each convention."""

import warnings

import numpy as np
import pytest
import torch

from bench import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
tmc = pytest.importorskip("torchmetrics.classification")

N, A = 300, 6


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    labels = (rng.random((N, A)) < rng.uniform(0.05, 0.6, A)).astype(float)
    labels[:, -1] = 0  # an attribute without positives: the undefined-ratio conventions matter
    probs = np.clip(rng.random((N, A)) * 0.9 + labels * 0.3, 0, 1)
    probs[probs == 0.5] = 0.51  # the threshold convention at exactly 0.5 is pinned in test_metrics.py
    return labels, probs, (probs > 0.5).astype(int)


def _torch(labels, probs):
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def test_per_attribute_accuracy_matches_sklearn_and_torchmetrics(sample):
    labels, probs, predictions = sample
    ours = metrics.per_attribute_accuracy(labels, probs)
    np.testing.assert_allclose(ours, [100 * sklearn_metrics.accuracy_score(labels[:, j], predictions[:, j]) for j in range(A)])
    np.testing.assert_allclose(ours, 100 * tmc.MultilabelAccuracy(A, average=None)(*_torch(labels, probs)).numpy(), atol=1e-4)


def test_balanced_accuracy_matches_sklearn_also_for_a_one_class_attribute(sample):
    labels, probs, predictions = sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that attribute 5 has one class; it then averages the present class
        expected = [100 * sklearn_metrics.balanced_accuracy_score(labels[:, j], predictions[:, j]) for j in range(A)]
    np.testing.assert_allclose(metrics.per_attribute_balanced_accuracy(labels, probs), expected)


def test_precision_recall_f1_match_zero_division_0(sample):
    labels, probs, predictions = sample
    precision, recall, f1 = metrics.per_attribute_prf(labels, probs)
    sk = sklearn_metrics.precision_recall_fscore_support(labels, predictions, average=None, zero_division=0)
    for ours, theirs in zip((precision, recall, f1), sk[:3]):
        np.testing.assert_allclose(ours, 100 * theirs)
    x, y = _torch(labels, probs)
    np.testing.assert_allclose(
        precision, 100 * tmc.MultilabelPrecision(A, average=None, zero_division=0)(x, y).numpy(), atol=1e-4
    )
    np.testing.assert_allclose(recall, 100 * tmc.MultilabelRecall(A, average=None, zero_division=0)(x, y).numpy(), atol=1e-4)
    np.testing.assert_allclose(f1, 100 * tmc.MultilabelF1Score(A, average=None, zero_division=0)(x, y).numpy(), atol=1e-4)
    assert f1[-1] == 0.0  # no positives, none predicted: 0 by convention, as zero_division=0


def test_example_based_metrics_match_sklearn_where_the_union_is_not_empty(sample):
    labels, probs, predictions = sample
    ours = metrics.example_based_metrics(labels, probs)
    assert ours["hamming_loss"] == pytest.approx(100 * sklearn_metrics.hamming_loss(labels, predictions))
    assert ours["inst_acc"] == pytest.approx(
        100 * sklearn_metrics.jaccard_score(labels, predictions, average="samples", zero_division=1)
    )
    # Precision and recall part ways only on examples with nothing true and nothing predicted (next test).
    nonempty = (labels + predictions).sum(axis=1) > 0
    assert 0 < (~nonempty).sum() < N
    labels, probs, predictions = labels[nonempty], probs[nonempty], predictions[nonempty]
    ours = metrics.example_based_metrics(labels, probs)
    assert ours["inst_precision"] == pytest.approx(
        100 * sklearn_metrics.precision_score(labels, predictions, average="samples", zero_division=0)
    )
    assert ours["inst_recall"] == pytest.approx(
        100 * sklearn_metrics.recall_score(labels, predictions, average="samples", zero_division=0)
    )
    # inst_f1 is the PAR convention: harmonic mean of the mean precision and mean recall, not sklearn's mean of per-example F1.
    mean_p, mean_r = ours["inst_precision"], ours["inst_recall"]
    assert ours["inst_f1"] == pytest.approx(2 * mean_p * mean_r / (mean_p + mean_r))


def test_an_example_with_nothing_true_and_nothing_predicted_counts_as_correct():
    labels, probs = np.zeros((1, 3)), np.full((1, 3), 0.1)
    ours = metrics.example_based_metrics(labels, probs)
    assert ours["inst_acc"] == ours["inst_precision"] == ours["inst_recall"] == 100.0
    assert sklearn_metrics.precision_score(labels, (probs > 0.5).astype(int), average="samples", zero_division=0) == 0.0


def test_ece_matches_torchmetrics_binary_calibration_error(sample):
    labels, probs, _ = sample
    x, y = _torch(labels, probs)
    expected = 100 * float(tmc.BinaryCalibrationError(n_bins=10, norm="l1")(x.flatten(), y.flatten()))
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(expected, abs=1e-4)
