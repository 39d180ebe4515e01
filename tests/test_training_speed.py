"""Training at the machine's speed (issue 31): the set-up the trainer picks, where an epoch's time goes, the teacher's
outputs computed once and shared, `profile --train`, and pruning targets against the fastest fp32 runtime."""

import os

import numpy as np
import pytest
import torch
from helpers import TINY_SLIMNET

import compress
import deploy
import models
from bench.settings import TrainSettings
from bench.training.setups import TrainingSetup, native_bf16, training_setup
from bench.training.teacher import SoftTargets, soft_targets
from bench.training.train import train_model


def test_auto_precision_takes_bf16_only_where_it_is_native_and_measured_faster(monkeypatch, tmp_path):
    from bench.training import setups

    model = models.create_model("slimnet", **TINY_SLIMNET)
    monkeypatch.setattr(deploy, "cpu_isa", lambda: {"avx2": True, "avx512": False, "vnni": False, "amx": False, "bf16": False})
    monkeypatch.setattr(setups, "_step_seconds", lambda *args, **kw: pytest.fail("nothing to measure where bf16 is emulated"))
    assert not native_bf16("cpu") and training_setup(model, 8, True, "auto", False, "cpu", str(tmp_path)).bf16 is False
    monkeypatch.setattr(deploy, "cpu_isa", lambda: {"avx2": True, "avx512": True, "vnni": True, "amx": False, "bf16": True})
    # 1.05x: within the margin; a first round 1.3x apart or more decides, a closer one is timed twice
    for fp32, bf16, expected, rounds in ((2.0, 1.0, True, 1), (1.05, 1.0, False, 2), (1.0, 1.6, False, 1), (1.2, 1.0, True, 2)):
        calls = []
        monkeypatch.setattr(
            setups,
            "_step_seconds",
            lambda m, setup, batch, device, a=fp32, b=bf16, c=calls: c.append(1) or (b if setup.bf16 else a),
        )
        assert training_setup(model, 8, True, "auto", False, "cpu", None).bf16 is expected and len(calls) == 2 * rounds
    monkeypatch.setattr(setups, "_step_seconds", lambda m, setup, batch, device: 1.0 if setup.bf16 else 2.0)
    assert training_setup(model, 8, True, "auto", False, "cpu", str(tmp_path)).bf16 is True
    monkeypatch.setattr(setups, "_step_seconds", lambda *args, **kw: pytest.fail("the decision is kept for a rerun"))
    assert training_setup(model, 8, True, "auto", False, "cpu", str(tmp_path)).bf16 is True
    pruned, _ = compress.apply(model, "prune", torch.randn(1, *model.data_config["input_size"]), pruning_ratio=0.5)
    assert training_setup(pruned, 8, True, "auto", False, "cpu", str(tmp_path)).bf16 is True  # a variant: its base's decision
    assert training_setup(model, 8, False, "bf16", False, "cpu").bf16 is True  # asked for: given, measured or not
    assert training_setup(model, 8, True, "fp32", False, "cpu").describe() == "channels_last, fp32"
    assert TrainingSetup(False, True, True).describe() == "NCHW, bf16 autocast, torch.compile"
    with pytest.raises(ValueError, match="train.precision"):
        training_setup(model, 8, True, "fp16", False, "cpu")


def test_the_trainer_records_its_set_up_and_where_each_epochs_time_went(tiny_synthetic):
    model = models.create_model("slimnet", **TINY_SLIMNET)
    result = train_model(model, tiny_synthetic, TrainSettings(epochs=1, batch_size=16, precision="fp32"))
    assert result.setup == "channels_last, fp32"
    (epoch,) = result.history
    parts = [epoch[k] for k in ("data_seconds", "step_seconds", "val_seconds", "checkpoint_seconds")]
    assert all(p >= 0 for p in parts) and sum(parts) <= epoch["seconds"] + 1e-6 and epoch["step_seconds"] > 0


