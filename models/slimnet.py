"""Slim-Net (Sharma & Foroosh, "Slim-CNN: A Light-Weight CNN for Face Attribute Prediction", 2020).

Module names and layer order follow the public PyTorch reference implementation
(gtamba/pytorch-slim-cnn) so its checkpoints load without any key mapping:
``conv1``, ``slim1..slimN`` (each with ``sse1``, ``sse2``, ``skip_projection``, ``expand3_dw``),
``fc``. With the defaults and a 3x218x178 input the model has 571,304 parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models._registry import register_model

CELEBA_INPUT_SIZE = (3, 218, 178)
SLIMNET_DATA_CONFIG = {
    "input_size": CELEBA_INPUT_SIZE,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
}


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Return Conv2d (with bias, as in the reference) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def depthwise_separable_conv(in_channels: int, out_channels: int, depth_multiplier: int = 1) -> nn.Sequential:
    """Return depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU, both convs without bias."""
    mid = in_channels * depth_multiplier
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SSE(nn.Module):
    """Separable squeeze-expansion block: 1x1 squeeze to f, then [dw-separable 3x3 -> 4f, 1x1 -> 4f]."""

    def __init__(self, in_channels: int, filter_count: int, depth_multiplier: int = 1):
        super().__init__()
        self.squeeze = conv_bn_relu(in_channels, filter_count, 1)
        self.expand1 = conv_bn_relu(filter_count, 4 * filter_count, 1)
        self.expand3_dw = depthwise_separable_conv(filter_count, 4 * filter_count, depth_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        # The reference concatenates the 3x3 branch first; the order fixes which fc/conv weights line up.
        return torch.cat([self.expand3_dw(squeezed), self.expand1(squeezed)], 1)


class SlimModule(nn.Module):
    """Slim module: SSE -> (+ 1x1 skip projection of the input) -> SSE -> dw-separable 3x3 to 3f."""

    def __init__(self, in_channels: int, filter_count: int, depth_multiplier: int = 1):
        super().__init__()
        sse_out = 8 * filter_count
        self.skip_projection = nn.Sequential(
            nn.Conv2d(in_channels, sse_out, 1, bias=False),
            nn.BatchNorm2d(sse_out),
            nn.ReLU(inplace=True),
        )
        self.sse1 = SSE(in_channels, filter_count, depth_multiplier)
        self.sse2 = SSE(sse_out, filter_count, depth_multiplier)
        self.expand3_dw = depthwise_separable_conv(sse_out, 3 * filter_count, depth_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sse2(self.sse1(x) + self.skip_projection(x))
        return self.expand3_dw(out)


class SlimNet(nn.Sequential):
    """Slim-Net: stem conv + max-pool, N Slim modules each followed by max-pool 3/2, GAP, linear.

    An ``nn.Sequential`` of ``conv1, max_pool1, slim1, max_pool2, ..., slimN, max_pool{N+1},
    global_pool, flatten, fc``: the reference's module names (so its checkpoints load as they
    are) in a form ``torch.jit.script`` compiles.

    Args:
        filter_count_values: filter count f of each Slim module (their number sets the depth).
        initial_conv: stem as (filters, kernel size, stride).
        num_classes: outputs of the final linear layer (logits).
        depth_multiplier: channel multiplier of every depthwise conv. The reference code stores
            this value but never passes it to its Slim modules; we do, and with the default 1 the
            two are identical.
        in_chans: input channels.
    """

    def __init__(
        self,
        filter_count_values: Sequence[int] = (16, 32, 48, 64),
        initial_conv: Sequence[int] = (96, 7, 2),
        num_classes: int = 40,
        depth_multiplier: int = 1,
        in_chans: int = 3,
    ):
        super().__init__()
        if len(initial_conv) != 3:
            raise ValueError(f"initial_conv must be (filters, kernel, stride), got {initial_conv!r}")
        if not filter_count_values or any(int(f) < 1 for f in filter_count_values):
            raise ValueError(f"filter_count_values must be positive integers, got {filter_count_values!r}")
        self.hyper_params = {
            "filter_count_values": [int(f) for f in filter_count_values],
            "initial_conv": [int(v) for v in initial_conv],
            "num_classes": int(num_classes),
            "depth_multiplier": int(depth_multiplier),
        }
        self.num_classes = num_classes
        self.add_module("conv1", conv_bn_relu(in_chans, initial_conv[0], initial_conv[1], stride=initial_conv[2]))
        self.add_module("max_pool1", nn.MaxPool2d(3, 2))
        in_channels = initial_conv[0]
        self.num_slim_modules = len(filter_count_values)
        for index, filter_count in enumerate(filter_count_values, start=1):
            self.add_module(f"slim{index}", SlimModule(in_channels, filter_count, depth_multiplier))
            self.add_module(f"max_pool{index + 1}", nn.MaxPool2d(3, 2))
            in_channels = 3 * filter_count
        self.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.add_module("flatten", nn.Flatten(1))
        self.add_module("fc", nn.Linear(in_channels, num_classes))
        self.num_features = in_channels
        self.data_config = dict(SLIMNET_DATA_CONFIG)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map after the last Slim module and its max-pool (before GAP)."""
        for name, module in self.named_children():
            if name == "global_pool":
                break
            x = module(x)
        return x


def _init_weights(module: nn.Module) -> None:
    # Same initialisation as the reference: Xavier-uniform weights, fc bias 0.01.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear):
            nn.init.constant_(module.bias, 0.01)


def slimnet_kwargs_from_reference(hyper_params: dict, state_dict: dict | None = None) -> dict:
    """Return SlimNet keyword arguments for a reference checkpoint's ``hyper_params``.

    The reference ignores ``depth_multiplier`` inside its Slim modules, so when the state dict is
    given the multiplier is read from the first depthwise weight's shape instead of trusted.

    Raises:
        ValueError: a required hyper-parameter is missing.
    """
    required = ("filter_count_values", "initial_conv", "num_classes")
    missing = [k for k in required if k not in hyper_params]
    if missing:
        raise ValueError(f"reference hyper_params lack {missing}; found {sorted(hyper_params)}")
    kwargs = {k: hyper_params[k] for k in required}
    kwargs["depth_multiplier"] = int(hyper_params.get("depth_multiplier", 1))
    key = "slim1.sse1.expand3_dw.0.weight"
    if state_dict is not None and key in state_dict:
        kwargs["depth_multiplier"] = state_dict[key].shape[0] // int(kwargs["filter_count_values"][0])
    return kwargs


@register_model("slimnet", "Slim-Net (Slim-CNN paper / reference PyTorch code), 0.57 M params at 3x218x178", has_pretrained=False)
def slimnet(num_classes: int = 40, pretrained: bool = False, **kwargs) -> SlimNet:
    """Return a Slim-Net (no public weights exist: load a checkpoint with ``checkpoint_path``)."""
    return SlimNet(num_classes=num_classes, **kwargs)
