"""Multi-label metrics, all returned in percent as face- and pedestrian-attribute papers print them.

Inputs are ``labels`` (N, A) in {0, 1} and ``probs`` (N, A) positive-class probabilities.
Conventions where a ratio is undefined (an attribute with no positives, an example with no
predicted positives) are stated in each docstring.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape or labels.ndim != 2:
        raise ValueError(f"labels and probs must both be (N, A); got {labels.shape} and {probs.shape}")
    return labels, probs


def binarize(probs, threshold=0.5) -> np.ndarray:
    """Return 0/1 predictions: ``probs > threshold`` (``threshold`` scalar or one per attribute).

    A probability of exactly the threshold counts as negative, as in torchmetrics and the
    reference implementation (``output > 0.5``), and as ``logit > 0`` does in training.
    """
    return (np.asarray(probs) > np.asarray(threshold)).astype(np.float64)


def per_attribute_accuracy(labels, probs, threshold=0.5) -> np.ndarray:
    """Return the (A,) accuracy of each attribute in percent.

    Raises:
        ValueError: shapes differ or are not 2-D.
    """
    labels, probs = _as_arrays(labels, probs)
    return 100.0 * (binarize(probs, threshold) == labels).mean(axis=0)


def majority_classes(train_labels) -> np.ndarray:
    """Return each attribute's (A,) majority class (0/1) in ``train_labels``; a tie predicts
    negative, as :func:`binarize` does at exactly the threshold."""
    return (np.asarray(train_labels, dtype=np.float64).mean(axis=0) > 0.5).astype(np.float64)


def majority_per_attribute_accuracy(train_labels, eval_labels) -> np.ndarray:
    """Return the (A,) accuracy in percent of predicting each attribute's majority class of
    ``train_labels`` on ``eval_labels`` (the majority-class predictor, fitted on training data)."""
    return 100.0 * (np.asarray(eval_labels, dtype=np.float64) == majority_classes(train_labels)).mean(axis=0)


def _confusion(labels: np.ndarray, predictions: np.ndarray, axis: int):
    tp = (predictions * labels).sum(axis=axis)
    fp = (predictions * (1 - labels)).sum(axis=axis)
    fn = ((1 - predictions) * labels).sum(axis=axis)
    tn = ((1 - predictions) * (1 - labels)).sum(axis=axis)
    return tp, fp, fn, tn


def _ratio(numerator, denominator, undefined: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, undefined, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_attribute_balanced_accuracy(labels, probs, threshold=0.5) -> np.ndarray:
    """Return the (A,) balanced accuracy (TPR + TNR) / 2 in percent.

    If an attribute has no positives (or no negatives) in ``labels``, the rate of the class that
    is present is used alone, so a perfect predictor still scores 100.
    """
    labels, probs = _as_arrays(labels, probs)
    tp, fp, fn, tn = _confusion(labels, binarize(probs, threshold), axis=0)
    tpr = _ratio(tp, tp + fn, np.nan)
    tnr = _ratio(tn, tn + fp, np.nan)
    return 100.0 * np.nanmean(np.stack([tpr, tnr]), axis=0)


def per_attribute_prf(labels, probs, threshold=0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (precision, recall, F1) per attribute, each (A,) in percent.

    Undefined ratios (no predicted positives; no actual positives) count as 0, as in
    scikit-learn's ``zero_division=0``.
    """
    labels, probs = _as_arrays(labels, probs)
    tp, fp, fn, _ = _confusion(labels, binarize(probs, threshold), axis=0)
    precision = _ratio(tp, tp + fp, 0.0)
    recall = _ratio(tp, tp + fn, 0.0)
    f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
    return 100.0 * precision, 100.0 * recall, 100.0 * f1


def example_based_metrics(labels, probs, threshold=0.5) -> dict[str, float]:
    """Return the pedestrian-attribute (PAR) example-based metrics in percent.

    Keys: ``inst_acc`` (mean Jaccard |Y ∩ P| / |Y ∪ P|), ``inst_precision`` (|Y ∩ P| / |P|),
    ``inst_recall`` (|Y ∩ P| / |Y|), ``inst_f1`` (harmonic mean of the two means), ``hamming_loss``
    (share of wrong labels) and ``hamming_score`` (100 - hamming_loss). An example with an empty
    union counts as fully correct; an empty denominator otherwise counts as 0.
    """
    labels, probs = _as_arrays(labels, probs)
    predictions = binarize(probs, threshold)
    intersection = (labels * predictions).sum(axis=1)
    union = np.maximum(labels, predictions).sum(axis=1)
    jaccard = _ratio(intersection, union, 1.0)
    precision = _ratio(intersection, predictions.sum(axis=1), 0.0)
    recall = _ratio(intersection, labels.sum(axis=1), 0.0)
    empty = union == 0
    precision[empty] = 1.0
    recall[empty] = 1.0
    mean_p, mean_r = precision.mean(), recall.mean()
    f1 = 2 * mean_p * mean_r / (mean_p + mean_r) if mean_p + mean_r > 0 else 0.0
    hamming_loss = 100.0 * (predictions != labels).mean()
    return {
        "inst_acc": 100.0 * jaccard.mean(),
        "inst_precision": 100.0 * mean_p,
        "inst_recall": 100.0 * mean_r,
        "inst_f1": 100.0 * f1,
        "hamming_loss": hamming_loss,
        "hamming_score": 100.0 - hamming_loss,
    }