def test_bf16_training_runs_and_learns_in_fp32_master_weights(tiny_synthetic):
    model = models.create_model("slimnet", **TINY_SLIMNET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(model, tiny_synthetic, TrainSettings(epochs=1, batch_size=16, lr=1e-3, precision="bf16"))
    assert result.setup == "channels_last, bf16 autocast"
    assert all(v.dtype == before[k].dtype for k, v in model.state_dict().items())  # the weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("weight"))


def test_the_teachers_outputs_are_computed_once_and_read_back(tiny_synthetic, tmp_path, monkeypatch):
    from bench.training import teacher as module

    torch.manual_seed(0)
    model = models.create_model("slimnet", **TINY_SLIMNET).eval()
    path = str(tmp_path / "teacher_logits.npz")
    first = soft_targets(model, tiny_synthetic, 16, path)
    rows = np.sort(tiny_synthetic.splits["train"])
    assert first.logits.shape == (2, len(rows), 40) and os.path.isfile(path)
    with torch.no_grad():
        from bench.data.loading import to_model_input

        x = to_model_input(np.asarray(tiny_synthetic.images[rows[:3]]), model.data_config, hflip=True)
        expected = torch.sigmoid(model(x) / 2.0)
    assert torch.allclose(first.probabilities(rows[:3], True, 2.0, "cpu"), expected, atol=1e-5)  # mirrored, at T = 2
    monkeypatch.setattr(module, "teacher_logits", lambda *args: pytest.fail("the cached outputs were computed again"))
    again = soft_targets(model, tiny_synthetic, 16, path)
    assert np.array_equal(again.logits, first.logits)
    other = models.create_model("slimnet", **TINY_SLIMNET)  # another teacher: its own outputs, not the cached ones
    monkeypatch.setattr(
        module, "teacher_logits", lambda teacher, data, rows, batch, setup=None: np.zeros((2, len(rows), 40), np.float32)
    )
    assert not soft_targets(other, tiny_synthetic, 16, path).logits.any()
    with pytest.raises(KeyError):
        SoftTargets(rows[:2], first.logits[:, :2]).probabilities(rows[2:3], False, 1.0, "cpu")


def test_the_teachers_outputs_in_bf16_are_close_to_fp32_and_cached_apart(tiny_synthetic, tmp_path):
    from bench.training.setups import TrainingSetup

    torch.manual_seed(0)
    model = models.create_model("slimnet", **TINY_SLIMNET).eval()
    path = str(tmp_path / "teacher_logits.npz")
    fp32 = soft_targets(model, tiny_synthetic, 16, path)
    bf16 = soft_targets(model, tiny_synthetic, 16, path, setup=TrainingSetup(channels_last=True, bf16=True))
    assert not np.array_equal(bf16.logits, fp32.logits)  # computed again in bf16, not read from the fp32 file
    rows = np.sort(tiny_synthetic.splits["train"])
    difference = (bf16.probabilities(rows, False, 2.0, "cpu") - fp32.probabilities(rows, False, 2.0, "cpu")).abs().max()
    assert float(difference) < 0.02  # bf16 keeps 8 bits of mantissa: soft targets to about 1 %


def test_a_variant_distils_from_another_model_of_the_study_trained_first():
    from bench.store.schema import config_hash
    from bench.study.config import DEFAULT_CONFIG, StudyConfigError, expand_cells, merge_config

    config = merge_config(
        DEFAULT_CONFIG,
        {
            "models": [
                {
                    "name": "slimnet",
                    "compressions": [
                        {
                            "name": "p",
                            "steps": ["prune:pruning_ratio=0.3"],
                            "finetune": {"distill": 0.5, "teacher": "mobilenetv3_small_100"},
                        }
                    ],
                },
                "mobilenetv3_small_100",
            ]
        },
    )
    cells = expand_cells(config)
    assert [c["model"] + ("*" if c.get("compression") else "") for c in cells] == [
        "majority",
        "slimnet",
        "mobilenetv3_small_100",
        "slimnet*",
    ]
    assert cells[-1]["teacher_hash"] == config_hash(cells[2])
    config["models"][1] = "resnet18"
    with pytest.raises(StudyConfigError, match="finetune.teacher of slimnet \\[p\\]: expected one of the study's models"):
        expand_cells(config)


def test_pruning_to_a_latency_target_in_the_fastest_fp32_runtime(monkeypatch):
    import compress.latency_target as targets

    torch.manual_seed(0)
    model = models.create_model("slimnet").eval()
    x = torch.zeros(1, 3, 218, 178)
    asked = []
    monkeypatch.setattr(targets, "fastest_runtime", lambda original, example, batch=1: asked.append(batch) or "openvino")
    monkeypatch.setattr(
        targets,
        "measured_speedup",
        lambda original, compressed, runtime, example, batch=1: models.count_params(original) / models.count_params(compressed),
    )
    _, report = compress.apply(model, "prune", x, target_latency=0.8, runtime="fastest", latency_batch=8)
    assert asked == [8] and "in the fastest fp32 runtime (openvino)" in report.notes[0]
    with pytest.raises(ValueError, match="runtime must be a runtime of deploy.RUNTIMES"):
        compress.validate_options("prune", runtime="quickest")


def test_profile_train_prints_every_set_up_against_the_floor(capsys):
    import run_bench

    argv = [
        "profile",
        "--train",
        "--models",
        "slimnet",
        "--batch-sizes",
        "2",
        "--input-size",
        "3x136x136",
        "--repeats",
        "2",
        "--min-seconds",
        "0",
    ]
    assert run_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| slimnet | NCHW, fp32 |" in out and "| slimnet | channels_last, fp32 |" in out
    assert ("| slimnet | channels_last, bf16 autocast |" in out) == native_bf16("cpu")
    assert "floor = 3 x 2 x MACs" in out


def test_bf16_keeps_large_kernel_depthwise_convs_in_fp32_and_only_while_training():
    from torch import nn

    from bench.training.setups import slow_bf16_layers

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 7, groups=8, padding=3), nn.Conv2d(8, 8, 3, groups=8, padding=1))
    assert slow_bf16_layers(model) == ("1",)  # the 3x3 depthwise conv gains in bf16; the 7x7 one lost 3.2x
    setup = TrainingSetup(False, True, False, slow_bf16_layers(model))
    assert setup.describe() == "NCHW, bf16 autocast (1 large-kernel depthwise conv in fp32)"
    seen = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, args, out, name=name: seen.update({name: (args[0].dtype, out.dtype)}))
    hooks = setup.apply(model)
    with setup.autocast(torch.device("cpu")):
        model(torch.randn(2, 3, 16, 16)).float().sum().backward()
    assert seen == {
        "0": (torch.float32, torch.bfloat16),
        "1": (torch.float32, torch.float32),  # its bf16 input cast up, its conv in fp32
        "2": (torch.float32, torch.bfloat16),
    }
    assert model[1].weight.grad is not None and model[1].weight.grad.dtype == torch.float32
    for hook in hooks:
        hook.remove()
    with setup.autocast(torch.device("cpu")):
        model(torch.randn(2, 3, 16, 16))
    assert seen["1"][1] == torch.bfloat16  # hooks removed: the layer is autocast again


