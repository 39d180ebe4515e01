"""Evaluation of a trained model on the test split: headline metrics, per-attribute rows,
reliability data, the majority-class predictor, and PSE mask records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import expit

from bench import metrics
from bench.data.loading import FaceAttributeData, iterate_batches, to_model_input
from bench.settings import TrainSettings
from bench.store.schema import identity
from bench.training.train import predict_logits


def _per_attribute_rows(cell, data, labels, probs, tuned_thresholds, tuned_probs_threshold_acc, tuned_f1) -> list[dict]:
    train_labels = data.labels[data.splits["train"]]
    accuracy = metrics.per_attribute_accuracy(labels, probs)
    majority = metrics.majority_per_attribute_accuracy(train_labels, labels)
    balanced = metrics.per_attribute_balanced_accuracy(labels, probs)
    precision, recall, f1 = metrics.per_attribute_prf(labels, probs)
    return [
        {
            **identity(cell),
            "attribute": name,
            "positive_rate": 100.0 * float(labels[:, j].mean()),
            "acc": accuracy[j],
            "acc_majority": majority[j],
            "balanced_acc": balanced[j],
            "precision": precision[j],
            "recall": recall[j],
            "f1": f1[j],
            "threshold_tuned": tuned_thresholds[j],
            "acc_tuned": tuned_probs_threshold_acc[j],
            "f1_tuned": tuned_f1[j],
        }
        for j, name in enumerate(data.attr_names)
    ]


def _sigmoid(z):
    return expit(z)  # no overflow warning for a diverged model's huge logits


@dataclass
class Evaluation:
    """A model's test-split evaluation: metric columns of its result row (with 95 % bootstrap
    intervals as ``*_lo``/``*_hi``), per-attribute rows, reliability-diagram data
    (``{'before'|'after': {'frequency', 'confidence', 'count'}}``) and the 0/1 test predictions
    (N, A), which paired comparisons between models need."""

    values: dict
    per_attribute: list[dict] = field(default_factory=list)
    reliability: dict = field(default_factory=dict)
    predictions: np.ndarray | None = None


def with_intervals(values: dict, labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Return ``values`` with the 95 % bootstrap interval (1,000 resamples of the test images) of
    ``acc_mean``, ``mA`` and ``f1`` as ``<metric>_lo`` / ``<metric>_hi``."""
    intervals = metrics.bootstrap_intervals(labels, predictions)
    return {
        **values,
        **{f"{name}_{end}": bound for name, (low, high) in intervals.items() for end, bound in (("lo", low), ("hi", high))},
    }


def evaluate_cell_model(
    cell: dict, model, data: FaceAttributeData, deployed=None, val_logits=None, test_logits=None
) -> Evaluation:
    """Return the :class:`Evaluation` of a trained model on the test split of ``data``.

    Temperature and per-attribute F1 thresholds are fitted on the validation split only. With
    ``deployed`` (a ``deploy.Deployed`` of the model, e.g. its int8 form) the logits are that runtime's. ``val_logits``:
    the eager model's validation logits when training already computed them with this model (its best epoch's,
    ``TrainResult.best_val_logits``: the same weights, batch size and memory format), else None; ``test_logits`` likewise
    on the test split (``CompressionResult.test_logits``), else None.
    """
    batch, device, channels_last = _eval_options(cell)
    if deployed is not None:
        test_logits = runtime_logits(deployed, data, model.data_config, "test", batch)
        val_logits = runtime_logits(deployed, data, model.data_config, "val", batch)
    else:
        if test_logits is None:
            test_logits = predict_logits(model, data, "test", batch, device, channels_last)
        if val_logits is None:
            val_logits = predict_logits(model, data, "val", batch, device, channels_last)
    test_labels, val_labels = data.labels[data.splits["test"]], data.labels[data.splits["val"]]
    train_labels = data.labels[data.splits["train"]]
    nonfinite = int((~np.isfinite(test_logits)).sum())
    # A diverged model's NaN outputs count as "negative" (sigmoid 0.5, see metrics.binarize) and the row says why.
    test_logits, val_logits = np.nan_to_num(test_logits, nan=0.0), np.nan_to_num(val_logits, nan=0.0)
    probs = _sigmoid(test_logits)
    values = metrics.summary_metrics(test_labels, probs, train_labels)
    if nonfinite:
        values["diverged"] = f"{nonfinite} non-finite outputs on the test split"
    temperature = metrics.fit_temperature(val_logits, val_labels)
    scaled = _sigmoid(test_logits / temperature)
    thresholds = metrics.tune_thresholds(val_labels, _sigmoid(val_logits))
    tuned_acc = metrics.per_attribute_accuracy(test_labels, probs, thresholds)
    tuned_f1 = metrics.per_attribute_prf(test_labels, probs, thresholds)[2]
    values.update(
        {
            "ece_ts": metrics.expected_calibration_error(test_labels, scaled),
            "temperature": temperature,
            "acc_mean_tuned": float(tuned_acc.mean()),
            "f1_tuned": float(tuned_f1.mean()),
            # what a search ranks candidates by, so that the test split stays unseen until the front is reported
            "acc_mean_val": _val_accuracy(data, val_logits),
        }
    )
    reliability = {}
    for key, p in (("before", probs), ("after", scaled)):
        freq, conf, counts = metrics.reliability_diagram(test_labels, p)
        reliability[key] = {"frequency": freq.tolist(), "confidence": conf.tolist(), "count": counts.tolist()}
    per_attribute = _per_attribute_rows(cell, data, test_labels, probs, thresholds, tuned_acc, tuned_f1)
    predictions = metrics.binarize(probs)
    return Evaluation(with_intervals(values, test_labels, predictions), per_attribute, reliability, predictions)


