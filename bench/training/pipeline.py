"""Compress -> fine-tune pipelines: a variant's steps applied to a trained model, the data each step asks for, and the
fine-tunes (plain, distilled, quantization-aware) that recover what compression takes.

What a step may do is its method's row (``compress.methods.METHODS``): a ``last_step`` method (int8) ends the pipeline
after the fine-tune; ``data_options`` are filled here from the study's data (:data:`DATA_OPTIONS`, one provider per
option name); ``pipeline_options`` (``iterations``, ``qat``) are applied here, never seen by the method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import expit
from torch import nn

import compress
from bench.data.loading import FaceAttributeData, iterate_batches, to_model_input
from bench.metrics import per_attribute_accuracy
from bench.settings import FinetuneSettings, TrainSettings
from bench.training.evaluate import model_inputs
from bench.training.teacher import SoftTargets, soft_targets
from bench.training.train import TrainResult, predict_logits, recalibrate_batchnorm, train_model
from compress.layers import as_patterns
from compress.options import DATA_DRIVEN_SELECTORS, SEARCH_OPTIONS, resolve_options


def _subset_train(data: FaceAttributeData, limit: int | None) -> FaceAttributeData:
    if not limit:
        return data
    return dataclasses.replace(data, splits={**data.splits, "train": data.splits["train"][: int(limit)]})


def _gradient_batch(model, data: FaceAttributeData, resolved: dict):
    images, labels = next(iterate_batches(data, "train", 16))
    return to_model_input(images, model.data_config), torch.from_numpy(labels)


def _validation(model, data: FaceAttributeData, resolved: dict):
    if resolved.get("max_drop") is None:
        return None  # accuracy control is off: nothing measures the drop
    val = np.sort(data.splits["val"])
    return model_inputs(data, "val", len(val), model.data_config), data.labels[val]


# What each data option of a step is filled with: provider(model, data, the step's resolved options) -> value.
DATA_OPTIONS = {
    # a batch of the first training images with their labels ('taylor' importance takes gradients on it)
    "gradient_batch": _gradient_batch,
    # the first calibration_images training images (a method asking for them has that option), the same the int8 runtimes of
    # the timing phase calibrate on
    "calibration": lambda model, data, resolved: model_inputs(data, "train", resolved["calibration_images"], model.data_config),
    # the validation split, which accuracy control measures the int8 drop on
    "validation": _validation,
}


def step_options(model, data: FaceAttributeData, step: dict) -> dict:
    """Return the options ``compress.apply`` runs a pipeline step with: the step's own (its pipeline options left out) and
    its method's data options filled from ``data`` (:data:`DATA_OPTIONS`).

    Raises:
        KeyError: a data option no provider fills (a method row naming one :data:`DATA_OPTIONS` lacks).
    """
    row = compress.get_method(step["method"])
    options = {k: v for k, v in step.items() if k != "method" and k not in row.pipeline_options}
    resolved = resolve_options(row.name, {k: v for k, v in row.options.items() if k not in row.data_options}, options)
    for name in row.data_options:
        options[name] = DATA_OPTIONS[name](model, data, resolved)
    return options


def _searched_ranks(model, method: str, example, data: FaceAttributeData, options: dict) -> dict:
    """Return ``options`` with ``ranks`` found by a data-driven selector (and its own options removed)."""
    from compress import rank_search

    selection = options["rank_selection"]
    resolved = resolve_options(method, compress.get_method(method).options, options)
    n_batches = resolved["search_batches"]
    batches = []
    for images, labels in iterate_batches(data, "train", 16, shuffle=True, seed=1):
        batches.append((to_model_input(images, model.data_config), torch.from_numpy(labels)))
        if len(batches) == n_batches:
            break
    rest = {k: v for k, v in options.items() if k not in SEARCH_OPTIONS + ("rank_selection",)}
    model = model.cpu().eval()
    if selection == "grad_align":
        ratios = resolved["candidate_ratios"]
        ranks = rank_search.grad_align_ranks(model, method, example, batches, [float(r) for r in ratios], **rest)
    else:
        n_eval = resolved["search_eval_images"]
        val = data.splits["val"][:n_eval]
        images = to_model_input(np.asarray(data.images[np.sort(val)]), model.data_config)
        evaluate = rank_search.accuracy_evaluator(images, torch.from_numpy(data.labels[np.sort(val)]))
        ranks = rank_search.binary_search_ranks(model, method, example, batches, evaluate, float(resolved["max_drop"]), **rest)
    return {**rest, "ranks": ranks, "layers": sorted(ranks) or ["<none chosen>"]}


def _finetune(
    model, data, finetune: FinetuneSettings, train_config: TrainSettings, factor_groups, progress, teacher=None
) -> TrainResult:
    extra = compress.norm_penalty(model, factor_groups, finetune.norm_lambda)
    return train_model(
        model,
        _subset_train(data, finetune.limit_train),
        finetune.train_config(train_config),
        progress=progress,
        extra_loss=extra,
        teacher=teacher,
        distill=finetune.distill,
        temperature=finetune.temperature,
    )


class _QuantizationWrapper(nn.Module):
    """Holds the model NNCF adds fake quantization to: NNCF registers its hooks as a submodule, which an
    ``nn.Sequential`` model (Slim-Net) would otherwise call as one of its layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.data_config = model.data_config

    def forward(self, x):
        return self.model(x)

    def get_classifier(self) -> nn.Module:
        """Return the wrapped model's classifier (training keeps it trainable while the backbone is frozen)."""
        from models import classifier_of

        return classifier_of(self.model)


