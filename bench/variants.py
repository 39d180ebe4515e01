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

import dataclasses
import logging

import numpy as np
import torch

import compress
from bench.data import FaceAttributeData, iterate_batches, to_model_input
from bench.metrics import per_attribute_accuracy
from bench.train import TrainConfig, predict_probs, train_model

_logger = logging.getLogger(__name__)

LIST_OPTIONS = {"layers", "exclude", "kernel_sizes", "candidate_ratios"}
FINETUNE_FIELDS = {"epochs", "lr", "norm_lambda", "limit_train", "batch_size"}
SEARCH_SELECTORS = ("grad_align", "binary_search")
SEARCH_OPTIONS = ("search_batches", "candidate_ratios", "max_drop", "search_eval_images")


class VariantSpecError(ValueError):
    """A compression variant spec cannot be parsed (the message quotes the offending part)."""


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_step(text: str) -> dict:
    """Return ``{'method': ..., **options}`` for one step such as ``svd:rank_ratio=0.5,layers=a.*|b.*``.

    Raises:
        VariantSpecError: unknown method or an option without ``=``.
    """
    method, _, option_text = text.strip().partition(":")
    if method not in compress.list_methods():
        raise VariantSpecError(f"compression step {text!r}: unknown method {method!r}; known: {', '.join(compress.list_methods())}")
    step = {"method": method}
    for item in filter(None, (part.strip() for part in option_text.split(","))):
        key, equals, raw = item.partition("=")
        if not equals:
            raise VariantSpecError(f"compression step {text!r}: option {item!r} is not key=value")
        values = [_value(v) for v in raw.split("|")]
        step[key.strip()] = values if key.strip() in LIST_OPTIONS or len(values) > 1 else values[0]
    return step


STEP_RANGES = {"rank_ratio": (0.0, 1.0, "(0, 1]"), "energy": (0.0, 1.0, "(0, 1]"), "pruning_ratio": (0.0, 0.999999, "(0, 1)"),
               "amount": (0.0, 0.999999, "(0, 1)")}


def validate_step(step: dict) -> dict:
    """Return ``step`` after checking its option names and value ranges against its method.

    Raises:
        VariantSpecError: an option the method does not know, or a value out of range (both named).
    """
    from compress.methods import FACTORIZATION_OPTIONS, PRUNE_OPTIONS, SPARSITY_OPTIONS

    known = {"prune": PRUNE_OPTIONS | {"iterations"}, "sparsity": SPARSITY_OPTIONS}.get(
        step["method"], FACTORIZATION_OPTIONS | set(SEARCH_OPTIONS))
    unknown = sorted(set(step) - known - {"method"})
    if unknown:
        raise VariantSpecError(f"compression step {variant_label([step])!r}: unknown options {unknown}; known: {sorted(known)}")
    for key, (low, high, text) in STEP_RANGES.items():
        if key in step and not (isinstance(step[key], (int, float)) and low < float(step[key]) <= high):
            raise VariantSpecError(f"compression step {variant_label([step])!r}: {key} must be in {text}, got {step[key]!r}")
    return step


def parse_variant(spec) -> list[dict]:
    """Return the list of steps of a variant given as text or as a mapping with ``steps``.

    Raises:
        VariantSpecError: malformed spec.
    """
    if isinstance(spec, str):
        return [validate_step(parse_step(part)) for part in spec.split("+") if part.strip()]
    if isinstance(spec, dict) and isinstance(spec.get("steps"), list):
        steps = []
        for step in spec["steps"]:
            if isinstance(step, str):
                steps.append(validate_step(parse_step(step)))
            elif isinstance(step, dict) and step.get("method") in compress.list_methods():
                steps.append(validate_step({k: (list(v) if k in LIST_OPTIONS and isinstance(v, (list, tuple)) else v) for k, v in step.items()}))
            else:
                raise VariantSpecError(f"compression step {step!r}: expected 'method:opts' or a mapping with a known 'method'")
        return steps
    raise VariantSpecError(f"compression variant {spec!r}: expected 'method:opts+...' or a mapping with 'steps'")


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
    n_batches = int(options.get("search_batches", 4))
    batches = []
    for images, labels in iterate_batches(data, "train", 16, shuffle=True, seed=1):
        batches.append((to_model_input(images, model.data_config), torch.from_numpy(labels)))
        if len(batches) == n_batches:
            break
    rest = {k: v for k, v in options.items() if k not in SEARCH_OPTIONS + ("rank_selection",)}
    model = model.cpu().eval()
    if selection == "grad_align":
        ratios = options.get("candidate_ratios", [0.25, 0.5, 0.75])
        ranks = search.grad_align_ranks(model, method, example, batches, [float(r) for r in ratios], **rest)
    else:
        n_eval = int(options.get("search_eval_images", 128))
        val = data.splits["val"][:n_eval]
        images = to_model_input(np.asarray(data.images[np.sort(val)]), model.data_config)
        evaluate = search.accuracy_evaluator(images, torch.from_numpy(data.labels[np.sort(val)]))
        ranks = search.binary_search_ranks(model, method, example, batches, evaluate, float(options.get("max_drop", 0.5)), **rest)
    return {**rest, "ranks": ranks, "layers": sorted(ranks) or ["<none chosen>"]}


