"""Position squeeze-and-excitation (PSE, Zhang et al., BMVC 2018) and attribute-group (DMTL) heads.

PSE is a lateral branch on a feature map X (C x H x W): average over channels at each position
(1 x H x W), excitation, sigmoid, then X * S broadcast over channels. Two excitations as in the
paper's Figure 4: (a) ``fc``: flatten -> FC to C/16 -> ReLU -> FC to H*W; (b) ``conv`` (default):
3x3 conv 1 -> C/16 -> ReLU -> 1x1 conv C/16 -> 1.

The DMTL framework (Han et al., TPAMI 2018, with PSE as in Zhang et al.) shares a trunk and gives
each of 8 attribute groups its own sub-network (PSE branch + head); the group outputs are put back
into CelebA's 40-attribute order, so every metric and table works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from models._registry import register_model
from models.attributes import ATTRIBUTE_GROUPS, CELEBA_ATTRIBUTES
from models.baselines import create_timm_model
from models.slimnet import SLIMNET_DATA_CONFIG, SlimNet, depthwise_separable_conv


class PSE(nn.Module):
    """Position squeeze-and-excitation: returns X * sigmoid(excitation(mean over channels of X)).

    Args:
        channels: C of the input map.
        excitation: 'conv' (paper's Fig. 4b, size-agnostic) or 'fc' (Fig. 4a, needs ``spatial_size``).
        spatial_size: (H, W) of the input map, for 'fc'.
        reduction: C / reduction hidden units or channels (16 in the paper).

    The last mask is kept in ``self.last_mask`` (N x 1 x H x W, detached) for visualisation.
    """

    def __init__(self, channels: int, excitation: str = "conv", spatial_size: tuple[int, int] | None = None, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.excitation_type = excitation
        if excitation == "conv":
            self.excitation = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        elif excitation == "fc":
            if spatial_size is None:
                raise ValueError("PSE with excitation='fc' needs spatial_size=(H, W) of its input map")
            positions = int(spatial_size[0] * spatial_size[1])
            self.spatial_size = tuple(int(v) for v in spatial_size)
            self.excitation = nn.Sequential(
                nn.Flatten(), nn.Linear(positions, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, positions)
            )
        else:
            raise ValueError(f"PSE excitation must be 'conv' or 'fc', got {excitation!r}")
        self.last_mask = None

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Return the sigmoid position mask (N x 1 x H x W) for feature map ``x``."""
        squeezed = x.mean(dim=1, keepdim=True)
        excited = self.excitation(squeezed)
        if self.excitation_type == "fc":
            excited = excited.view(x.shape[0], 1, *x.shape[-2:])
        return torch.sigmoid(excited)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask(x)
        self.last_mask = mask.detach()
        return x * mask


def group_order(groups=None, attributes=None) -> list[int]:
    """Return, for each position in the concatenated group outputs, its index in ``attributes``
    (default: CelebA's 40 and its 8 groups)."""
    groups, attributes = groups or ATTRIBUTE_GROUPS, list(attributes or CELEBA_ATTRIBUTES)
    return [attributes.index(name) for group in groups.values() for name in group]


def check_groups(groups: dict, attributes, num_classes: int) -> None:
    """Check that ``groups`` ({group: [attribute names]}) puts each of ``attributes`` in exactly one group.

    Raises:
        ValueError: a DMTL model without groups on a dataset other than CelebA, an unknown or missing
            attribute, or one in two groups (named).
    """
    if attributes is None:
        raise ValueError(
            f"attribute-group (DMTL) models know CelebA's 8 groups only; for these {num_classes} attributes give "
            "the model `kwargs: {groups: {group: [attribute, ...], ...}}` in the study YAML (the study adds the "
            "dataset's attribute names)"
        )
    if len(attributes) != num_classes:
        raise ValueError(f"attributes: {len(attributes)} names for num_classes={num_classes}")
    listed = [name for members in groups.values() for name in members]
    unknown = sorted(set(listed) - set(attributes))
    missing = [a for a in attributes if a not in listed]
    twice = sorted({a for a in listed if listed.count(a) > 1})
    if unknown or missing or twice:
        raise ValueError(
            f"groups: every attribute must be in exactly one group; unknown {unknown}, in no group {missing}, in several {twice}"
        )


class GroupHeads(nn.Module):
    """Attribute-group sub-networks on a shared map (CelebA's 8 groups by default); outputs reassembled
    into the dataset's attribute order.

    Each group: [PSE] -> depthwise-separable 3x3 conv (C -> ``width``) -> global average pool ->
    linear to the group's attributes.
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        use_pse: bool = True,
        excitation: str = "conv",
        spatial_size=None,
        groups=None,
        attributes=None,
    ):
        super().__init__()
        groups, attributes = groups or ATTRIBUTE_GROUPS, list(attributes or CELEBA_ATTRIBUTES)
        self.groups = nn.ModuleDict()
        for name, members in groups.items():
            self.groups[name] = nn.Sequential(
                PSE(in_channels, excitation, spatial_size) if use_pse else nn.Identity(),
                depthwise_separable_conv(in_channels, width),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(width, len(members)),
            )
        inverse = torch.empty(len(attributes), dtype=torch.long)
        inverse[torch.tensor(group_order(groups, attributes))] = torch.arange(len(attributes))
        self.register_buffer("celeba_order", inverse, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grouped = torch.cat([head(features) for head in self.groups.values()], dim=1)
        return grouped.index_select(1, self.celeba_order)


class DMTLNet(nn.Module):
    """A shared ``trunk`` followed by :class:`GroupHeads` (one output per attribute, in the dataset's order)."""

    def __init__(
        self,
        trunk: nn.Module,
        trunk_channels: int,
        width: int = 64,
        use_pse: bool = True,
        excitation: str = "conv",
        spatial_size=None,
        groups=None,
        attributes=None,
    ):
        super().__init__()
        self.trunk = trunk
        self.heads = GroupHeads(trunk_channels, width, use_pse, excitation, spatial_size, groups, attributes)
        self.num_classes = len(attributes or CELEBA_ATTRIBUTES)

    def get_classifier(self) -> nn.ModuleList:
        """Return the 8 group output layers: the classifier that pruning keeps and transfer trains first."""
        return nn.ModuleList(group[-1] for group in self.heads.groups.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


class SlimNetPSE(SlimNet):
    """Slim-Net with a PSE branch on the output of its last Slim module (before the last max-pool)."""

    def __init__(self, excitation: str = "conv", **kwargs):
        super().__init__(**kwargs)
        spatial = None
        if excitation == "fc":
            spatial = _slim_last_map_size(
                kwargs.get("initial_conv", (96, 7, 2)), len(kwargs.get("filter_count_values", (16, 32, 48, 64)))
            )
        # Re-register the children with PSE right after the last Slim module: the order is the forward pass.
        children = list(self.named_children())
        for name, _ in children:
            delattr(self, name)
        for name, module in children:
            self.add_module(name, module)
            if name == f"slim{self.num_slim_modules}":
                self.add_module("pse", PSE(self.num_features, excitation, spatial))


def _pool(size: int) -> int:
    return (size - 3) // 2 + 1


def _slim_last_map_size(initial_conv, n_modules: int, input_size=(218, 178)) -> tuple[int, int]:
    sizes = []
    for size in input_size:
        size = (size - initial_conv[1]) // initial_conv[2] + 1
        size = _pool(size)
        for _ in range(n_modules - 1):
            size = _pool(size)
        sizes.append(size)
    return tuple(sizes)


class SlimTrunk(nn.Sequential):
    """Slim-Net's stem and its first ``n_modules`` Slim modules (each followed by its max-pool)."""

    def __init__(self, slimnet: SlimNet, n_modules: int):
        super().__init__()
        self.n_modules = n_modules
        names = ["conv1", "max_pool1"]
        for index in range(1, n_modules + 1):
            names += [f"slim{index}", f"max_pool{index + 1}"]
        for name in names:
            self.add_module(name, slimnet.get_submodule(name))


def _groups(num_classes: int, groups, attributes):
    if groups is None and attributes is None and num_classes == len(CELEBA_ATTRIBUTES):
        return None, None  # CelebA's groups
    check_groups(groups or ATTRIBUTE_GROUPS, attributes, num_classes)
    return groups or ATTRIBUTE_GROUPS, list(attributes)


def _slimnet_dmtl(
    use_pse: bool, num_classes: int, width: int = 64, excitation: str = "conv", groups=None, attributes=None, **kwargs
) -> DMTLNet:
    groups, attributes = _groups(num_classes, groups, attributes)
    base = SlimNet(**kwargs)
    # The groups branch off after the third Slim module, where maps still carry position.
    trunk = SlimTrunk(base, base.num_slim_modules - 1)
    channels = 3 * base.hyper_params["filter_count_values"][-2]
    spatial = None
    if excitation == "fc":
        spatial = _slim_last_map_size(base.hyper_params["initial_conv"], base.num_slim_modules - 1)
    model = DMTLNet(trunk, channels, width, use_pse, excitation, spatial, groups, attributes)
    model.data_config = dict(SLIMNET_DATA_CONFIG)
    return model


class ResNetTrunk(nn.Module):
    """A timm ResNet up to and including ``layer3`` (stride 16)."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.act1, self.maxpool = resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def _resnet18_dmtl(
    use_pse: bool, num_classes: int, pretrained: bool, width: int = 128, excitation: str = "conv", groups=None, attributes=None
) -> DMTLNet:
    groups, attributes = _groups(num_classes, groups, attributes)
    resnet = create_timm_model("resnet18", num_classes, pretrained)
    spatial = (14, 14) if excitation == "fc" else None
    model = DMTLNet(ResNetTrunk(resnet), 256, width, use_pse, excitation, spatial, groups, attributes)
    model.data_config = dict(resnet.data_config)
    return model


@register_model("pse", "Slim-Net with a PSE branch after the last Slim module", has_pretrained=False)
def slimnet_pse(num_classes: int = 40, pretrained: bool = False, excitation: str = "conv", **kwargs) -> SlimNetPSE:
    """Return Slim-Net + PSE (``excitation`` 'conv' or 'fc')."""
    return SlimNetPSE(excitation=excitation, num_classes=num_classes, **kwargs)


@register_model("pse", "Slim-Net trunk (3 Slim modules) + 8 attribute-group heads, each with PSE", has_pretrained=False)
def slimnet_dmtl_pse(num_classes: int = 40, pretrained: bool = False, **kwargs) -> DMTLNet:
    """Return the DMTL framework with PSE on a Slim-Net trunk."""
    return _slimnet_dmtl(True, num_classes, **kwargs)


@register_model(
    "pse", "Slim-Net trunk (3 Slim modules) + 8 attribute-group heads, no PSE (the paper's baseline)", has_pretrained=False
)
def slimnet_dmtl(num_classes: int = 40, pretrained: bool = False, **kwargs) -> DMTLNet:
    """Return the DMTL framework without PSE on a Slim-Net trunk."""
    return _slimnet_dmtl(False, num_classes, **kwargs)


@register_model("pse", "ResNet-18 trunk (to layer3) + 8 attribute-group heads, each with PSE")
def resnet18_dmtl_pse(num_classes: int = 40, pretrained: bool = False, **kwargs) -> DMTLNet:
    """Return the DMTL framework with PSE on a ResNet-18 trunk (``pretrained`` loads timm's trunk)."""
    return _resnet18_dmtl(True, num_classes, pretrained, **kwargs)


@register_model("pse", "ResNet-18 trunk (to layer3) + 8 attribute-group heads, no PSE (the paper's baseline)")
def resnet18_dmtl(num_classes: int = 40, pretrained: bool = False, **kwargs) -> DMTLNet:
    """Return the DMTL framework without PSE on a ResNet-18 trunk."""
    return _resnet18_dmtl(False, num_classes, pretrained, **kwargs)


def pse_masks(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return ``{PSE module name: mask (N x 1 x H x W)}`` for input ``x`` (model run in eval mode).

    Raises:
        ValueError: the model has no PSE module.
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, PSE)}
    if not modules:
        raise ValueError(f"{type(model).__name__} has no PSE module")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was_training)
    return {name: module.last_mask for name, module in modules.items()}
