import numpy as np
import pytest

from bench import metrics

# 4 examples x 3 attributes; attribute 2 has no positives at all.
LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=float)
PROBS = np.array([[0.9, 0.2, 0.1], [0.4, 0.8, 0.7], [0.6, 0.3, 0.2], [0.1, 0.1, 0.0]])
# predictions at 0.5:  [1,0,0], [0,1,1], [1,0,0], [0,0,0]


def test_per_attribute_accuracy():
    np.testing.assert_allclose(metrics.per_attribute_accuracy(LABELS, PROBS), [50.0, 75.0, 75.0])


def test_perfect_predictor_scores_100_everywhere():
    perfect = LABELS.copy()
    np.testing.assert_allclose(metrics.per_attribute_accuracy(LABELS, perfect), 100.0)
    np.testing.assert_allclose(metrics.per_attribute_balanced_accuracy(LABELS, perfect), 100.0)
    example = metrics.example_based_metrics(LABELS, perfect)
    assert example["inst_acc"] == 100.0 and example["hamming_loss"] == 0.0 and example["hamming_score"] == 100.0
    assert metrics.expected_calibration_error(LABELS, perfect) == 0.0


def test_balanced_accuracy_with_an_all_negative_attribute():
    # attr0: TPR 1/2, TNR 1/2 -> 50; attr1: TPR 1/2, TNR 2/2 -> 75; attr2: no positives -> TNR 3/4 = 75.
    np.testing.assert_allclose(metrics.per_attribute_balanced_accuracy(LABELS, PROBS), [50.0, 75.0, 75.0])


def test_precision_recall_f1_per_attribute():
    precision, recall, f1 = metrics.per_attribute_prf(LABELS, PROBS)
    np.testing.assert_allclose(precision, [50.0, 100.0, 0.0])
    np.testing.assert_allclose(recall, [50.0, 50.0, 0.0])
    np.testing.assert_allclose(f1, [50.0, 200 / 3, 0.0])


def test_example_based_metrics():
    out = metrics.example_based_metrics(LABELS, PROBS)
    # Jaccard per example: 1/1, 1/3, 0/2, empty union -> 1.
    assert out["inst_acc"] == pytest.approx(100 * (1 + 1 / 3 + 0 + 1) / 4)
    # precision |Y∩P|/|P|: 1, 1/2, 0, (empty) 1; recall |Y∩P|/|Y|: 1, 1/2, 0, (empty) 1.
    assert out["inst_precision"] == pytest.approx(100 * 2.5 / 4)
    assert out["inst_recall"] == pytest.approx(100 * 2.5 / 4)
    assert out["inst_f1"] == pytest.approx(100 * 2.5 / 4)
    assert out["hamming_loss"] == pytest.approx(100 * 4 / 12)


def test_majority_predictor():
    train = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
    evaluated = np.array([[1, 1], [0, 0]], dtype=float)
    np.testing.assert_allclose(metrics.majority_per_attribute_accuracy(train, evaluated), [50.0, 50.0])


def test_ece_hand_computed():
    labels = np.array([[1, 0], [1, 1]], dtype=float)
    probs = np.array([[0.95, 0.05], [0.65, 0.75]])
    # bins: [0.0-0.1): {0.05 label 0} -> |0-0.05|; [0.6-0.7): {0.65, label 1} -> 0.35;
    #       [0.7-0.8): {0.75, label 1} -> 0.25; [0.9-1.0]: {0.95, label 1} -> 0.05
    expected = 100 * (0.05 + 0.35 + 0.25 + 0.05) / 4
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(expected)
    freq, conf, counts = metrics.reliability_diagram(labels, probs)
    assert counts.tolist() == [1, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    assert np.isnan(freq[1]) and conf[6] == pytest.approx(0.65)


def test_probability_one_falls_in_last_bin():
    _, _, counts = metrics.reliability_diagram(np.array([[1.0]]), np.array([[1.0]]))
    assert counts[-1] == 1


def test_fit_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(20000, 1))
    labels = (rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(float)
    # An over-confident model: logits 3x too large -> the fitted temperature is ~3.
    assert metrics.fit_temperature(3 * true_logits, labels) == pytest.approx(3.0, rel=0.05)


def test_tune_thresholds_maximises_f1():
    labels = np.array([[1], [1], [0], [0]], dtype=float)
    probs = np.array([[0.3], [0.35], [0.2], [0.1]])
    thresholds = metrics.tune_thresholds(labels, probs)
    assert 0.2 < thresholds[0] <= 0.3
    assert metrics.tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.7))[0] == 0.5


def test_summary_metrics_keys_and_shape_check():
    out = metrics.summary_metrics(LABELS, PROBS, LABELS)
    assert out["acc_mean"] == pytest.approx((50 + 75 + 75) / 3)
    assert out["mA"] == pytest.approx((50 + 75 + 75) / 3)
    assert out["acc_majority"] == pytest.approx((50 + 50 + 100) / 3)
    with pytest.raises(ValueError, match="must both be"):
        metrics.summary_metrics(LABELS, PROBS[:, :2], LABELS)


# ---- uncertainty ---------------------------------------------------------------------------------


def test_bootstrap_interval_covers_a_known_bernoulli_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    true_rate, covered, experiments = 0.8, 0, 200
    for experiment in range(experiments):
        correct = (rng.random((100, 1)) < true_rate).astype(float)  # 100 draws: 1 = the prediction was right
        low, high = metrics.bootstrap_intervals(np.ones((100, 1)), correct, resamples=1000, seed=experiment)["acc_mean"]
        covered += low <= 100 * true_rate <= high
    assert 0.90 <= covered / experiments <= 0.99  # nominal 95 %; binomial sd of the rate over 200 experiments is 1.5 points


def test_paired_bootstrap_of_identical_predictors_is_exactly_zero():
    rng = np.random.default_rng(1)
    labels = (rng.random((50, 6)) < 0.4).astype(float)
    predictions = (rng.random((50, 6)) < 0.5).astype(float)
    for difference, low, high in metrics.paired_bootstrap(labels, predictions, predictions).values():
        assert difference == low == high == 0.0
    d, low, high = metrics.paired_attribute_bootstrap(labels, predictions, predictions)
    assert not d.any() and not low.any() and not high.any()


def test_bootstrap_point_metrics_match_the_summary_and_a_real_gain_is_significant():
    rng = np.random.default_rng(2)
    labels = (rng.random((400, 5)) < 0.3).astype(float)
    good = np.where(rng.random((400, 5)) < 0.9, labels, 1 - labels)
    bad = np.where(rng.random((400, 5)) < 0.7, labels, 1 - labels)
    summary = metrics.summary_metrics(labels, good, labels)
    compared = metrics.paired_bootstrap(labels, good, bad)
    for name in ("acc_mean", "mA", "f1"):
        low, high = metrics.bootstrap_intervals(labels, good)[name]
        assert low <= summary[name] <= high
        assert compared[name][0] == pytest.approx(summary[name] - metrics.summary_metrics(labels, bad, labels)[name])
    assert compared["acc_mean"][1] > 0  # 90 % vs 70 % correct on 400 examples: the interval excludes 0


def test_pack_bits_round_trip():
    matrix = np.array([[1, 0, 1], [0, 0, 1]], dtype=float)
    assert metrics.pack_bits(matrix) == ["101", "001"]
    np.testing.assert_array_equal(metrics.unpack_bits(metrics.pack_bits(matrix)), matrix)