def expected_calibration_error(labels, probs, n_bins: int = 10) -> float:
    """Return the ECE in percent over all per-attribute positive-class probabilities.

    The N*A probabilities fall into ``n_bins`` equal-width bins on [0, 1] (the last bin closed);
    ECE = sum over bins of (bin share) * |mean label - mean probability|.
    """
    frequencies, confidences, counts = reliability_diagram(labels, probs, n_bins)
    total = counts.sum()
    filled = counts > 0
    return float(100.0 * np.sum(counts[filled] / total * np.abs(frequencies[filled] - confidences[filled])))


def reliability_diagram(labels, probs, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (observed positive frequency, mean probability, count) per bin, each (n_bins,).

    Empty bins hold NaN frequency and confidence and count 0.
    """
    labels, probs = _as_arrays(labels, probs)
    flat_labels, flat_probs = labels.ravel(), probs.ravel()
    bins = np.clip((flat_probs * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    label_sums = np.bincount(bins, weights=flat_labels, minlength=n_bins)
    prob_sums = np.bincount(bins, weights=flat_probs, minlength=n_bins)
    return _ratio(label_sums, counts, np.nan), _ratio(prob_sums, counts, np.nan), counts


def summary_metrics(labels, probs, train_labels, threshold=0.5) -> dict[str, float]:
    """Return the headline metrics of one evaluation, in percent.

    Keys: ``acc_mean`` (mean per-attribute accuracy, the CelebA convention), ``acc_majority``
    (majority-class predictor fitted on ``train_labels``, on the same rows), ``mA`` (mean balanced
    accuracy), ``precision``/``recall``/``f1`` (means of the per-attribute values), the
    example-based keys of :func:`example_based_metrics`, and ``ece`` (10 bins).
    """
    labels, probs = _as_arrays(labels, probs)
    precision, recall, f1 = per_attribute_prf(labels, probs, threshold)
    return {
        "acc_mean": float(per_attribute_accuracy(labels, probs, threshold).mean()),
        "acc_majority": float(majority_per_attribute_accuracy(train_labels, labels).mean()),
        "mA": float(per_attribute_balanced_accuracy(labels, probs, threshold).mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        **{k: float(v) for k, v in example_based_metrics(labels, probs, threshold).items()},
        "ece": expected_calibration_error(labels, probs),
    }


def fit_temperature(logits, labels, bounds=(0.05, 20.0)) -> float:
    """Return the temperature T > 0 minimising the mean BCE of ``sigmoid(logits / T)`` on ``labels``.

    One T for all attributes (temperature scaling, Guo et al. 2017), searched on log T within
    ``bounds`` by scipy's bounded scalar minimiser (the loss is convex in 1/T).
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)

    def loss(log_t: float) -> float:
        z = logits / np.exp(log_t)
        # log(1 + exp(-|z|)) form: stable for large |z|.
        return float(np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))))

    found = minimize_scalar(loss, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def tune_thresholds(labels, probs, grid=None) -> np.ndarray:
    """Return (A,) per-attribute thresholds maximising F1 on (``labels``, ``probs``).

    The search runs over ``grid`` (default 0.05, 0.10, ..., 0.95); ties keep the threshold
    closest to 0.5. Attributes without positives keep 0.5.
    """
    labels, probs = _as_arrays(labels, probs)
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else np.asarray(grid, dtype=np.float64)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")
    thresholds = np.full(labels.shape[1], 0.5)
    for j in range(labels.shape[1]):
        if labels[:, j].sum() == 0:
            continue
        scores = [per_attribute_prf(labels[:, [j]], probs[:, [j]], grid[k])[2][0] for k in order]
        thresholds[j] = grid[order[int(np.argmax(scores))]]
    return thresholds


# ---- uncertainty: bootstrap over test images ----------------------------------------------------


def bootstrap_counts(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Return a (resamples, n) matrix: how often each of ``n`` examples is drawn in each bootstrap resample
    (``n`` draws with replacement). Row 0 is not special; every row sums to ``n``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def _weighted_headline(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Return {'acc_mean', 'mA', 'f1'} (percent) for each row of example ``weights`` (W x N), from weighted
    confusion counts, with the conventions of :func:`summary_metrics` (one-class attributes in mA use the
    present class; undefined F1 counts 0)."""
    tp = weights @ (predictions * labels)
    fp = weights @ (predictions * (1 - labels))
    fn = weights @ ((1 - predictions) * labels)
    tn = weights @ ((1 - predictions) * (1 - labels))
    total = weights.sum(axis=1, keepdims=True)
    accuracy = (tp + tn) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1), np.nan)
        tnr = np.where(tn + fp > 0, tn / np.where(tn + fp > 0, tn + fp, 1), np.nan)
        balanced = np.nanmean(np.stack([tpr, tnr]), axis=0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.where(2 * tp + fp + fn > 0, 2 * tp + fp + fn, 1), 0.0)
    return {"acc_mean": 100.0 * accuracy.mean(axis=1), "mA": 100.0 * balanced.mean(axis=1), "f1": 100.0 * f1.mean(axis=1)}


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    labels, predictions, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Return percentile bootstrap intervals over test examples, ``{'acc_mean' | 'mA' | 'f1': (low, high)}`` in percent.

    ``predictions`` are 0/1 (N, A). The resamples draw whole examples, so the correlation between
    a face's 40 attributes is kept.

    Raises:
        ValueError: shapes differ or are not 2-D, or there are no examples.
    """
    labels, predictions = _as_arrays(labels, predictions)
    if len(labels) == 0:
        raise ValueError("bootstrap intervals need at least one example")
    values = _weighted_headline(labels, predictions, bootstrap_counts(len(labels), resamples, seed))
    return {name: _interval(samples, level) for name, samples in values.items()}


def paired_bootstrap(
    labels, predictions_a, predictions_b, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float, float]]:
    """Return ``{'acc_mean' | 'mA' | 'f1': (difference, low, high)}``: metric(A) - metric(B) in points on the
    same test examples, with a percentile interval from resampling the examples both were scored on
    (the pairing removes the examples' own difficulty from the spread). Identical predictors give
    exactly 0 with a zero-width interval.

    Raises:
        ValueError: shapes differ or are not 2-D.
    """
    labels, a = _as_arrays(labels, predictions_a)
    _, b = _as_arrays(labels, predictions_b)
    counts = bootstrap_counts(len(labels), resamples, seed)
    full = np.ones((1, len(labels)))
    point_a, point_b = _weighted_headline(labels, a, full), _weighted_headline(labels, b, full)
    boot_a, boot_b = _weighted_headline(labels, a, counts), _weighted_headline(labels, b, counts)
    return {name: (float(point_a[name][0] - point_b[name][0]), *_interval(boot_a[name] - boot_b[name], level)) for name in boot_a}


def paired_attribute_bootstrap(
    labels, predictions_a, predictions_b, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-attribute accuracy differences A - B in points and their paired bootstrap interval,
    ``(difference, low, high)``, each (A,).

    Raises:
        ValueError: shapes differ or are not 2-D.
    """
    labels, a = _as_arrays(labels, predictions_a)
    _, b = _as_arrays(labels, predictions_b)
    counts = bootstrap_counts(len(labels), resamples, seed)
    # Each example adds (correct_a - correct_b) per attribute; a resample's difference is its weighted mean.
    gain = (a == labels).astype(np.float64) - (b == labels).astype(np.float64)
    samples = 100.0 * (counts @ gain) / counts.sum(axis=1, keepdims=True)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(samples, [tail, 100.0 - tail], axis=0)
    return 100.0 * gain.mean(axis=0), low, high


def pack_bits(matrix) -> list[str]:
    """Return a 0/1 (N, A) matrix as N strings of A characters '0'/'1' (compact in a JSON record)."""
    return ["".join("1" if v else "0" for v in row) for row in np.asarray(matrix) > 0.5]


def unpack_bits(rows: list[str]) -> np.ndarray:
    """Return the (N, A) float 0/1 matrix that :func:`pack_bits` packed."""
    if not rows:
        return np.zeros((0, 0))
    return (np.frombuffer("".join(rows).encode(), dtype=np.uint8).reshape(len(rows), -1) == ord("1")).astype(np.float64)


def pareto_front(costs, scores) -> np.ndarray:
    """Return the indices of points no other point beats (cost <= and score >=, one strictly), by cost."""
    costs, scores = np.asarray(costs, float), np.asarray(scores, float)
    front = [
        i
        for i in range(len(costs))
        if not np.any((costs <= costs[i]) & (scores >= scores[i]) & ((costs < costs[i]) | (scores > scores[i])))
    ]
    return np.asarray(sorted(front, key=lambda i: costs[i]), dtype=int)
