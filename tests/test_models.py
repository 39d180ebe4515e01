import pytest
import torch

import models
from models import PretrainedWeightsError


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_slimnet_has_the_papers_parameter_count():
    assert _params(models.create_model("slimnet")) == 571_304


def test_slimnet_forward_shape_and_input_contract():
    model = models.create_model("slimnet").eval()
    assert model.data_config["input_size"] == (3, 218, 178)
    assert model.data_config["mean"] == (0.5, 0.5, 0.5) and model.data_config["std"] == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 218, 178)).shape == (2, 40)


def test_slimnet_layer_names_and_shapes_follow_the_reference():
    state = models.create_model("slimnet").state_dict()
    assert state["conv1.0.weight"].shape == (96, 3, 7, 7)
    assert "conv1.0.bias" in state  # reference conv_2d keeps the conv bias
    assert state["slim1.sse1.squeeze.0.weight"].shape == (16, 96, 1, 1)
    assert state["slim1.sse1.expand1.0.weight"].shape == (64, 16, 1, 1)
    assert state["slim1.sse1.expand3_dw.0.weight"].shape == (16, 1, 3, 3)  # depthwise
    assert state["slim1.sse1.expand3_dw.3.weight"].shape == (64, 16, 1, 1)  # pointwise
    assert state["slim1.skip_projection.0.weight"].shape == (128, 96, 1, 1)
    assert "slim1.skip_projection.0.bias" not in state
    assert state["slim1.expand3_dw.3.weight"].shape == (48, 128, 1, 1)
    assert state["slim4.expand3_dw.3.weight"].shape == (192, 512, 1, 1)
    assert state["fc.weight"].shape == (40, 192)


def test_slimnet_width_stem_and_depth_are_arguments():
    model = models.create_model("slimnet", filter_count_values=[8, 16, 24], initial_conv=[32, 5, 2], depth_multiplier=2)
    assert model.num_slim_modules == 3 and model.fc.in_features == 72
    assert model.state_dict()["slim1.sse1.expand3_dw.0.weight"].shape == (16, 1, 3, 3)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 218, 178)).shape == (1, 40)


def test_reference_checkpoint_loads_and_reproduces_outputs(tmp_path):
    source = models.create_model("slimnet").eval()
    with torch.no_grad():  # non-trivial BN statistics, so a mis-mapped buffer would show
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model_20.pth"
    # Exactly what the reference's SlimNet.save writes.
    torch.save(
        {
            "hyper_params": {
                "filter_count_values": [16, 32, 48, 64],
                "initial_conv": [96, 7, 2],
                "num_classes": 40,
                "depth_multiplier": 1,
            },
            "model_state_dict": source.state_dict(),
            "optimizer_state_dict": {},
        },
        path,
    )
    loaded = models.load_model(path)
    x = torch.randn(3, 3, 218, 178)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    via_create = models.create_model("slimnet", checkpoint_path=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(via_create(x), source(x), rtol=0, atol=0)


def test_reference_depth_multiplier_is_read_from_the_weights(tmp_path):
    # The reference stores depth_multiplier but builds its Slim modules with 1.
    source = models.create_model("slimnet")
    path = tmp_path / "ref.pth"
    torch.save(
        {
            "hyper_params": {
                "filter_count_values": [16, 32, 48, 64],
                "initial_conv": [96, 7, 2],
                "num_classes": 40,
                "depth_multiplier": 2,
            },
            "model_state_dict": source.state_dict(),
        },
        path,
    )
    assert models.load_model(path).hyper_params["depth_multiplier"] == 1


def test_checkpoint_mismatch_names_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model_state_dict": models.create_model("slimnet", num_classes=10).state_dict()}, path)
    with pytest.raises(ValueError, match=r"fc\.weight: file \(10, 192\) vs model \(40, 192\)"):
        models.create_model("slimnet", checkpoint_path=str(path))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        models.load_model(tmp_path / "nope.pth")


@pytest.mark.parametrize(
    "name, params",
    [
        ("mobilenetv2_100", 2_275_112),
        ("mobilenetv3_large_100", 4_253_272),
        ("mobilenetv3_small_100", 1_558_856),
        ("resnet18", 11_197_032),
        ("resnet50", 23_589_992),
        ("legacy_xception", 20_888_912),
        ("squeezenet1_0", 755_944),
        ("squeezenet1_1", 743_016),
    ],
)
def test_baselines_have_40_way_heads_and_library_counts(name, params):
    model = models.create_model(name).eval()
    assert _params(model) == params
    size = model.data_config["input_size"]
    with torch.no_grad():
        assert model(torch.randn(1, *size)).shape == (1, 40)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_squeezenet_logits_can_be_negative(name):
    # torchvision ends with a ReLU; kept, a sigmoid head could never predict an attribute absent.
    model = models.create_model(name).eval()
    with torch.no_grad():
        assert (model(torch.randn(4, 3, 224, 224)) < 0).any()


def test_input_size_override_is_recorded():
    model = models.create_model("mobilenetv3_small_100", input_size=[3, 218, 178])
    assert model.data_config["input_size"] == (3, 218, 178)
    assert model.arch["input_size"] == [3, 218, 178]


def test_unknown_model_lists_alternatives():
    with pytest.raises(KeyError, match="unknown model 'resnet19'.*resnet18"):
        models.create_model("resnet19")


def test_pretrained_offline_fails_clearly_for_timm():
    with pytest.raises(PretrainedWeightsError, match="could not fetch pretrained weights for 'resnet18'.*checkpoint_path"):
        models.create_model("resnet18", pretrained=True)


def test_pretrained_offline_fails_clearly_for_torchvision(monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match="squeezenet1_1"):
        models.create_model("squeezenet1_1", pretrained=True)


def test_slimnet_pretrained_points_to_checkpoint_path():
    with pytest.raises(PretrainedWeightsError, match="checkpoint_path"):
        models.create_model("slimnet", pretrained=True)


def test_list_models_with_descriptions():
    names = models.list_models()
    assert {"slimnet", "resnet18", "squeezenet1_1", "legacy_xception"} <= set(names)
    assert all(description for _, _, description in models.list_models(with_descriptions=True))
    assert models.list_models("mobilenetv3*") == ["mobilenetv3_large_100", "mobilenetv3_small_100"]


@pytest.mark.parametrize("name", ["slimnet_pse", "slimnet_dmtl", "slimnet_dmtl_pse", "course_cnn"])
def test_the_registry_refuses_pretrained_for_models_without_public_weights(name):
    with pytest.raises(PretrainedWeightsError, match=f"{name} has no downloadable pretrained weights; pass checkpoint_path"):
        models.create_model(name, pretrained=True)