def _finetune(model, data, finetune: dict, train_config: TrainConfig, factor_groups, progress):
    config = dataclasses.replace(
        train_config, epochs=int(finetune.get("epochs", 1)), lr=float(finetune.get("lr", train_config.lr)),
        batch_size=int(finetune.get("batch_size", train_config.batch_size)), lr_step_epochs=0, freeze_backbone_epochs=0,
    )
    extra = compress.norm_penalty(model, factor_groups, float(finetune.get("norm_lambda", 0.0)))
    return train_model(model, _subset_train(data, finetune.get("limit_train")), config, progress=progress, extra_loss=extra)


def compress_and_finetune(model, data: FaceAttributeData, steps: list[dict], finetune: dict, train_config: TrainConfig,
                          progress=None, timing: dict | None = None) -> dict:
    """Apply the pipeline ``steps`` to a trained ``model`` and fine-tune the result.

    A ``prune`` step with ``iterations: N`` prunes in N equal steps of the cumulative ratio with a
    fine-tune after each (iterative pruning); every other step is applied once and the whole
    pipeline is fine-tuned at the end (``finetune.epochs`` 0 skips it). A factorization step leaves
    the factor layers of earlier steps alone (e.g. SVD after Tucker-2 does not split Tucker's 1x1
    factors). The norm constraint
    (``finetune.norm_lambda``) covers every factor layer created by the pipeline.

    Returns:
        ``{'model', 'reports', 'layer_rows', 'acc_mean_nofinetune', 'history', 'finetune_seconds', 'factor_groups'}``;
        ``layer_rows`` is the per-layer speed-up table, each step against the model before it; ``timing``
        passes ``min_iters``/``min_seconds``/``threads`` to its timer.
    Raises:
        ValueError: an invalid step option (named in the message).
    """
    from compress.speedup import layer_speedup_table

    unknown = sorted(set(finetune) - FINETUNE_FIELDS)
    if unknown:
        raise ValueError(f"finetune: unknown fields {unknown}; known: {sorted(FINETUNE_FIELDS)}")
    timing = timing or {}
    input_size = model.data_config["input_size"]
    example = torch.zeros(1, *input_size)
    current = model.cpu().to(memory_format=torch.contiguous_format).eval()
    reports, factor_groups, history, seconds, layer_rows = [], [], [], 0.0, []
    for step in steps:
        options = {k: v for k, v in step.items() if k not in ("method", "iterations")}
        if factor_groups and step["method"] in ("svd", "tucker2", "cp", "cp_epc"):
            # Layers an earlier step created are its factors: factorizing them again is not what a pipeline means.
            options["exclude"] = list(options.get("exclude") or []) + [name for group in factor_groups for name in group]
        if options.get("rank_selection") in SEARCH_SELECTORS:
            options = _searched_ranks(current, step["method"], example, data, options)
        iterations = int(step.get("iterations", 1)) if step["method"] == "prune" else 1
        if step["method"] == "prune" and options.get("importance") == "taylor":
            options["calibration"] = _calibration_batch(current, data)
        before_step = current
        step_reports = []
        for iteration in range(iterations):
            if iterations > 1:
                # Cumulative kept fraction after k of N steps is 1 - r*k/N (torch-pruning's linear schedule).
                ratio = float(step.get("pruning_ratio", 0.5))
                options["pruning_ratio"] = 1 - (1 - ratio * (iteration + 1) / iterations) / (1 - ratio * iteration / iterations)
            current, report = compress.apply(current.cpu().eval(), step["method"], example, **options)
            step_reports.append(report)
            factor_groups += report.factor_groups
            if iterations > 1 and iteration < iterations - 1 and int(finetune.get("epochs", 1)) > 0:
                result = _finetune(current, data, finetune, train_config, factor_groups, progress)
                history += result.history
                seconds += result.train_seconds
                current = current.cpu().to(memory_format=torch.contiguous_format)
        reports += step_reports
        # One row per layer and step: iterative pruning is compared from before its first to after its last iteration.
        rows = [dict(r) for r in step_reports[-1].layers]
        if len(step_reports) > 1:
            for row, first in zip(rows, step_reports[0].layers):
                row.update({k: first[k] for k in ("params_before", "macs_before")})
                row["kernel"] = first["kernel"].split(" -> ")[0] + " -> " + row["kernel"].split(" -> ")[-1]
                row["status"] = "compressed" if row["params_after"] != row["params_before"] else row["status"]
        layer_rows += layer_speedup_table(before_step, current.cpu().eval(), rows, example, **timing)
    probs = predict_probs(current, data, "test", train_config.eval_batch_size, train_config.device)
    acc_nofinetune = float(per_attribute_accuracy(data.labels[data.splits["test"]], probs).mean())
    if int(finetune.get("epochs", 1)) > 0:
        result = _finetune(current, data, finetune, train_config, factor_groups, progress)
        history += result.history
        seconds += result.train_seconds
    current = current.cpu().to(memory_format=torch.contiguous_format).eval()
    return {"model": current, "reports": reports, "layer_rows": layer_rows, "acc_mean_nofinetune": acc_nofinetune,
            "history": history, "finetune_seconds": seconds, "factor_groups": factor_groups}