def _chained_model():
    from collections import OrderedDict

    from torch import nn

    return nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(  # a CP stem: 1x1 expansion, 7x7 stride-2 depthwise, 1x1
                nn.Conv2d(3, 12, 1, bias=False), nn.Conv2d(12, 12, 7, 2, 3, groups=12, bias=False), nn.Conv2d(12, 16, 1)
            ),
            mid=nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.Conv2d(24, 8, 3, 2, 1, bias=False)),  # Tucker-2 like
            reducing=nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.Conv2d(4, 4, 3, padding=1, groups=4)),
            biased=nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=6)),  # padding a bias is not zero
            pool=nn.AdaptiveAvgPool2d(1),
        )
    )


def test_expanding_chains_train_merged_with_the_same_outputs_and_gradients_and_are_restored():
    from bench.training.setups import expanding_chains

    torch.manual_seed(0)
    model = _chained_model().double()
    assert expanding_chains(model) == ("stem", "mid")
    x = torch.randn(3, 3, 23, 19, dtype=torch.float64)
    factored = model(x)
    factored.square().sum().backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    setup = TrainingSetup.for_model(model, channels_last=False, bf16=False)
    assert setup.merged_chains == ("stem", "mid")
    assert setup.describe() == "NCHW, fp32, 2 expanding 1x1 convs merged into the next"
    handles = setup.apply(model)
    assert "forward" in model.stem.__dict__
    merged = model(x)
    merged.square().sum().backward()
    torch.testing.assert_close(merged, factored, rtol=1e-10, atol=1e-10)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-10, msg=name)
    for handle in handles:
        handle.remove()
    assert "forward" not in model.stem.__dict__ and "forward" not in model.mid.__dict__


def test_a_cp_stem_slimnet_trains_its_stem_merged_and_nothing_of_it_in_fp32():
    import compress
    import models

    model = models.create_model("slimnet")
    model, _ = compress.apply(model, "cp", torch.zeros(1, *model.data_config["input_size"]), rank_ratio=0.25, layers="conv1.*")
    setup = TrainingSetup.for_model(model, channels_last=True, bf16=True)
    assert setup.merged_chains == ("conv1.0",)
    assert not any(name.startswith("conv1.") for name in setup.fp32_layers)  # its 7x7 depthwise factor runs merged


def test_a_slow_layer_after_a_merged_pair_stays_in_fp32():
    from torch import nn

    chain = nn.Sequential(
        nn.Conv2d(3, 8, 1, bias=False), nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=False), nn.Conv2d(8, 8, 7, groups=8)
    )
    setup = TrainingSetup.for_model(nn.Sequential(chain), channels_last=False, bf16=True)
    assert setup.merged_chains == ("0",)
    assert setup.fp32_layers == ("0.2",)  # "0.1" runs inside the merged conv; "0.2" still runs on its own


def test_a_model_with_nncf_hooks_merges_nothing():
    from nncf.torch.function_hook import wrap_model

    from bench.training.setups import expanding_chains

    model = _chained_model()
    assert expanding_chains(model) == ("stem", "mid")
    assert expanding_chains(wrap_model(model)) == ()  # NNCF's quantizers would hook each convolution as traced


@pytest.mark.slow  # NNCF's first torch quantization on a machine builds its extension (30 s on machine D)
def test_a_model_with_nncf_fake_quantization_merges_nothing():
    import nncf

    from bench.training.pipeline import _QuantizationWrapper
    from bench.training.setups import expanding_chains

    model = _chained_model()
    model.data_config = {"input_size": (3, 23, 19)}
    assert expanding_chains(model) == ("stem", "mid")
    wrapped = nncf.quantize(
        _QuantizationWrapper(model.eval()), nncf.Dataset([torch.randn(1, 3, 23, 19) for _ in range(2)]), subset_size=2
    )
    assert expanding_chains(wrapped) == ()  # its quantizers hook each convolution as traced
