"""Finding, measuring and replacing the conv/linear layers a compression method works on."""

from __future__ import annotations

import difflib
import fnmatch

import torch
from torch import nn


def get_module(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module at dotted ``name`` (``''`` is the model itself).

    Raises:
        KeyError: no such module.
    """
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        raise KeyError(f"{type(model).__name__} has no module {name!r}") from None


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the sub-module at dotted ``name`` with ``new``, in place."""
    parent_name, _, child = name.rpartition(".")
    setattr(get_module(model, parent_name), child, new)


def record_shapes(model: nn.Module, example_input: torch.Tensor) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Return ``({name: input shape}, {name: output shape})`` of every Conv2d and Linear in one forward pass.

    The shapes are the ones the layers really see (recorded by forward hooks). The model runs in
    eval mode under ``torch.no_grad``; its mode is restored afterwards.
    """
    inputs: dict[str, tuple[int, ...]] = {}
    outputs: dict[str, tuple[int, ...]] = {}

    def hook(module, args, output, name):
        inputs[name], outputs[name] = tuple(args[0].shape), tuple(output.shape)

    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: hook(m, a, o, name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return inputs, outputs


def record_output_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Return ``{module name: output shape}`` of every Conv2d and Linear in one forward pass (see :func:`record_shapes`)."""
    return record_shapes(model, example_input)[1]


def layer_macs(module: nn.Module, output_shape) -> int:
    """Return the multiply-accumulates of ``module`` for one example with this output shape.

    Conv2d: H_out * W_out * C_out * (C_in / groups) * kh * kw; Linear: in * out per output row.

    Raises:
        TypeError: not a Conv2d or Linear.
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return int(output_shape[-2] * output_shape[-1] * module.out_channels * (module.in_channels // module.groups) * kh * kw)
    if isinstance(module, nn.Linear):
        rows = 1
        for size in output_shape[1:-1]:
            rows *= size
        return int(rows * module.in_features * module.out_features)
    raise TypeError(f"no MAC formula for {type(module).__name__}")


def per_layer_macs(module: nn.Module, input_shape) -> list[int]:
    """Return the MACs of each Conv2d/Linear in ``module`` (a chain, or one layer) run on ``input_shape``;
    other layers (BN, ReLU, pooling) cost none. ``module`` may live on the meta device."""
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    macs = []
    device = next(module.parameters()).device  # a skeleton on the meta device costs nothing to run
    with torch.no_grad():
        x = torch.zeros(input_shape, device=device)
        for layer in layers:
            x = layer(x)
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                macs.append(layer_macs(layer, x.shape))
    return macs


def sequence_macs(sequence: nn.Sequential, input_shape) -> int:
    """Return the total MACs of a chain of layers on ``input_shape`` (see :func:`per_layer_macs`)."""
    return sum(per_layer_macs(sequence, input_shape))


def classifier_names(model: nn.Module) -> set[str]:
    """Return the names of the classifier's conv/linear layers (timm ``get_classifier``, ``fc`` or ``classifier``)."""
    from models import classifier_of

    head = classifier_of(model)
    if head is None:
        return set()
    inside = {id(m) for m in head.modules()}
    return {name for name, module in model.named_modules() if id(module) in inside and isinstance(module, (nn.Conv2d, nn.Linear))}


def kernel_text(module: nn.Module) -> str:
    """Return a layer's kernel as papers print it: 'C_out x C_in x kh x kw' or 'out x in'."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return f"{module.out_channels}x{module.in_channels // module.groups}x{kh}x{kw}" + (
            f" g{module.groups}" if module.groups > 1 else ""
        )
    return f"{module.out_features}x{module.in_features}"


def as_patterns(value) -> list[str]:
    """Return a name-pattern option as a list: a single pattern string is one pattern, never its characters;
    None is no pattern."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_patterns(model: nn.Module, patterns, option: str) -> None:
    """Check that every shell-style pattern in ``patterns`` matches at least one Conv2d/Linear of ``model``.

    Raises:
        ValueError: a pattern matches no layer; the message names the option, the pattern and the closest layer names.
    """
    patterns = as_patterns(patterns)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for pattern in patterns:
        if not any(fnmatch.fnmatch(name, pattern) for name in names):
            close = difflib.get_close_matches(pattern.replace("*", ""), names, n=5, cutoff=0.3) or names[:5]
            raise ValueError(
                f"{option}={pattern!r} matches no conv or linear layer of the model; close names: "
                f'{", ".join(close)} ({len(names)} layers: `python -c "import models; print(models.create_model(NAME))"`)'
            )


def select_layers(model: nn.Module, layers=None, exclude=None, kernel_sizes=None, include_classifier: bool = False):
    """Yield ``(name, module, skip_reason)`` for every Conv2d/Linear; ``skip_reason`` is None when selected.

    ``layers``/``exclude`` are shell-style name patterns (a string or a list), ``kernel_sizes`` a list
    of ints for convs (Linear layers count as kernel size 1). The classifier is skipped unless
    ``include_classifier``.

    Raises:
        ValueError: a ``layers`` or ``exclude`` pattern matches no layer (see :func:`check_patterns`).
    """
    layers = as_patterns(layers)
    exclude = as_patterns(exclude)
    check_patterns(model, layers, "layers")
    check_patterns(model, exclude, "exclude")
    head = classifier_names(model)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        reason = None
        size = module.kernel_size[0] if isinstance(module, nn.Conv2d) else 1
        if name in head and not include_classifier:
            reason = "classifier kept"
        elif layers and not any(fnmatch.fnmatch(name, pattern) for pattern in layers):
            reason = "not matched by layers"
        elif any(fnmatch.fnmatch(name, pattern) for pattern in exclude):
            reason = "excluded"
        elif kernel_sizes and size not in [int(k) for k in kernel_sizes]:
            reason = f"kernel size {size} not in {list(kernel_sizes)}"
        yield name, module, reason
