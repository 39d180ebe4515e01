"""Compression variants of a study: their specs parsed and checked against the method table, and their names.

A variant is a pipeline of steps. In text (CLI ``--compress``, YAML strings)::

    svd:rank_ratio=0.5
    prune:pruning_ratio=0.5,importance=l2,iterations=3
    tucker2:rank_ratio=0.5,kernel_sizes=3+svd:rank_selection=energy,energy=0.9
    cp_epc:rank_ratio=0.1,layers=conv1.*

Steps are joined by ``+``, options by ``,``, list values by ``|`` (``layers=conv1.*|slim1.*``).
In YAML a variant may also be a mapping ``{steps: [{method: svd, rank_ratio: 0.5}], name: ...}``.
"""

from __future__ import annotations

import compress
from compress.layers import as_patterns
from compress.options import Option

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
    row = compress.get_method(method)
    return {**{k: v for k, v in row.options.items() if k not in row.data_options}, **row.pipeline_options}


def parse_step(text: str) -> dict:
    """Return ``{'method': ..., **options}`` for one step such as ``svd:rank_ratio=0.5,layers=a.*|b.*``.

    Options whose kind is a list (layer patterns, kernel sizes, candidate ratios) always come back
    as lists; other values with ``|`` become lists too (and fail validation).

    Raises:
        VariantSpecError: unknown method or an option without ``=``.
    """
    method, _, option_text = text.strip().partition(":")
    if method not in compress.list_methods():
        raise VariantSpecError(
            f"compression step {text!r}: unknown method {method!r}; known: {', '.join(compress.list_methods())}"
        )
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
    row = compress.get_method(step["method"])
    pipeline = row.pipeline_options
    from_data = sorted(set(options) & set(row.data_options))
    if from_data:
        raise VariantSpecError(
            f"compression step {variant_label([step])!r}: option {', '.join(from_data)}: set from the study's data "
            f"(the first training or validation images), not from the spec; its options: {sorted(_step_options(row.name))}"
        )
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
    for step in steps[:-1]:
        if compress.get_method(step["method"]).last_step:
            raise VariantSpecError(
                f"compression variant {variant_label(steps)!r}: {step['method']} can only be the last step "
                f"(it sets how the finished model is deployed)"
            )
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
                steps.append(
                    validate_step(
                        {
                            k: (list(v) if k in known and known[k].kind in LIST_KINDS and isinstance(v, (list, tuple)) else v)
                            for k, v in step.items()
                        }
                    )
                )
            else:
                raise VariantSpecError(f"compression step {step!r}: expected 'method:opts' or a mapping with a known 'method'")
        return _last_steps_last(steps)
    raise VariantSpecError(f"compression variant {spec!r}: expected 'method:opts+...' or a mapping with 'steps'")


# Options that say how far a step goes when its method's own amount (``Method.amount``) is not given, in the order a short
# name looks for them.
OTHER_AMOUNTS = ("energy", "target_macs", "target_params", "target_latency")


def variant_name(steps: list[dict]) -> str:
    """Return a pipeline's short display name: per step its method, the layers it is limited to and how far it goes,
    e.g. ``svd 0.5``, ``prune 0.3``, ``cp conv1 0.25``, ``prune macs 0.5 + svd 0.25`` (the full specification is
    :func:`variant_label`, kept in the ``compression`` column)."""
    parts = []
    for step in steps:
        row = compress.get_method(step["method"])
        if row.short_name is not None:
            parts.append(row.short_name(step))
            continue
        where = " ".join(pattern.strip("*.") or pattern for pattern in as_patterns(step.get("layers")))
        key = next((k for k in (row.amount, *OTHER_AMOUNTS) if k is not None and k in step), None)
        amount = (
            "" if key is None else (f"{key.removeprefix('target_')} " if key.startswith("target_") else "") + f"{step[key]:g}"
        )
        parts.append(" ".join(p for p in (step["method"], where, amount) if p))
    return " + ".join(parts)


def variant_label(steps: list[dict]) -> str:
    """Return the canonical text of a pipeline (the ``compression`` column), e.g.
    ``prune:pruning_ratio=0.5+svd:rank_ratio=0.5``."""
    parts = []
    for step in steps:
        options = ",".join(f"{k}={'|'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in step.items() if k != "method")
        parts.append(step["method"] + (f":{options}" if options else ""))
    return "+".join(parts)
