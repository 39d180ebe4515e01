"""What rebuilds any model the harness produces, as plain data: no pickled code.

A compressed model is its base architecture (``model.arch``, what :func:`create_model` takes) with
two kinds of change, both recorded by :func:`describe_structure`:

* ``replaced``: a layer swapped for an ``nn.Sequential`` of conv/linear factors (SVD, Tucker-2,
  CP), recorded as the list of its layers' constructor values;
* ``layers``: the shape-defining values of every conv, linear and norm layer (channels, features,
  groups, kernel, stride, padding, bias), so a pruned layer is resized in place on load. Resizing
  rather than rebuilding keeps subclasses (e.g. timm's ``BatchNormAct2d``) and their extras.

:func:`rebuild` applies both to a freshly created base model; loading the state dict then checks
every tensor's shape.
"""

from __future__ import annotations

from torch import nn

from models._registry import create_model

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _get(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(_get(model, parent), child, module)


def layer_config(module: nn.Module) -> dict | None:
    """Return the shape-defining values of a Conv2d, Linear or BatchNorm layer (plain types), else None."""
    if isinstance(module, nn.Conv2d):
        return {
            "type": "Conv2d",
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": list(module.kernel_size),
            "stride": list(module.stride),
            "padding": list(module.padding) if not isinstance(module.padding, str) else module.padding,
            "dilation": list(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
            "padding_mode": module.padding_mode,
        }
    if isinstance(module, nn.Linear):
        return {
            "type": "Linear",
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    if isinstance(module, NORM_TYPES):
        return {"type": type(module).__name__, "num_features": module.num_features}
    return None


def build_layer(config: dict) -> nn.Module:
    """Return a new Conv2d or Linear from :func:`layer_config` values (the layers factorizations create).

    Raises:
        ValueError: a layer type factor sequences never hold.
    """
    if config["type"] == "Conv2d":
        return nn.Conv2d(
            config["in_channels"],
            config["out_channels"],
            tuple(config["kernel_size"]),
            tuple(config["stride"]),
            config["padding"] if isinstance(config["padding"], str) else tuple(config["padding"]),
            tuple(config["dilation"]),
            config["groups"],
            config["bias"],
            config["padding_mode"],
        )
    if config["type"] == "Linear":
        return nn.Linear(config["in_features"], config["out_features"], config["bias"])
    raise ValueError(f"cannot build a {config['type']!r} layer; factor sequences hold Conv2d and Linear layers only")


def resize_layer(module: nn.Module, config: dict) -> None:
    """Give ``module`` (a Conv2d, Linear or BatchNorm) the shape-defining values ``config``, in place.

    Parameters and buffers get fresh tensors of the new shapes (the state dict fills them).
    """
    if isinstance(module, nn.Conv2d):
        module.in_channels, module.out_channels, module.groups = config["in_channels"], config["out_channels"], config["groups"]
        kh, kw = config["kernel_size"]
        module.weight = nn.Parameter(
            module.weight.new_empty(config["out_channels"], config["in_channels"] // config["groups"], kh, kw)
        )
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.new_empty(config["out_channels"]))
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = config["in_features"], config["out_features"]
        module.weight = nn.Parameter(module.weight.new_empty(config["out_features"], config["in_features"]))
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.new_empty(config["out_features"]))
    elif isinstance(module, NORM_TYPES):
        module.num_features = n = config["num_features"]
        for name in ("weight", "bias"):
            if getattr(module, name, None) is not None:
                setattr(module, name, nn.Parameter(getattr(module, name).new_empty(n)))
        for name in ("running_mean", "running_var"):
            if getattr(module, name, None) is not None:
                module.register_buffer(name, getattr(module, name).new_empty(n))


def describe_structure(model: nn.Module) -> dict:
    """Return ``{'replaced': {path: [layer configs]}, 'layers': {path: layer config}}`` of ``model`` against
    the fresh model its ``arch`` builds (plain types only).

    Raises:
        ValueError: the model has no ``arch``, or holds a replacement that is not a chain of conv/linear layers.
    """
    arch = getattr(model, "arch", None)
    if not arch:
        raise ValueError(f"{type(model).__name__} has no 'arch' (it was not built by models.create_model): it cannot be rebuilt")
    fresh = create_model(**arch)
    fresh_modules = dict(fresh.named_modules())
    replaced = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential) and path in fresh_modules and not isinstance(fresh_modules[path], nn.Sequential):
            configs = [layer_config(layer) for layer in module]
            if any(c is None or c["type"] not in ("Conv2d", "Linear") for c in configs):
                raise ValueError(f"layer {path!r} was replaced by {module!r}, which is not a chain of Conv2d/Linear layers")
            replaced[path] = configs
    layers = {path: config for path, module in model.named_modules() if (config := layer_config(module)) is not None}
    return {"replaced": replaced, "layers": layers}


def rebuild(arch: dict, structure: dict | None = None) -> nn.Module:
    """Return the model ``arch`` builds with ``structure`` (:func:`describe_structure`) applied: factor
    chains put in place, every layer resized to its recorded shape. The weights are not loaded.

    Raises:
        KeyError: a recorded layer path the architecture does not have.
    """
    arch = dict(arch)
    model = create_model(arch.pop("name"), **arch)
    structure = structure or {}
    for path, configs in structure.get("replaced", {}).items():
        _set(model, path, nn.Sequential(*[build_layer(config) for config in configs]))
    modules = dict(model.named_modules())
    for path, config in structure.get("layers", {}).items():
        if path not in modules:
            raise KeyError(f"the checkpoint's layer {path!r} is not in {arch.get('name', type(model).__name__)}")
        if layer_config(modules[path]) != config:
            resize_layer(modules[path], config)
    return model
