"""Models from a face-attribute course project: a compact CNN and an Xception transfer model."""

from __future__ import annotations

import torch
from torch import nn

from models._registry import register_model
from models.baselines import create_timm_model

COURSE_CNN_INPUT_SIZE = (3, 128, 128)


class CourseCNN(nn.Module):
    """Ten 3x3 conv layers in five blocks (two convs each, max-pool after each block), then three
    dense layers (two hidden + outputs). At 3x128x128 with the default widths it has 1,708,600
    parameters (the course project reported 1,711,624; its exact widths are not published)."""

    def __init__(
        self,
        num_classes: int = 40,
        widths=(16, 32, 64, 128, 128),
        hidden=(512, 128),
        dropout: float = 0.5,
        input_size=COURSE_CNN_INPUT_SIZE,
    ):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"course_cnn has five blocks, got widths={widths!r}")
        if min(input_size[1:]) < 32:
            raise ValueError(
                f"course_cnn needs inputs of at least 32x32 px (five 2x2 max-pools), got input_size {tuple(input_size)}"
            )
        layers, channels = [], input_size[0]
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        flat = channels * (input_size[1] // 32) * (input_size[2] // 32)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden[0]),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[1], num_classes),
        )
        self.data_config = {
            "input_size": tuple(input_size),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bilinear",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    "course",
    "compact course CNN: 10 3x3 convs in 5 blocks + 3 dense layers, 1.71 M params at 3x128x128",
    has_pretrained=False,
    builds_for_input_size=True,
)
def course_cnn(num_classes: int = 40, pretrained: bool = False, **kwargs) -> CourseCNN:
    """Return the compact course CNN (its dense layers fix the input size: pass ``input_size`` to change it)."""
    return CourseCNN(num_classes=num_classes, **kwargs)


@register_model("course", "timm Xception, GAP + dropout + 40-way sigmoid head, 150x150 input (course transfer setup)")
def xception_transfer(num_classes: int = 40, pretrained: bool = False, drop_rate: float = 0.5, **kwargs) -> nn.Module:
    """Return timm's Xception (legacy_xception) with global average pooling, dropout ``drop_rate``
    and a ``num_classes`` head, fed 3x150x150 as in the course project (override with ``input_size``).

    Pair with the two-phase protocol: ``freeze_backbone_epochs`` (head only) then ``unfreeze_lr``.

    Raises:
        models.PretrainedWeightsError: ``pretrained=True`` and timm cannot fetch the ImageNet weights.
    """
    model = create_timm_model("legacy_xception", num_classes, pretrained, drop_rate=drop_rate, global_pool="avg", **kwargs)
    model.data_config = {**model.data_config, "input_size": (3, 150, 150)}
    return model
