"""models.save_model / models.load_model rebuild every model the harness produces, from plain data."""

import pytest
import torch

import compress
import models

SMALL = dict(filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])


def _round_trip(model, tmp_path, x):
    path = tmp_path / "model.pt"
    models.save_model(model.eval(), path)
    assert set(torch.load(path, weights_only=True)) >= {"arch", "structure", "data_config", "model_state_dict"}
    loaded = models.load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.data_config == model.data_config
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    return loaded


@pytest.mark.parametrize(
    "steps",
    [
        [("svd", {"rank_ratio": 0.5})],
        [("tucker2", {"rank_ratio": 0.5, "skip_if_larger": False})],
        [("cp", {"rank_ratio": 0.25, "layers": ["conv1.*"], "als_iters": 20})],
        [("cp_epc", {"rank_ratio": 0.25, "layers": ["conv1.*"], "als_iters": 20, "epc_iters": 5, "epc_steps": 2})],
        [("prune", {"pruning_ratio": 0.5})],
        [("sparsity", {"amount": 0.5})],
        [("prune", {"pruning_ratio": 0.3}), ("svd", {"rank_ratio": 0.5})],
        [("svd", {"rank_ratio": 0.5}), ("prune", {"pruning_ratio": 0.3})],
    ],
)
def test_every_method_and_pipeline_saves_and_loads_to_the_same_outputs(tmp_path, steps):
    torch.manual_seed(0)
    model = models.create_model("slimnet", **SMALL).eval()
    x = torch.randn(2, 3, 218, 178)
    for method, options in steps:
        model, _ = compress.apply(model, method, x[:1], **options)
    _round_trip(model, tmp_path, x)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "resnet18", "slimnet_dmtl_pse"])
def test_pruned_zoo_models_with_norm_subclasses_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = models.create_model(name).eval()
    x = torch.randn(1, *model.data_config["input_size"])
    pruned, _ = compress.apply(model, "prune", x, pruning_ratio=0.3)
    loaded = _round_trip(pruned, tmp_path, x)
    assert type(loaded) is type(pruned)


def test_a_pruned_training_checkpoint_rebuilds_its_model(tmp_path, tiny_synthetic):
    from bench.settings import TrainSettings
    from bench.training.train import train_model

    torch.manual_seed(0)
    model = models.create_model("slimnet", **SMALL)
    pruned, _ = compress.apply(model.eval(), "prune", torch.zeros(1, 3, 218, 178), pruning_ratio=0.5)
    train_model(pruned, tiny_synthetic, TrainSettings(epochs=1, batch_size=16), checkpoint_dir=str(tmp_path))
    loaded = models.load_model(tmp_path / "best.pt")
    x = torch.randn(1, 3, 218, 178)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned.eval().to(memory_format=torch.contiguous_format)(x))


def test_a_checkpoint_that_does_not_fit_its_description_is_named(tmp_path):
    model = models.create_model("slimnet", **SMALL)
    path = tmp_path / "model.pt"
    models.save_model(model, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["structure"]["layers"]["fc"]["in_features"] = 7
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="model.pt'?: its weights do not fit the model it describes"):
        models.load_model(path)
