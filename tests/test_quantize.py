"""int8 as a compression step: settings, the CPU's instruction set, accuracy control, and a quantized variant in a study."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import compress
import deploy
import models
from bench.study.variants import VariantSpecError, parse_variant, variant_name
from compress.quantize import mean_accuracy
from tests.helpers import tiny_study


def _outlier_model(attributes: int = 4) -> nn.Module:
    """conv1 writes an outlier channel (1000x) beside the signal; conv2 reads the signal only, which a per-tensor uint8
    range set by the outlier rounds to zero: int8 turns a perfect model into a coin toss."""
    conv1, conv2 = nn.Conv2d(3, 2, 1), nn.Conv2d(2, attributes, 1)
    with torch.no_grad():
        for conv in (conv1, conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        conv1.weight[0, 0] = 1000.0
        conv1.weight[1, 1] = 1.0
        conv2.weight[:, 1] = 1.0
    return nn.Sequential(conv1, conv2, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def _outlier_data(n: int, attributes: int = 4, seed: int = 0):
    x = np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)
    labels = np.repeat((x[:, 1].mean(axis=(1, 2)) > 0)[:, None], attributes, axis=1).astype(np.float32)
    return x, labels


def test_isa_text_and_reduce_range_follow_the_instruction_set():
    avx2 = {"avx2": True, "avx512": False, "vnni": False, "amx": False}
    vnni = {"avx2": True, "avx512": True, "vnni": True, "amx": False}
    amx = {**vnni, "amx": True}
    assert [deploy.isa_text(i) for i in (avx2, vnni, amx)] == ["AVX2", "AVX-512 VNNI", "AVX-512 VNNI AMX"]
    auto = deploy.Int8Settings()
    # without VNNI the int16 sums of vpmaddubsw saturate: 7-bit weights; with VNNI or AMX: full range
    assert (auto.effective_reduce_range(avx2), auto.effective_reduce_range(vnni), auto.effective_reduce_range(amx)) == (
        True,
        False,
        False,
    )
    assert deploy.Int8Settings(reduce_range=False).effective_reduce_range(avx2) is False
    assert deploy.Int8Settings(reduce_range=True).effective_reduce_range(vnni) is True
    assert set(deploy.cpu_isa()) == {"avx2", "avx512", "vnni", "amx", "bf16"}


def test_int8_settings_name_the_bad_value():
    with pytest.raises(ValueError, match=r"calibration_method must be one of \['minmax', 'entropy', 'percentile'\], got 'kl'"):
        deploy.Int8Settings(calibration_method="kl")
    with pytest.raises(ValueError, match=r"unknown keys \['calibration'\]"):
        deploy.Int8Settings.from_mapping({"calibration": 8})
    with pytest.raises(ValueError, match="asks? for 64 calibration images; 8 were given"):
        deploy.quantize_onnx(
            deploy.export_onnx(nn.Conv2d(3, 2, 1), np.zeros((1, 3, 4, 4), np.float32)),
            np.zeros((8, 3, 4, 4), np.float32),
            deploy.Int8Settings(),
        )
    assert (
        deploy.Int8Settings(calibration_images=8, exclude=["/1/Conv"]).describe(
            {"avx2": True, "avx512": False, "vnni": False, "amx": False}
        )
        == "minmax 8 img, per-channel, reduce_range (auto), equalized, 1 node float"
    )


def test_equalization_keeps_the_function_and_meets_activation_and_weight_ranges():
    """A CP-like chain (1x1, depthwise, 1x1) whose channels span 1x to 300x: after equalization the depthwise conv's
    input channels all span the same range, each channel of the 1x1's input spans the largest |weight| that reads it
    (both sqrt(m w)), and the output is unchanged."""
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.Conv2d(4, 5, 1))
    with torch.no_grad():
        chain[0].weight.mul_(torch.tensor([1.0, 10.0, 100.0, 300.0]).view(-1, 1, 1, 1))
    model = nn.Sequential(chain, nn.ReLU(), nn.Conv2d(5, 2, 1)).eval()  # the ReLU ends the chain: (conv, conv) pairs only
    images = torch.randn(8, 3, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    equalized, count = deploy.equalize_chains(model, images.numpy())
    assert count == 2 and len(deploy.linear_chains(model)) == 2
    with torch.no_grad():
        torch.testing.assert_close(equalized(images), model(images), rtol=1e-5, atol=1e-4)
        inner = [equalized[0][0](images)]
        inner.append(equalized[0][1](inner[0]))
    first_ranges = inner[0].abs().amax(dim=(0, 2, 3))
    torch.testing.assert_close(first_ranges, first_ranges.max().expand(4), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        inner[1].abs().amax(dim=(0, 2, 3)), equalized[0][2].weight.abs().amax(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    plain, count = deploy.equalize_chains(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()), images.numpy())
    assert count == 0 and isinstance(plain[0], nn.Conv2d)  # no chain: nothing equalized


def test_node_errors_find_the_node_that_int8_breaks():
    model = _outlier_model()
    calibration, _ = _outlier_data(32, seed=1)
    prepared = deploy.prepare_onnx(deploy.export_onnx(model, calibration[:1]))
    assert deploy.weighted_nodes(prepared) == ["/0/Conv", "/1/Conv"]
    int8 = deploy.quantize_onnx(prepared, calibration, deploy.Int8Settings(calibration_images=32, equalize=False), prepared=True)
    errors = deploy.node_errors(prepared, int8, calibration[:8])
    assert errors["/1/Conv"] > 20 > errors["/0/Conv"]  # dB lost across the node: conv2 loses its whole signal


def test_a_factorized_layer_is_one_chain_and_an_activation_ends_it():
    from compress.quantize import factor_chains

    # a CP-factorized conv (1x1, depthwise kxk, 1x1), a ReLU, then a plain conv
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)
    ).eval()
    prepared = deploy.prepare_onnx(deploy.export_onnx(model, np.zeros((1, 3, 8, 8), np.float32)))
    cp = ("/0/Conv", "/1/Conv", "/2/Conv")
    assert factor_chains(prepared) == {"/0/Conv": cp, "/1/Conv": cp, "/2/Conv": cp, "/4/Conv": ("/4/Conv",)}


def test_accuracy_control_keeps_the_drop_within_max_drop_and_the_model_carries_it():
    model = _outlier_model()
    images, labels = _outlier_data(200)
    calibration, _ = _outlier_data(32, seed=1)
    # equalization alone would fix this chain (the next test): accuracy control is what is tested here
    plain, plain_report = compress.apply(
        model, "quantize", torch.from_numpy(images[:1]), calibration=calibration, calibration_images=32, equalize=False
    )
    int8 = deploy.deploy(plain, "onnxruntime_int8", images[:2], calibration=calibration)
    assert mean_accuracy(int8(images), labels) < 60  # uncontrolled: a coin toss
    controlled, report = compress.apply(
        model,
        "quantize",
        torch.from_numpy(images[:1]),
        calibration=calibration,
        calibration_images=32,
        max_drop=0.5,
        validation=(images, labels),
        equalize=False,
    )
    # the worst node (/1/Conv) goes to float with the producer of its input, in one round
    assert controlled.quantization["exclude"] == ["/0/Conv", "/1/Conv"]
    assert (
        report.notes[0] == "accuracy control: 2 of 2 nodes in float after 2 rounds; validation drop 0.00 pt, within max_drop 0.5"
    )
    int8 = deploy.deploy(controlled, "onnxruntime_int8", images[:2], calibration=calibration)
    assert mean_accuracy(int8(images), labels) == 100.0
    assert not hasattr(model, "quantization")  # the input model is untouched


def test_int8_above_max_drop_even_all_in_float_is_one_warning_line(monkeypatch):
    import compress.quantize as quantize

    model = _outlier_model()
    images, labels = _outlier_data(16)
    calibration, _ = _outlier_data(32, seed=1)
    # a drop accuracy control cannot bring under max_drop (it cannot happen with real graphs: all in float is float)
    monkeypatch.setattr(
        quantize,
        "control_accuracy",
        lambda prepared, settings, *_: (
            settings,
            [{"round": 0, "float_nodes": 2, "acc_float": 90.0, "acc_int8": 88.5, "drop": 1.5}],
        ),
    )
    _, report = compress.apply(
        model,
        "quantize",
        torch.from_numpy(images[:1]),
        calibration=calibration,
        calibration_images=32,
        max_drop=0.5,
        validation=(images, labels),
    )
    assert "NOT within" in report.notes[0]
    # compression_warnings is '; '-separated: a warning must not contain '; ' or the summary splits it in two
    assert report.warnings == [
        "int8 accuracy control: validation drop 1.50 pt, above max_drop 0.5 even with every quantizable node in float"
    ]


def test_a_quantized_model_saves_and_reloads_its_settings(tmp_path):
    model = models.create_model("slimnet", filter_count_values=[4, 4, 4, 4], initial_conv=[8, 7, 2]).eval()
    x = torch.randn(8, *model.data_config["input_size"])
    quantized, _ = compress.apply(
        model, "quantize", x[:1], calibration=x.numpy(), calibration_images=8, calibration_method="entropy", exclude="/conv1/*"
    )
    assert quantized.quantization["exclude"] == ["/conv1/conv1.0/Conv"]
    models.save_model(quantized, tmp_path / "q.pt")
    loaded = models.load_model(tmp_path / "q.pt")
    assert loaded.quantization == quantized.quantization
    assert deploy.int8_settings(loaded).calibration_method == "entropy"
    with pytest.raises(ValueError, match=r"exclude pattern '/nowhere/\*' matches no quantizable node"):
        compress.apply(model, "quantize", x[:1], calibration=x.numpy(), calibration_images=8, exclude="/nowhere/*")


def test_quantize_can_only_end_a_pipeline_and_has_a_short_name():
    steps = parse_variant("prune:pruning_ratio=0.3+quantize:max_drop=0.5")
    assert variant_name(steps) == "prune 0.3 + int8 drop 0.5"
    assert variant_name(parse_variant("quantize:qat=true,calibration_method=entropy")) == "int8 qat entropy"
    with pytest.raises(VariantSpecError, match="quantize can only be the last step"):
        parse_variant("quantize+svd:rank_ratio=0.5")


def test_a_quantized_variant_is_measured_in_its_int8_runtime(tmp_path):
    """The variant's accuracy is its ONNX Runtime int8 accuracy, the same number the timing phase measures; accuracy
    control keeps the saved model's validation drop within max_drop; the int8 rows carry the ISA and the settings."""
    from bench.data.loading import load_data
    from bench.study.runner import run_study
    from bench.training.evaluate import model_inputs

    config = tiny_study(
        "int8",
        models=[
            {
                "name": "slimnet",
                "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]},
                "compressions": ["quantize:max_drop=0.5,calibration_images=8"],
            }
        ],
        timing={"runtimes": ["onnxruntime", "onnxruntime_int8"], "int8": {"calibration_images": 8}, "int8_max_drop": 0.5},
    )
    run_study(config, str(tmp_path))
    results = pd.read_csv(tmp_path / "int8" / "results.csv")
    base = results[(results.model == "slimnet") & results.variant.isna()].iloc[0]
    variant = results[results.variant == "int8 drop 0.5"].iloc[0]
    assert variant.acc_mean == pytest.approx(variant.acc_mean_int8, abs=1e-9)
    assert base.acc_int8_delta == pytest.approx(base.acc_mean_int8 - base.acc_mean, abs=1e-9)
    assert variant.runtime_b1 == "onnxruntime_int8" and "accuracy control" in variant.compression_notes
    assert variant.cpu_isa == deploy.isa_text() and variant.int8_settings.startswith("minmax 8 img")
    assert "(accuracy control:" in base.int8_settings  # timing.int8_max_drop: the float model's int8 builds are controlled
    latency = pd.read_csv(tmp_path / "int8" / "latency.csv")
    assert set(latency[latency.config_hash == variant.config_hash].runtime) == {"onnxruntime_int8"}
    assert (latency.cpu_isa == deploy.isa_text()).all()
    int8_rows = latency[latency.runtime == "onnxruntime_int8"]
    assert int8_rows.int8_settings.str.startswith("minmax 8 img").all()
    # the saved model's own validation drop in ONNX Runtime int8
    saved = models.load_model(tmp_path / "int8" / "checkpoints" / variant.config_hash / "model.pt")
    data = load_data(config["data"])
    val = np.sort(data.splits["val"])
    images, labels = model_inputs(data, "val", len(val), saved.data_config), data.labels[val]
    calibration = model_inputs(data, "train", 8, saved.data_config)
    fp32 = deploy.deploy(saved, "onnxruntime", images[:2])
    int8 = deploy.deploy(saved, "onnxruntime_int8", images[:2], calibration=calibration)
    assert mean_accuracy(fp32(images), labels) - mean_accuracy(int8(images), labels) <= 0.5
    timing = json.loads((tmp_path / "int8" / "timing.json").read_text())
    assert timing["machine"]["cpu_isa"] == deploy.isa_text()
    assert os.path.isfile(tmp_path / "int8" / "checkpoints" / variant.config_hash / "model.pt")


