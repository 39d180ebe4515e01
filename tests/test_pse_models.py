import pytest
import torch
from torch import nn

import compress
import models
from bench.data.celeba import CELEBA_ATTRIBUTES
from models.pse import ATTRIBUTE_GROUPS, PSE, GroupHeads, group_order


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_every_attribute_is_in_exactly_one_group():
    members = [name for group in ATTRIBUTE_GROUPS.values() for name in group]
    assert sorted(members) == sorted(CELEBA_ATTRIBUTES) and len(members) == 40
    assert len(ATTRIBUTE_GROUPS) == 8
    assert ATTRIBUTE_GROUPS["holistic"] == (
        "Attractive",
        "Blurry",
        "Chubby",
        "Heavy_Makeup",
        "Male",
        "Oval_Face",
        "Pale_Skin",
        "Smiling",
        "Young",
    )


def test_pse_conv_variant_shapes_params_and_mask():
    pse = PSE(64)  # conv excitation: 3x3 conv 1 -> 4 (+4 bias), 1x1 conv 4 -> 1 (+1 bias)
    assert _params(pse) == 1 * 4 * 9 + 4 + 4 * 1 + 1
    x = torch.randn(2, 64, 7, 5)
    y = pse(x)
    assert y.shape == x.shape
    mask = pse.last_mask
    assert mask.shape == (2, 1, 7, 5) and ((mask > 0) & (mask < 1)).all()
    torch.testing.assert_close(y, x * mask)


def test_pse_fc_variant_shapes_and_params():
    pse = PSE(64, excitation="fc", spatial_size=(7, 5))  # FC 35 -> 4, FC 4 -> 35
    assert _params(pse) == 35 * 4 + 4 + 4 * 35 + 35
    assert pse(torch.randn(2, 64, 7, 5)).shape == (2, 64, 7, 5)
    with pytest.raises(ValueError, match="spatial_size"):
        PSE(64, excitation="fc")
    with pytest.raises(ValueError, match="'conv' or 'fc'"):
        PSE(64, excitation="attention")


def test_group_heads_reassemble_celeba_order():
    heads = GroupHeads(8, width=4, use_pse=False)
    order = group_order()
    # Make each group's linear output a constant equal to the CelebA index of its attribute.
    position = 0
    for group in heads.groups.values():
        linear = group[-1]
        nn.init.zeros_(linear.weight)
        with torch.no_grad():
            linear.bias.copy_(torch.tensor(order[position : position + linear.out_features], dtype=torch.float))
        position += linear.out_features
    out = heads(torch.randn(3, 8, 6, 6))
    torch.testing.assert_close(out, torch.arange(40, dtype=torch.float).expand(3, 40))


@pytest.mark.parametrize(
    "name, params, size",
    [
        ("slimnet_pse", 571_437, (3, 218, 178)),
        ("slimnet_dmtl_pse", 363_464, (3, 218, 178)),
        ("slimnet_dmtl", 362_664, (3, 218, 178)),
        ("resnet18_dmtl_pse", 3_076_080, (3, 224, 224)),
        ("resnet18_dmtl", 3_074_664, (3, 224, 224)),
        ("course_cnn", 1_708_600, (3, 128, 128)),
        ("xception_transfer", 20_888_912, (3, 150, 150)),
    ],
)
def test_new_models_shapes_params_forward_backward(name, params, size):
    torch.manual_seed(0)
    model = models.create_model(name)
    assert _params(model) == params and model.data_config["input_size"] == size
    out = model(torch.randn(2, *size))
    assert out.shape == (2, 40)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["slimnet_pse", "slimnet_dmtl_pse", "resnet18_dmtl_pse", "course_cnn"])
def test_new_models_prune_with_torch_pruning(name):
    torch.manual_seed(0)
    model = models.create_model(name).eval()
    x = torch.randn(1, *model.data_config["input_size"])
    new_model, report = compress.apply(model, "prune", x, pruning_ratio=0.25)
    # a quarter of the channels leave both sides of most layers: well under 90 % of the parameters stay
    assert report.params_after == sum(p.numel() for p in new_model.parameters())
    assert 0.3 < report.params_after / report.params_before < 0.9
    if hasattr(new_model, "heads"):  # every group keeps all its outputs; only their inputs may shrink
        assert [g[-1].out_features for g in new_model.heads.groups.values()] == [len(a) for a in ATTRIBUTE_GROUPS.values()]
    with torch.no_grad():
        assert new_model(x).shape == (1, 40)


def test_pse_masks_per_group():
    model = models.create_model("slimnet_dmtl_pse")
    masks = models.pse_masks(model, torch.randn(2, 3, 218, 178))
    assert len(masks) == 8 and all(m.shape[:2] == (2, 1) for m in masks.values())
    with pytest.raises(ValueError, match="has no PSE module"):
        models.pse_masks(models.create_model("slimnet"), torch.randn(1, 3, 218, 178))


def test_group_models_need_groups_for_other_attributes():
    with pytest.raises(ValueError, match="know CelebA's 8 groups only; for these 10 attributes give the model `kwargs: {groups"):
        models.create_model("slimnet_dmtl_pse", num_classes=10)


def test_xception_transfer_offline_pretrained_and_local_checkpoint(tmp_path):
    with pytest.raises(models.PretrainedWeightsError, match="legacy_xception"):
        models.create_model("xception_transfer", pretrained=True)
    source = models.create_model("xception_transfer")
    path = tmp_path / "xception.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = models.create_model("xception_transfer", checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x))


def test_two_phase_transfer_protocol(tiny_synthetic):
    from bench.settings import TrainSettings
    from bench.training.train import train_model

    model = models.create_model("course_cnn")
    result = train_model(
        model, tiny_synthetic, TrainSettings(epochs=2, batch_size=16, lr=1e-3, freeze_backbone_epochs=1, unfreeze_lr=1e-5)
    )
    assert [h["lr"] for h in result.history] == [1e-3, 1e-5]


def test_pse_study_writes_the_mask_figure(tmp_path, cache_dir):
    import run_bench

    config = tmp_path / "pse.yaml"
    config.write_text(
        "study: pse\ndata: {synthetic_images: 60}\nmodels: [slimnet_pse]\ntrain: {epochs: 1, batch_size: 16}\n"
        "timing: {latency: false}\n"
    )
    argv = ["--config", str(config), "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "p"), "-q"]
    assert run_bench.main(argv) == 0
    assert (tmp_path / "p" / "pse" / "pse_masks_slimnet_pse_seed0.png").is_file()
    assert (tmp_path / "p" / "pse" / "pse_masks_slimnet_pse_seed0.pdf").is_file()
