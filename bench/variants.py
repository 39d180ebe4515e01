"""Compression variants of a study: parsing their specs and running compress -> fine-tune pipelines.

A variant is a pipeline of steps. In text (CLI ``--compress``, YAML strings)::

    svd:rank_ratio=0.5
    prune:pruning_ratio=0.5,importance=l2,iterations=3
    tucker2:rank_ratio=0.5,kernel_sizes=3+svd:rank_selection=energy,energy=0.9
    cp_epc:rank_ratio=0.1,layers=conv1.*

Steps are joined by ``+``, options by ``,``, list values by ``|`` (``layers=conv1.*|slim1.*``).
In YAML a variant may also be a mapping ``{steps: [{method: svd, rank_ratio: 0.5}], name: ...}``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import compress
from bench.data import FaceAttributeData, iterate_batches, to_model_input
from bench.metrics import per_attribute_accuracy
from bench.settings import FinetuneSettings, TrainConfig
from bench.train import TrainResult, predict_probs, train_model
from compress.layers import as_patterns
from compress.options import DATA_DRIVEN_SELECTORS, SEARCH_OPTIONS, Option, resolve_options

# Options of a pipeline step that the pipeline itself handles, beside the method's own.
PIPELINE_OPTIONS = {"prune": {"iterations": Option("prune in N equal steps with a fine-tune after each", "int", 1, None, default=1)}}
LIST_KINDS = ("names", "ints", "floats")


class VariantSpecError(ValueError):
    """A compression variant spec cannot be parsed (the message quotes the offending part)."""


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _step_options(method: str) -> dict[str, Option]:
    return {**compress.get_method(method).options, **PIPELINE_OPTIONS.get(method, {})}


def parse_step(text: str) -> dict:
    """Return ``{'method': ..., **options}`` for one step such as ``svd:rank_ratio=0.5,layers=a.*|b.*``.

    Options whose kind is a list (layer patterns, kernel sizes, candidate ratios) always come back
    as lists; other values with ``|`` become lists too (and fail validation).

    Raises:
        VariantSpecError: unknown method or an option without ``=``.
    """
    method, _, option_text = text.strip().partition(":")
    if method not in compress.list_methods():
        raise VariantSpecError(f"compression step {text!r}: unknown method {method!r}; known: {', '.join(compress.list_methods())}")
    known = _step_options(method)
    step = {"method": method}
    for item in filter(None, (part.strip() for part in option_text.split(","))):
        key, equals, raw = item.partition("=")
        if not equals:
            raise VariantSpecError(f"compression step {text!r}: option {item!r} is not key=value")
        key = key.strip()
        if key in step:
            raise VariantSpecError(f"compression step {text!r}: option {key!r} is given twice")
        values = [_value(v) for v in raw.split("|")]
        is_list = key in known and known[key].kind in LIST_KINDS
        step[key] = values if is_list or len(values) > 1 else values[0]
    return step


def validate_step(step: dict) -> dict:
    """Return ``step`` after checking its option names and values against its method's row in ``compress``.

    Raises:
        VariantSpecError: an option the method does not take, or a value out of range (both named).
    """
    options = {k: v for k, v in step.items() if k != "method"}
    pipeline = PIPELINE_OPTIONS.get(step["method"], {})
    try:
        for name, option in pipeline.items():
            if name in options and option.problem(options[name]):
                raise ValueError(f"{step['method']}: {name} {option.problem(options[name])}")
        compress.validate_options(step["method"], **{k: v for k, v in options.items() if k not in pipeline})
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        if "unknown options" in message:
            known = sorted(_step_options(step["method"]))
            message = message.split("; known:")[0] + f"; known: {known}"
        raise VariantSpecError(f"compression step {variant_label([step])!r}: {message}") from None
    return step


def _last_steps_last(steps: list[dict]) -> list[dict]:
    from compress.methods import LAST_STEP_METHODS

    for step in steps[:-1]:
        if step["method"] in LAST_STEP_METHODS:
            raise VariantSpecError(f"compression variant {variant_label(steps)!r}: {step['method']} can only be the last step "
                                   f"(it sets how the finished model is deployed)")
    return steps


def parse_variant(spec) -> list[dict]:
    """Return the list of steps of a variant given as text or as a mapping with ``steps``.

    Raises:
        VariantSpecError: malformed spec.
    """
    if isinstance(spec, str):
        return _last_steps_last([validate_step(parse_step(part)) for part in spec.split("+") if part.strip()])
    if isinstance(spec, dict) and isinstance(spec.get("steps"), list):
        steps = []
        for step in spec["steps"]:
            if isinstance(step, str):
                steps.append(validate_step(parse_step(step)))
            elif isinstance(step, dict) and step.get("method") in compress.list_methods():
                known = _step_options(step["method"])
                steps.append(validate_step({k: (list(v) if k in known and known[k].kind in LIST_KINDS and isinstance(v, (list, tuple)) else v)
                                            for k, v in step.items()}))
            else:
                raise VariantSpecError(f"compression step {step!r}: expected 'method:opts' or a mapping with a known 'method'")
        return _last_steps_last(steps)
    raise VariantSpecError(f"compression variant {spec!r}: expected 'method:opts+...' or a mapping with 'steps'")


# The option that says how far a step goes, in the order a short name looks for it.
NAME_KNOBS = ("rank_ratio", "pruning_ratio", "amount", "energy", "target_macs", "target_params", "target_latency")


def variant_name(steps: list[dict]) -> str:
    """Return a pipeline's short display name: per step its method, the layers it is limited to and how far it goes,
    e.g. ``svd 0.5``, ``prune 0.3``, ``cp conv1 0.25``, ``prune macs 0.5 + svd 0.25`` (the full specification is
    :func:`variant_label`, kept in the ``compression`` column)."""
    parts = []
    for step in steps:
        if step["method"] == "quantize":
            parts.append(" ".join(["int8"] + (["qat"] if step.get("qat") else []) + ([step["calibration_method"]] if "calibration_method" in step else [])
                                  + ([f"drop {step['max_drop']:g}"] if step.get("max_drop") is not None else [])))
            continue
        where = " ".join(pattern.strip("*.") or pattern for pattern in as_patterns(step.get("layers")))
        knob = next((step[k] for k in NAME_KNOBS if k in step), None)
        amount = ""
        if knob is not None:
            key = next(k for k in NAME_KNOBS if k in step)
            amount = (f"{key.removeprefix('target_')} " if key.startswith("target_") else "") + f"{knob:g}"
        parts.append(" ".join(p for p in (step["method"], where, amount) if p))
    return " + ".join(parts)


def variant_label(steps: list[dict]) -> str:
    """Return the canonical text of a pipeline (the ``compression`` column), e.g. ``prune:pruning_ratio=0.5+svd:rank_ratio=0.5``."""
    parts = []
    for step in steps:
        options = ",".join(f"{k}={'|'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in step.items() if k != "method")
        parts.append(step["method"] + (f":{options}" if options else ""))
    return "+".join(parts)


def _subset_train(data: FaceAttributeData, limit: int | None) -> FaceAttributeData:
    if not limit:
        return data
    return dataclasses.replace(data, splits={**data.splits, "train": data.splits["train"][: int(limit)]})


def _calibration_batch(model, data: FaceAttributeData, batch_size: int = 16):
    images, labels = next(iterate_batches(data, "train", batch_size))
    return to_model_input(images, model.data_config), torch.from_numpy(labels)


def _searched_ranks(model, method: str, example, data: FaceAttributeData, options: dict) -> dict:
    """Return ``options`` with ``ranks`` found by a data-driven selector (and its own options removed)."""
    from compress import search

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
        ranks = search.grad_align_ranks(model, method, example, batches, [float(r) for r in ratios], **rest)
    else:
        n_eval = resolved["search_eval_images"]
        val = data.splits["val"][:n_eval]
        images = to_model_input(np.asarray(data.images[np.sort(val)]), model.data_config)
        evaluate = search.accuracy_evaluator(images, torch.from_numpy(data.labels[np.sort(val)]))
        ranks = search.binary_search_ranks(model, method, example, batches, evaluate, float(resolved["max_drop"]), **rest)
    return {**rest, "ranks": ranks, "layers": sorted(ranks) or ["<none chosen>"]}


def _finetune(model, data, finetune: FinetuneSettings, train_config: TrainConfig, factor_groups, progress, teacher=None) -> TrainResult:
    extra = compress.norm_penalty(model, factor_groups, finetune.norm_lambda)
    return train_model(model, _subset_train(data, finetune.limit_train), finetune.train_config(train_config), progress=progress,
                       extra_loss=extra, teacher=teacher if finetune.distill > 0 else None, distill=finetune.distill,
                       temperature=finetune.temperature)


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


def _qat_finetune(model, data, finetune: FinetuneSettings, train_config: TrainConfig, factor_groups, progress, teacher,
                  step: dict) -> TrainResult:
    """Fine-tune ``model`` in place with NNCF's fake quantization (int8 weights per channel, uint8 activations, ranges from
    the quantize step's calibration images), then keep its weights: the int8 runtimes calibrate them again."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from bench.evaluate import model_inputs
    import deploy

    resolved = resolve_options("quantize", compress.get_method("quantize").options, {k: v for k, v in step.items() if k != "method"})
    images = torch.from_numpy(model_inputs(data, "train", resolved["calibration_images"], model.data_config))
    reduce = deploy.Int8Settings(reduce_range=resolved["reduce_range"]).effective_reduce_range()
    wrapped = nncf.quantize(_QuantizationWrapper(model.cpu().eval()), nncf.Dataset([images[i: i + 1] for i in range(len(images))]),
                            subset_size=len(images),
                            # bias correction would fit the biases to NNCF's quantizers, which the runtimes do not use
                            advanced_parameters=AdvancedQuantizationParameters(
                                disable_bias_correction=True, overflow_fix=OverflowFix.ENABLE if reduce else OverflowFix.DISABLE))
    tuned = _finetune(wrapped, data, finetune, train_config, [[f"model.{name}" for name in group] for group in factor_groups],
                      progress, teacher)
    model.load_state_dict(wrapped.model.cpu().to(memory_format=torch.contiguous_format).state_dict())
    return tuned


