"""Baselines from timm and torchvision, each with a fresh ``num_classes``-way head.

Names are the libraries' own, so parameter counts can be checked against their model cards.
"""

from __future__ import annotations

import timm
import torchvision
from torch import nn

from models._registry import PretrainedWeightsError, register_model

IMAGENET_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
}


def _offline_message(name: str, exc: Exception) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"could not fetch pretrained weights for {name!r} ({type(exc).__name__}: {first_line[:200]}). "
        "Without internet access download them elsewhere and pass checkpoint_path=<file> "
        "(--checkpoint in run_bench.py), or use pretrained=False."
    )


def create_timm_model(timm_name: str, num_classes: int, pretrained: bool, **kwargs) -> nn.Module:
    """Return timm's ``timm_name`` with a ``num_classes`` head and timm's data config attached.

    Raises:
        PretrainedWeightsError: ``pretrained=True`` and timm cannot fetch the weights.
    """
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        raise PretrainedWeightsError(_offline_message(timm_name, exc)) from None
    config = timm.data.resolve_model_data_config(model)
    model.data_config = {key: config[key] for key in ("input_size", "mean", "std", "interpolation")}
    return model


def create_squeezenet(version: str, num_classes: int, pretrained: bool) -> nn.Module:
    """Return torchvision SqueezeNet ``version`` ('1_0' or '1_1') with a ``num_classes`` multi-label head.

    The ReLU that torchvision applies to the final 1x1 conv's output is removed, so logits can be
    negative (needed for sigmoid outputs; parameter count unchanged).

    With ``pretrained=True`` the ImageNet weights are loaded and the final 1x1 conv is replaced,
    since torchvision only ships 1000-class weights.

    Raises:
        PretrainedWeightsError: ``pretrained=True`` and torchvision cannot fetch the weights.
    """
    builder = getattr(torchvision.models, f"squeezenet{version}")
    if pretrained:
        weights = getattr(torchvision.models, f"SqueezeNet{version}_Weights").IMAGENET1K_V1
        try:
            model = builder(weights=weights)
        except Exception as exc:
            raise PretrainedWeightsError(_offline_message(f"squeezenet{version}", exc)) from None
        final = model.classifier[1]
        model.classifier[1] = nn.Conv2d(final.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(model.classifier[1].weight, mean=0.0, std=0.01)
        nn.init.zeros_(model.classifier[1].bias)
        model.num_classes = num_classes
    else:
        model = builder(num_classes=num_classes)
    # torchvision's head is conv -> ReLU -> avg-pool: fine before a softmax, but for independent
    # sigmoid outputs a ReLU'd logit is >= 0, i.e. every attribute is predicted positive (seen:
    # 22 % mean accuracy, 100 % recall). Dropping that ReLU leaves the parameters unchanged.
    model.classifier[2] = nn.Identity()
    model.data_config = dict(IMAGENET_DATA_CONFIG)
    return model


def _timm_entry(timm_name: str, description: str):
    def entry(num_classes: int = 40, pretrained: bool = False, **kwargs) -> nn.Module:
        return create_timm_model(timm_name, num_classes, pretrained, **kwargs)

    entry.__name__ = timm_name
    entry.__doc__ = f"Return timm {timm_name} with a num_classes head ({description})."
    return register_model("timm", description)(entry)


mobilenetv2_100 = _timm_entry("mobilenetv2_100", "timm MobileNet-V2 1.0")
mobilenetv3_large_100 = _timm_entry("mobilenetv3_large_100", "timm MobileNet-V3 large 1.0")
mobilenetv3_small_100 = _timm_entry("mobilenetv3_small_100", "timm MobileNet-V3 small 1.0")
resnet18 = _timm_entry("resnet18", "timm ResNet-18")
resnet50 = _timm_entry("resnet50", "timm ResNet-50")
legacy_xception = _timm_entry("legacy_xception", "timm Xception (Chollet 2017, the original 'xception')")


@register_model("torchvision", "torchvision SqueezeNet 1.0")
def squeezenet1_0(num_classes: int = 40, pretrained: bool = False) -> nn.Module:
    """Return torchvision SqueezeNet 1.0 with a ``num_classes`` head."""
    return create_squeezenet("1_0", num_classes, pretrained)


@register_model("torchvision", "torchvision SqueezeNet 1.1")
def squeezenet1_1(num_classes: int = 40, pretrained: bool = False) -> nn.Module:
    """Return torchvision SqueezeNet 1.1 with a ``num_classes`` head."""
    return create_squeezenet("1_1", num_classes, pretrained)