def _eval_options(cell: dict) -> tuple[int, str, bool]:
    """Return the batch size, device and memory format a cell's model is evaluated with: its training's (channels_last
    evaluates Slim-Net 2.4x faster on the CPU, same logits to 1e-6)."""
    train = TrainSettings.from_mapping(cell["train"])
    return train.eval_batch_size, train.device, train.channels_last


def _val_accuracy(data: FaceAttributeData, val_logits: np.ndarray) -> float:
    """Return the mean accuracy (percent) of validation logits (a diverged model's NaN counts as 'negative')."""
    probs = _sigmoid(np.nan_to_num(val_logits, nan=0.0))
    return float(metrics.per_attribute_accuracy(data.labels[data.splits["val"]], probs).mean())


def evaluate_validation(cell: dict, model, data: FaceAttributeData, deployed=None, val_logits=None) -> Evaluation:
    """Return the :class:`Evaluation` of a model on the validation split only, for a search's screened trial (its cell
    ``validation_only``): ``values`` holds ``acc_mean_val`` (percent), what the search ranks by; no per-attribute rows, no
    reliability data, no predictions, and the test split stays unseen. ``deployed`` and ``val_logits`` as in
    :func:`evaluate_cell_model`."""
    batch, device, channels_last = _eval_options(cell)
    if deployed is not None:
        val_logits = runtime_logits(deployed, data, model.data_config, "val", batch)
    elif val_logits is None:
        val_logits = predict_logits(model, data, "val", batch, device, channels_last)
    return Evaluation({"acc_mean_val": _val_accuracy(data, val_logits)})


def validation_accuracy(cell: dict, model, data: FaceAttributeData) -> float:
    """Return a float model's mean accuracy (percent) on the validation split, evaluated as :func:`evaluate_cell_model`
    does (the ``acc_mean_val`` of records written before that column existed)."""
    return evaluate_validation(cell, model, data).values["acc_mean_val"]


def evaluate_majority(cell: dict, data: FaceAttributeData) -> Evaluation:
    """Return the :class:`Evaluation` of the majority-class predictor fitted on the training split."""
    test_labels = data.labels[data.splits["test"]]
    train_labels = data.labels[data.splits["train"]]
    majority = metrics.majority_classes(train_labels)
    probs = np.broadcast_to(majority, test_labels.shape)
    values = metrics.summary_metrics(test_labels, probs, train_labels)
    values.pop("ece")  # a constant 0/1 predictor has no calibration to speak of
    default_thresholds = np.full(len(data.attr_names), 0.5)
    per_attribute = _per_attribute_rows(
        cell,
        data,
        test_labels,
        probs,
        default_thresholds,
        metrics.per_attribute_accuracy(test_labels, probs),
        metrics.per_attribute_prf(test_labels, probs)[2],
    )
    predictions = metrics.binarize(probs)
    return Evaluation(with_intervals(values, test_labels, predictions), per_attribute, predictions=predictions)


def model_inputs(data: FaceAttributeData, split: str, n_images: int, data_config: dict) -> np.ndarray:
    """Return the first ``n_images`` of ``split`` as a float32 NCHW batch, preprocessed for a model with ``data_config``
    (int8 calibration images come from here, so a quantized model is calibrated alike wherever it is built)."""
    indices = np.sort(data.splits[split][:n_images])
    return to_model_input(np.asarray(data.images[indices]), data_config).numpy()


def runtime_logits(deployed, data: FaceAttributeData, data_config: dict, split: str = "test", batch_size: int = 64) -> np.ndarray:
    """Return the logits (N, A) of a model running in a ``deploy.Deployed`` runtime on ``split``, in split order."""
    logits = [deployed(to_model_input(images, data_config).numpy()) for images, _ in iterate_batches(data, split, batch_size)]
    return np.concatenate(logits) if logits else np.zeros((0, data.labels.shape[1]), np.float32)


def runtime_attribute_accuracy(
    deployed, data: FaceAttributeData, data_config: dict, split: str = "test", batch_size: int = 64
) -> np.ndarray:
    """Return each attribute's accuracy (percent) of a model running in a ``deploy.Deployed`` runtime on ``split``."""
    probs = _sigmoid(runtime_logits(deployed, data, data_config, split, batch_size))
    return metrics.per_attribute_accuracy(data.labels[data.splits[split]], probs)


def runtime_accuracy(deployed, data: FaceAttributeData, data_config: dict, split: str = "test", batch_size: int = 64) -> float:
    """Return the mean per-attribute accuracy (percent) of a model running in a ``deploy.Deployed`` runtime on ``split``."""
    return float(runtime_attribute_accuracy(deployed, data, data_config, split, batch_size).mean())


def pse_mask_record(model, data, n_images: int = 3, thumbnail=(109, 89)) -> dict:
    """Return the PSE masks of a model on its first test images, small enough for the JSON record.

    ``{'images': [H x W x 3 uint8 thumbnails], 'masks': {module: [mask per image]}}``; ``{}`` for a
    model without PSE modules or an empty test split.
    """
    from models.pse import PSE, pse_masks

    indices = data.splits["test"][:n_images]
    if not any(isinstance(m, PSE) for m in model.modules()) or len(indices) == 0:
        return {}
    images = np.asarray(data.images[np.sort(indices)])
    masks = pse_masks(model, to_model_input(images, model.data_config))
    thumbs = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=thumbnail, mode="bilinear", antialias=True
    )
    return {
        "images": thumbs.round().clamp(0, 255).byte().permute(0, 2, 3, 1).tolist(),
        "masks": {name: [np.round(m[0].numpy(), 4).tolist() for m in mask] for name, mask in masks.items()},
    }