@dataclass
class CompressionResult:
    """What a compress -> fine-tune pipeline returns.

    ``layer_rows`` is the per-layer speed-up table, each step against the model before it;
    ``acc_mean_nofinetune`` the test mean accuracy right after compression; ``history`` and
    ``finetune_seconds`` cover every fine-tune of the pipeline; ``factor_groups`` names the factor
    layers of every factorized layer.
    """

    model: nn.Module
    reports: list[compress.CompressionReport] = field(default_factory=list)
    layer_rows: list[dict] = field(default_factory=list)
    acc_mean_nofinetune: float = float("nan")
    history: list[dict] = field(default_factory=list)
    finetune_seconds: float = 0.0
    factor_groups: list[list[str]] = field(default_factory=list)


def compress_and_finetune(model, data: FaceAttributeData, steps: list[dict], finetune: dict | FinetuneSettings,
                          train_config: TrainConfig, progress=None, layer_timing: dict | None = None) -> CompressionResult:
    """Apply the pipeline ``steps`` to a trained ``model`` and fine-tune the result.

    A ``prune`` step with ``iterations: N`` prunes in N equal steps of the cumulative ratio with a
    fine-tune after each (iterative pruning); every other step is applied once and the whole
    pipeline is fine-tuned at the end (``finetune.epochs`` 0 skips it). A factorization step leaves
    the factor layers of earlier steps alone (e.g. SVD after Tucker-2 does not split Tucker's 1x1
    factors). The norm constraint (``finetune.norm_lambda``) covers every factor layer created by
    the pipeline. With ``finetune.distill`` = alpha > 0 every fine-tune distils from the uncompressed
    ``model`` (temperature ``finetune.temperature``). ``layer_timing`` holds the per-layer timer's
    settings (``bench.speedup.layer_speedup_table``; None or empty runtimes: theoretical speed-ups only).

    Raises:
        ValueError: an invalid step option or fine-tune field (named in the message).
    """
    from bench.speedup import layer_speedup_table

    finetune = finetune if isinstance(finetune, FinetuneSettings) else FinetuneSettings.from_mapping(finetune)
    layer_timing = layer_timing or {"runtimes": ()}
    input_size = model.data_config["input_size"]
    example = torch.zeros(1, *input_size)
    current = model.cpu().to(memory_format=torch.contiguous_format).eval()
    teacher = copy.deepcopy(current) if finetune.distill > 0 else None
    result = CompressionResult(current)
    quantize_step = steps[-1] if steps and steps[-1]["method"] == "quantize" else None
    shaping = steps[:-1] if quantize_step else steps
    for step in shaping:
        options = {k: v for k, v in step.items() if k not in ["method", *PIPELINE_OPTIONS.get(step["method"], {})]}
        is_factorization = compress.get_method(step["method"]).factorization is not None
        if result.factor_groups and is_factorization:
            # Layers an earlier step created are its factors: factorizing them again is not what a pipeline means.
            options["exclude"] = as_patterns(options.get("exclude")) + [name for group in result.factor_groups for name in group]
        if options.get("rank_selection") in DATA_DRIVEN_SELECTORS:
            options = _searched_ranks(current, step["method"], example, data, options)
        iterations = int(step.get("iterations", PIPELINE_OPTIONS["prune"]["iterations"].default))
        if step["method"] == "prune" and options.get("importance") == "taylor":
            options["calibration"] = _calibration_batch(current, data)
        before_step = current
        step_reports = []
        for iteration in range(iterations):
            if iterations > 1:
                # Cumulative kept fraction after k of N steps is 1 - r*k/N (torch-pruning's linear schedule).
                ratio = float(step.get("pruning_ratio", compress.get_method("prune").options["pruning_ratio"].default))
                options["pruning_ratio"] = 1 - (1 - ratio * (iteration + 1) / iterations) / (1 - ratio * iteration / iterations)
            current, report = compress.apply(current.cpu().eval(), step["method"], example, **options)
            step_reports.append(report)
            result.factor_groups += report.factor_groups
            if iterations > 1 and iteration < iterations - 1 and finetune.epochs > 0:
                tuned = _finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher)
                result.history += tuned.history
                result.finetune_seconds += tuned.train_seconds
                current = current.cpu().to(memory_format=torch.contiguous_format)
        result.reports += step_reports
        # One row per layer and step: iterative pruning is compared from before its first to after its last iteration.
        rows = [dict(r) for r in step_reports[-1].layers]
        if len(step_reports) > 1:
            for row, first in zip(rows, step_reports[0].layers):
                row.update({k: first[k] for k in ("params_before", "macs_before")})
                row["kernel"] = first["kernel"].split(" -> ")[0] + " -> " + row["kernel"].split(" -> ")[-1]
                row["status"] = "compressed" if row["params_after"] != row["params_before"] else row["status"]
        # Per-layer timing is LWALM's Table 1, for factorized layers; a pruned model changes every layer and
        # its speed-up is measured whole (latency.csv), so its rows keep the theoretical speed-up only.
        step_timing = layer_timing if is_factorization else {**layer_timing, "runtimes": ()}
        result.layer_rows += layer_speedup_table(before_step, current.cpu().eval(), rows, example, **step_timing)
    probs = predict_probs(current, data, "test", train_config.eval_batch_size, train_config.device, train_config.channels_last)
    result.acc_mean_nofinetune = float(per_attribute_accuracy(data.labels[data.splits["test"]], probs).mean())
    qat = bool(quantize_step and quantize_step.get("qat"))
    # Post-training quantization of an unchanged model has nothing to recover: the fine-tune would only retrain it.
    if finetune.epochs > 0 and (shaping or qat):
        if qat:
            tuned = _qat_finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher, quantize_step)
        else:
            tuned = _finetune(current, data, finetune, train_config, result.factor_groups, progress, teacher)
        result.history += tuned.history
        result.finetune_seconds += tuned.train_seconds
    current = current.cpu().to(memory_format=torch.contiguous_format).eval()
    if quantize_step:
        current, report = compress.apply(current, "quantize", example, **_quantize_options(current, data, quantize_step))
        result.reports.append(report)
    result.model = current
    return result


def _quantize_options(model, data: FaceAttributeData, step: dict) -> dict:
    """Return the quantize step's options with the data it needs: the first ``calibration_images`` training images
    (the same the int8 runtimes of the timing phase calibrate on) and, for accuracy control, the validation split."""
    from bench.evaluate import model_inputs

    options = {k: v for k, v in step.items() if k != "method"}
    resolved = resolve_options("quantize", compress.get_method("quantize").options, options)
    options["calibration"] = model_inputs(data, "train", resolved["calibration_images"], model.data_config)
    if resolved["max_drop"] is not None:
        val = np.sort(data.splits["val"])
        options["validation"] = (model_inputs(data, "val", len(val), model.data_config), data.labels[val])
    return options