@pytest.mark.slow
def test_quantization_aware_finetuning_changes_the_weights_and_keeps_a_plain_model(tmp_path):
    """qat=true fine-tunes through NNCF's fake quantization: the saved model is a plain Slim-Net (no NNCF hooks) whose
    weights differ from the same pipeline fine-tuned without fake quantization."""
    from bench.study.runner import run_study

    tiny = {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}
    config = tiny_study(
        "qat",
        models=[
            {
                "name": "slimnet",
                "kwargs": tiny,
                "compressions": [
                    "prune:pruning_ratio=0.3+quantize:calibration_images=8",
                    "prune:pruning_ratio=0.3+quantize:qat=true,calibration_images=8",
                ],
            }
        ],
        timing={"runtimes": ["onnxruntime_int8"], "int8": {"calibration_images": 8}},
    )
    run_study(config, str(tmp_path))
    results = pd.read_csv(tmp_path / "qat" / "results.csv").set_index("variant")
    ptq, qat = (
        models.load_model(tmp_path / "qat" / "checkpoints" / results.loc[name, "config_hash"] / "model.pt")
        for name in ("prune 0.3 + int8", "prune 0.3 + int8 qat")
    )
    assert not any("nncf" in key for key in qat.state_dict())
    assert ptq.state_dict().keys() == qat.state_dict().keys()
    assert any(not torch.equal(ptq.state_dict()[k], qat.state_dict()[k]) for k in ptq.state_dict() if k.endswith("weight"))
    assert results.loc["prune 0.3 + int8 qat", "acc_mean"] == pytest.approx(
        results.loc["prune 0.3 + int8 qat", "acc_mean_int8"], abs=1e-9
    )
