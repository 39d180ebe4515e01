"""Sensitivity analysis and knowledge distillation."""

import copy

import pandas as pd
import pytest
import torch

import models
from bench.analysis.sensitivity import sensitivity, units_of
from bench.settings import TrainSettings
from bench.training.teacher import soft_targets
from bench.training.train import train_model

SMALL = dict(filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])


def test_pruning_units_are_the_coupled_groups():
    model = models.create_model("slimnet", **SMALL).eval()
    units = units_of(model, "prune", torch.zeros(1, 3, 218, 178))
    by_root = {u.name: set(u.members) for u in units}
    # A Slim module's skip projection prunes with everything that adds to it and reads the sum.
    assert by_root["slim1.skip_projection.0"] == {
        "slim1.skip_projection.0",
        "slim1.sse1.expand1.0",
        "slim1.sse1.expand3_dw.3",
        "slim1.sse2.squeeze.0",
    }
    assert "fc" not in by_root  # the classifier's outputs are never pruned
    layers = units_of(model, "svd", torch.zeros(1, 3, 218, 178))
    assert len(layers) == 32 and all(u.members == (u.name,) for u in layers)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [u.name for u in units_of(model, "sparsity", torch.zeros(1, 3, 218, 178))] == convs  # every conv, the classifier kept


def test_sensitivity_rows_per_unit_and_attribute(tiny_synthetic):
    torch.manual_seed(0)
    model = models.create_model("slimnet", **SMALL)
    train_model(model, tiny_synthetic, TrainSettings(epochs=1, batch_size=16, lr=1e-3))
    units, attributes = sensitivity(model, tiny_synthetic, "prune", 0.5)
    assert len(units) == 21 and len(attributes) == 21 * 40
    assert all(u["params_removed"] > 0 and u["macs_removed"] > 0 for u in units)
    frame = pd.DataFrame(attributes)
    for unit in units:  # the mean drop is the mean of the attribute drops
        assert frame[frame["unit"] == unit["unit"]]["drop"].mean() == pytest.approx(unit["drop"], abs=1e-9)
    with pytest.raises(ValueError, match="ratio must be in"):
        sensitivity(model, tiny_synthetic, "prune", 1.5)


def test_sensitivity_command(tmp_path, tiny_synthetic, capsys):
    import run_bench

    model = models.create_model("slimnet", **SMALL)
    models.save_model(model, tmp_path / "model.pt")
    config = tmp_path / "data.yaml"
    config.write_text("data: {synthetic_images: 60}\n")
    argv = [
        "sensitivity",
        "--checkpoint",
        str(tmp_path / "model.pt"),
        "--method",
        "svd",
        "--ratio",
        "0.25",
        "--config",
        str(config),
        "--results-dir",
        str(tmp_path / "r"),
        "--reports-dir",
        str(tmp_path / "p"),
        "-q",
    ]
    assert run_bench.main(argv) == 0
    assert "| Unit | Layers |" in capsys.readouterr().out
    units = pd.read_csv(tmp_path / "r" / "sensitivity" / f"sensitivity_{tmp_path.name}-model_svd_0.25.csv")
    assert (
        len(units) == 32
        and (units["checkpoint"] == str(tmp_path / "model.pt")).all()
        and units["data"].str.startswith("synthetic").all()
    )
    assert (tmp_path / "p" / "sensitivity" / f"sensitivity_{tmp_path.name}-model_svd_0.25.png").is_file()


def test_distillation_from_an_identical_teacher_leaves_the_student_unchanged(tiny_synthetic):
    # With alpha = 1 the loss is BCE(student / T, sigmoid(teacher / T)), whose gradient sigmoid(z / T) - p vanishes
    # when the student is the teacher: Adam then moves nothing. Without distillation the same step does move it.
    torch.manual_seed(0)
    student = models.create_model("course_cnn", dropout=0.0)
    teacher = soft_targets(copy.deepcopy(student), tiny_synthetic, batch_size=16)  # its outputs on every training image
    config = TrainSettings(epochs=1, batch_size=16, lr=1e-2, weight_decay=0.0, channels_last=False, precision="fp32")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    train_model(student, tiny_synthetic, config, teacher=teacher, distill=1.0, temperature=2.0)
    assert all(torch.allclose(before[k], v, atol=1e-6) for k, v in student.state_dict().items())
    train_model(student, tiny_synthetic, config)
    assert not all(torch.allclose(before[k], v, atol=1e-6) for k, v in student.state_dict().items())


def test_sensitivity_of_sparsity_zeroes_one_layer_at_a_time(tiny_synthetic, tmp_path, capsys):
    """`run_bench.py sensitivity --method sparsity` died with an AttributeError (sparsity has no factorization row)."""
    import run_bench
    from compress.layers import classifier_names

    model = models.create_model("course_cnn")  # 13 layers at 128 x 128: quick to evaluate once per layer
    models.save_model(model, tmp_path / "model.pt")
    config = tmp_path / "data.yaml"
    config.write_text("data: {synthetic_images: 60}\n")
    argv = [
        "sensitivity",
        "--checkpoint",
        str(tmp_path / "model.pt"),
        "--method",
        "sparsity",
        "--ratio",
        "0.5",
        "--config",
        str(config),
        "--results-dir",
        str(tmp_path / "r"),
        "--reports-dir",
        str(tmp_path / "p"),
        "-q",
        "--no-plots",
    ]
    assert run_bench.main(argv) == 0
    units = pd.read_csv(tmp_path / "r" / "sensitivity" / f"sensitivity_{tmp_path.name}-model_sparsity_0.5.csv")
    layers = [
        n
        for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and n not in classifier_names(model)
    ]
    assert units["unit"].tolist() == layers and (units["params_removed"] == 0).all() and (units["macs_removed"] == 0).all()


def test_a_checkpoint_for_other_attributes_is_refused(tiny_synthetic):
    model = models.create_model("slimnet", num_classes=26, **SMALL)
    with pytest.raises(ValueError, match="the model has 26 outputs but the data .* has 40 attributes"):
        sensitivity(model, tiny_synthetic, "svd", 0.5)