def _qat_finetune(
    model, data, finetune: FinetuneSettings, train_config: TrainSettings, factor_groups, progress, teacher, step: dict
) -> TrainResult:
    """Fine-tune ``model`` in place with NNCF's fake quantization (int8 weights per channel, uint8 activations, ranges from
    the quantize step's calibration images), then keep its weights: the int8 runtimes calibrate them again."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    import deploy

    row = compress.get_method(step["method"])
    resolved = resolve_options(
        row.name, row.options, {k: v for k, v in step.items() if k != "method" and k not in row.pipeline_options}
    )
    images = torch.from_numpy(model_inputs(data, "train", resolved["calibration_images"], model.data_config))
    reduce = deploy.Int8Settings(reduce_range=resolved["reduce_range"]).effective_reduce_range()
    wrapped = nncf.quantize(
        _QuantizationWrapper(model.cpu().eval()),
        nncf.Dataset([images[i : i + 1] for i in range(len(images))]),
        subset_size=len(images),
        # bias correction would fit the biases to NNCF's quantizers, which the runtimes do not use
        advanced_parameters=AdvancedQuantizationParameters(
            disable_bias_correction=True, overflow_fix=OverflowFix.ENABLE if reduce else OverflowFix.DISABLE
        ),
    )
    tuned = _finetune(
        wrapped, data, finetune, train_config, [[f"model.{name}" for name in group] for group in factor_groups], progress, teacher
    )
    model.load_state_dict(wrapped.model.cpu().to(memory_format=torch.contiguous_format).state_dict())
    return tuned


@dataclass
class CompressionResult:
    """What a compress -> fine-tune pipeline returns.

    ``layer_rows`` is the per-layer speed-up table, each step against the model before it;
    ``acc_mean_nofinetune`` the test mean accuracy right after compression (and ``bn_recalibration``; None when the pipeline
    ran without the test split); ``history`` and
    ``finetune_seconds`` cover every fine-tune of the pipeline, ``finetune_setup`` is the last one's set-up
    (``bench.training.setups.TrainingSetup.describe``; empty without a fine-tune); ``factor_groups`` names the factor
    layers of every factorized layer; ``val_logits`` are the final model's validation logits when its last fine-tune
    computed them (None when a step changed the model after it, or nothing was fine-tuned); ``test_logits`` the final
    model's test logits when nothing changed it after ``acc_mean_nofinetune`` was measured (else None).
    """

    model: nn.Module
    reports: list[compress.CompressionReport] = field(default_factory=list)
    layer_rows: list[dict] = field(default_factory=list)
    acc_mean_nofinetune: float | None = None
    history: list[dict] = field(default_factory=list)
    finetune_seconds: float = 0.0
    finetune_setup: str = ""
    factor_groups: list[list[str]] = field(default_factory=list)
    val_logits: np.ndarray | None = None
    test_logits: np.ndarray | None = None


def _step_layer_rows(step_reports: list) -> list[dict]:
    """Return one row per layer of a step: an iterative step is compared from before its first to after its last iteration."""
    rows = [dict(r) for r in step_reports[-1].layers]
    if len(step_reports) > 1:
        for row, first in zip(rows, step_reports[0].layers):
            row.update({k: first[k] for k in ("params_before", "macs_before")})
            row["kernel"] = first["kernel"].split(" -> ")[0] + " -> " + row["kernel"].split(" -> ")[-1]
            row["status"] = "compressed" if row["params_after"] != row["params_before"] else row["status"]
    return rows


def _apply_step(
    current,
    data: FaceAttributeData,
    step: dict,
    finetune: FinetuneSettings,
    train_config: TrainSettings,
    teacher,
    result: CompressionResult,
    progress,
    layer_timing: dict | None,
):
    """Apply one shaping step to ``current`` (in ``iterations`` parts with a fine-tune between them), add its reports,
    factor groups, history and per-layer rows to ``result``; return the compressed model."""
    from bench.study.layer_speedup import layer_speedup_table

    row = compress.get_method(step["method"])
    example = torch.zeros(1, *current.data_config["input_size"])
    options = step_options(current, data, step)
    if result.factor_groups and row.factorization is not None:
        # Layers an earlier step created are its factors: factorizing them again is not what a pipeline means.
        options["exclude"] = as_patterns(options.get("exclude")) + [name for group in result.factor_groups for name in group]
    if options.get("rank_selection") in DATA_DRIVEN_SELECTORS:
        options = _searched_ranks(current, step["method"], example, data, options)
    iterations = (
        int(step.get("iterations", row.pipeline_options["iterations"].default)) if "iterations" in row.pipeline_options else 1
    )
    before_step, step_reports = current, []
    for iteration in range(iterations):
        if iterations > 1:
            # Cumulative kept fraction after k of N steps is 1 - r*k/N (torch-pruning's linear schedule).
            ratio = float(step.get(row.amount, row.options[row.amount].default))
            options[row.amount] = 1 - (1 - ratio * (iteration + 1) / iterations) / (1 - ratio * iteration / iterations)
        current, report = compress.apply(current.cpu().eval(), step["method"], example, **options)
        step_reports.append(report)
        result.factor_groups += report.factor_groups
        if iterations > 1 and iteration < iterations - 1 and finetune.epochs > 0:
            _record_finetune(result, _finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher))
            current = current.cpu().to(memory_format=torch.contiguous_format)
    result.reports += step_reports
    # Per-layer timing is LWALM's Table 1, for factorized layers; a pruned model changes every layer and
    # its speed-up is measured whole (latency.csv), so its rows keep the theoretical speed-up only.
    step_timing = layer_timing if row.factorization is not None else None
    result.layer_rows += layer_speedup_table(
        before_step, current.cpu().eval(), _step_layer_rows(step_reports), example, step_timing
    )
    return current


def _record_finetune(result: CompressionResult, tuned: TrainResult) -> None:
    result.history += tuned.history
    result.finetune_seconds += tuned.train_seconds
    result.finetune_setup = tuned.setup


def compress_and_finetune(
    model,
    data: FaceAttributeData,
    steps: list[dict],
    finetune: dict | FinetuneSettings,
    train_config: TrainSettings,
    progress=None,
    layer_timing: dict | None = None,
    teacher: SoftTargets | None = None,
    test_split: bool = True,
) -> CompressionResult:
    """Apply the pipeline ``steps`` to a trained ``model`` and fine-tune the result.

    A step whose method takes ``iterations`` (pruning) with ``iterations: N`` compresses in N equal parts of the cumulative
    amount with a fine-tune after each; every other step is applied once and the whole pipeline is fine-tuned at the end
    (``finetune.epochs`` 0 skips it), before a last step (int8), which ``qat`` fine-tunes with fake quantization. A
    factorization step leaves the factor layers of earlier steps alone (e.g. SVD after Tucker-2 does not split Tucker's
    1x1 factors). The norm constraint (``finetune.norm_lambda``) covers every factor layer created by the pipeline. With
    ``finetune.distill`` = alpha > 0 every fine-tune distils from ``teacher`` (another model's outputs on every training
    image: ``bench.training.teacher.soft_targets``; None: the uncompressed ``model``'s, computed here without a cache;
    temperature ``finetune.temperature``).
    ``layer_timing`` holds the per-layer timer's settings
    (``bench.study.layer_speedup.layer_speedup_table``; None: theoretical speed-ups only). ``test_split`` False leaves the
    test split unseen (a search's screened trial): no accuracy before the fine-tune.

    Raises:
        ValueError: an invalid step option or fine-tune field (named in the message).
    """
    finetune = finetune if isinstance(finetune, FinetuneSettings) else FinetuneSettings.from_mapping(finetune)
    if finetune.distils and teacher is None:
        teacher = soft_targets(model, data, train_config.eval_batch_size)
    current = model.cpu().to(memory_format=torch.contiguous_format).eval()
    result = CompressionResult(current)
    last = steps[-1] if steps and compress.get_method(steps[-1]["method"]).last_step else None
    shaping = steps[:-1] if last else steps
    for step in shaping:
        current = _apply_step(current, data, step, finetune, train_config, teacher, result, progress, layer_timing)
    if shaping and finetune.bn_recalibration:
        recalibrate_batchnorm(
            current, data, finetune.bn_recalibration, device=train_config.device, channels_last=train_config.channels_last
        )
    qat = bool(last and last.get("qat"))
    # Post-training quantization of an unchanged model has nothing to recover: the fine-tune would only retrain it.
    tunes = finetune.epochs > 0 and (shaping or qat)
    if test_split:
        test_logits = predict_logits(
            current, data, "test", train_config.eval_batch_size, train_config.device, train_config.channels_last
        )
        result.acc_mean_nofinetune = float(per_attribute_accuracy(data.labels[data.splits["test"]], expit(test_logits)).mean())
        if not tunes and not last:  # the model evaluated before a fine-tune is the final one: its test logits are its own
            result.test_logits = test_logits
    if tunes:
        tuned = (
            _qat_finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher, last)
            if qat
            else _finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher)
        )
        _record_finetune(result, tuned)
        result.val_logits = None if qat else tuned.best_val_logits  # the fake-quantized model's are not the model's
    current = current.cpu().to(memory_format=torch.contiguous_format).eval()
    if last:
        current, report = compress.apply(
            current, last["method"], torch.zeros(1, *current.data_config["input_size"]), **step_options(current, data, last)
        )
        result.reports.append(report)
        result.val_logits = None
    result.model = current
    return result
