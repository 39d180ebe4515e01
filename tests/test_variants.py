import dataclasses

import pytest
import torch

import models
from bench.settings import FinetuneSettings, StudyConfigError, TimingSettings, TrainSettings
from bench.store.schema import config_hash
from bench.study.config import DEFAULT_CONFIG, expand_cells, merge_config
from bench.study.variants import VariantSpecError, parse_step, parse_variant, variant_label, variant_name
from bench.training.pipeline import compress_and_finetune
from bench.training.train import seed_everything, train_model


def test_parse_step_types_and_lists():
    step = parse_step("svd:rank_ratio=0.5,layers=conv1.*|slim1.*,skip_if_larger=false,seed=3")
    assert step == {"method": "svd", "rank_ratio": 0.5, "layers": ["conv1.*", "slim1.*"], "skip_if_larger": False, "seed": 3}
    assert parse_step("prune")["method"] == "prune"
    assert parse_step("tucker2:kernel_sizes=3")["kernel_sizes"] == [3]


def test_parse_variant_pipelines_and_label_round_trip():
    steps = parse_variant("tucker2:rank_ratio=0.5,kernel_sizes=3+svd:rank_selection=energy,energy=0.9")
    assert [s["method"] for s in steps] == ["tucker2", "svd"]
    assert parse_variant(variant_label(steps)) == steps
    mapped = parse_variant({"steps": ["cp:rank_ratio=0.1", {"method": "svd", "rank_ratio": 0.25}]})
    assert mapped == [{"method": "cp", "rank_ratio": 0.1}, {"method": "svd", "rank_ratio": 0.25}]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("svdd:rank_ratio=0.5", "unknown method 'svdd'"),
        ("svd:rank_ratio", "option 'rank_ratio' is not key=value"),
        (42, "expected 'method:opts"),
        ({"steps": [{"method": "nope"}]}, "known 'method'"),
        ("svd:rank_ratio=2", r"rank_ratio must be in \(0, 1\], got 2"),
        ("prune:pruning_ratio=1", r"pruning_ratio must be in \(0, 1\), got 1"),
        ("svd:rank_ration=0.5", r"unknown options \['rank_ration'\]"),
        ("prune:importance=l2,rank_ratio=0.5", r"unknown options \['rank_ratio'\]"),
    ],
)
def test_bad_variant_specs(spec, message):
    with pytest.raises(VariantSpecError, match=message):
        parse_variant(spec)


def test_compressed_cells_follow_their_base_cell():
    config = merge_config(
        DEFAULT_CONFIG,
        {
            "models": [
                {
                    "name": "slimnet",
                    "compressions": [
                        "svd:rank_ratio=0.5",
                        {"name": "P50", "steps": ["prune:pruning_ratio=0.5"], "finetune": {"epochs": 2}},
                    ],
                }
            ],
            "finetune": {"epochs": 1, "norm_lambda": 0.1},
        },
    )
    cells = expand_cells(config)
    assert [c.get("variant") for c in cells] == ["", "", "svd 0.5", "P50"]  # the short name, or the variant's own
    assert (
        variant_name(parse_variant("prune:target_macs=0.5+svd:rank_ratio=0.25,layers=slim1.*"))
        == "prune macs 0.5 + svd slim1 0.25"
    )
    assert variant_name(parse_variant("cp_epc:rank_ratio=0.25,layers=conv1.*")) == "cp_epc conv1 0.25"
    assert cells[2]["base_hash"] == cells[3]["base_hash"] == config_hash(cells[1])
    defaults = FinetuneSettings().to_dict()
    assert cells[2]["finetune"] == {**defaults, "epochs": 1, "norm_lambda": 0.1}
    assert cells[3]["finetune"] == {**defaults, "epochs": 2, "norm_lambda": 0.1}  # the variant's own epochs, the study's lambda
    with pytest.raises(StudyConfigError, match="unknown method 'foo'"):
        expand_cells(merge_config(config, {"compressions": ["foo"], "models": ["slimnet"]}))
    with pytest.raises(StudyConfigError, match="unknown key finetune.epoch: did you mean finetune.epochs"):
        expand_cells(merge_config(config, {"finetune": {"epoch": 1}}))


def test_compress_and_finetune_pipeline(tiny_synthetic):
    seed_everything(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    config = TrainSettings(epochs=1, batch_size=16, lr=1e-3)
    train_model(model, tiny_synthetic, config)
    steps = parse_variant("prune:pruning_ratio=0.5,iterations=2+svd:rank_ratio=0.5")
    out = compress_and_finetune(
        model,
        tiny_synthetic,
        steps,
        {"epochs": 1, "norm_lambda": 1e-4, "limit_train": 16},
        config,
        layer_timing=TimingSettings(layer_min_iters=2, layer_min_seconds=0.0).layer_timing(),
    )
    assert [r.method for r in out.reports] == ["prune", "prune", "svd"]
    assert sum(p.numel() for p in out.model.parameters()) < sum(p.numel() for p in model.parameters())
    methods = {row["method"] for row in out.layer_rows}
    assert methods == {"prune", "svd"}
    pruned = [row for row in out.layer_rows if row["method"] == "prune"]
    assert len(pruned) == len({row["layer"] for row in pruned})  # one row per layer over both iterations
    assert {row["runtime"] for row in pruned} == {""} and not any("measured_speedup" in row for row in pruned)  # timed whole
    factorized = [row for row in out.layer_rows if row["method"] == "svd"]
    assert {row["runtime"] for row in factorized} == {"eager", "onnxruntime"}
    assert all(row["theoretical_speedup"] > 0 for row in out.layer_rows) and all(
        row["measured_speedup"] > 0 for row in factorized
    )
    assert [h["epoch"] for h in out.history] == [1, 1]  # between the two pruning iterations, then at the end
    with torch.no_grad():
        assert out.model(torch.zeros(1, 3, 218, 178)).shape == (1, 40)


def test_later_factorization_steps_leave_earlier_factors_alone(tiny_synthetic):
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    steps = parse_variant("tucker2:rank_ratio=0.5,skip_if_larger=false+svd:rank_ratio=0.5,layers=conv1.*|slim1.sse1.*")
    out = compress_and_finetune(
        model,
        tiny_synthetic,
        steps,
        {"epochs": 1, "norm_lambda": 1e-4, "limit_train": 16},
        TrainSettings(epochs=1, batch_size=16),
        layer_timing=TimingSettings(layer_min_iters=2, layer_min_seconds=0.0).layer_timing(),
    )
    tucker, svd = out.reports
    assert [r["layer"] for r in tucker.compressed()] == ["conv1.0"]
    svd_layers = {r["layer"] for r in svd.compressed()}
    assert svd_layers and not any(name.startswith("conv1.0.") for name in svd_layers)
    assert {r["reason"] for r in svd.layers if r["layer"].startswith("conv1.0.")} == {"excluded"}
    assert all(isinstance(out.model.get_submodule(n), torch.nn.Conv2d) for g in out.factor_groups for n in g)


def test_accuracy_before_finetuning_is_the_compressed_models_own(tiny_synthetic):
    """acc_mean_nofinetune must be the compressed model's test accuracy, not its base's nor the fine-tuned one's."""
    from bench.metrics import per_attribute_accuracy
    from bench.training.train import predict_probs

    seed_everything(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    config = TrainSettings(epochs=1, batch_size=16, lr=1e-3)
    train_model(model, tiny_synthetic, config)
    base_accuracy = per_attribute_accuracy(
        tiny_synthetic.labels[tiny_synthetic.splits["test"]], predict_probs(model, tiny_synthetic, "test")
    ).mean()
    out = compress_and_finetune(model, tiny_synthetic, parse_variant("svd:rank_ratio=0.05"), {"epochs": 0}, config)
    own = per_attribute_accuracy(
        tiny_synthetic.labels[tiny_synthetic.splits["test"]], predict_probs(out.model, tiny_synthetic, "test")
    )
    assert out.acc_mean_nofinetune == pytest.approx(float(own.mean()), abs=1e-9)
    assert out.history == [] and out.acc_mean_nofinetune != pytest.approx(float(base_accuracy), abs=1e-6)


def test_a_single_exclude_pattern_is_one_pattern_not_its_characters(tiny_synthetic):
    """`exclude: "conv1.*"` in a YAML step mapping excluded layers matching 'c', 'o', 'n', ... (issue 19)."""
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    steps = parse_variant(
        {
            "steps": [
                {"method": "tucker2", "rank_ratio": 0.5, "skip_if_larger": False},
                {"method": "svd", "rank_ratio": 0.5, "exclude": "slim1.*"},
            ]
        }
    )
    out = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 0}, TrainSettings(epochs=1, batch_size=16))
    svd = out.reports[1]
    reasons = {r["layer"]: r["reason"] for r in svd.layers}
    assert all(reason == "excluded" for layer, reason in reasons.items() if layer.startswith("slim1."))
    assert {r["layer"] for r in svd.compressed()} and all(not r["layer"].startswith("slim1.") for r in svd.compressed())


def test_batchnorm_recalibration_averages_the_first_training_images_and_restores_momentum(tiny_synthetic):
    """The running mean must become the mean of the BN input over exactly the first N training images (momentum None:
    every batch alike), the running variance their unbiased batch variances' average, and momentum be restored."""
    from bench.data.loading import iterate_batches, to_model_input
    from bench.training.train import recalibrate_batchnorm

    torch.manual_seed(0)
    conv, norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(conv, norm).eval()
    model.data_config = {"input_size": (3, 24, 20), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    norm.running_mean.fill_(7.0)
    images = next(iterate_batches(tiny_synthetic, "train", 64))[0][:6]
    with torch.no_grad():
        features = conv(to_model_input(images, model.data_config, torch.device("cpu"), False))
    halves = features[:3], features[3:]
    seen = recalibrate_batchnorm(model, tiny_synthetic, 6, batch_size=3, device="cpu")
    assert seen == 6 and not model.training and norm.momentum == 0.1
    torch.testing.assert_close(norm.running_mean, features.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    variances = torch.stack([h.var(dim=(0, 2, 3), unbiased=True) for h in halves]).mean(0)
    torch.testing.assert_close(norm.running_var, variances, rtol=1e-4, atol=1e-6)
    assert recalibrate_batchnorm(torch.nn.Sequential(conv), tiny_synthetic, 6) == 0  # no BatchNorm: nothing to do


def test_a_screen_without_finetune_reuses_its_test_logits_and_recalibrates_batchnorm(tiny_synthetic):
    """With no fine-tune and no last step the test logits measured before the fine-tune are the final model's (reused by
    the evaluation); bn_recalibration must change the compressed model's BatchNorm statistics, and only then."""
    from bench.training.train import predict_logits

    seed_everything(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    config = TrainSettings(epochs=1, batch_size=16, lr=1e-3)
    train_model(model, tiny_synthetic, config)
    steps = parse_variant("prune:pruning_ratio=0.5")
    plain = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 0}, config)
    recalibrated = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 0, "bn_recalibration": 8}, config)
    own = predict_logits(recalibrated.model, tiny_synthetic, "test", config.eval_batch_size, "cpu", config.channels_last)
    assert recalibrated.test_logits is not None
    assert torch.equal(torch.from_numpy(recalibrated.test_logits), torch.from_numpy(own))
    mean = "conv1.1.running_mean"
    assert not torch.equal(plain.model.state_dict()[mean], recalibrated.model.state_dict()[mean])
    # recalibration averages over batches of its own size: the evaluation batch size changes none of its statistics
    other_batch = dataclasses.replace(config, eval_batch_size=3)
    again = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 0, "bn_recalibration": 8}, other_batch)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in recalibrated.model.state_dict().items())
    tuned = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 1, "limit_train": 16}, config)
    assert tuned.test_logits is None  # the fine-tune changed the model after its test logits were taken


def test_a_cp_stem_fine_tunes_merged_and_its_row_says_so(tiny_synthetic):
    from bench.study.runner import _setups_text

    seed_everything(0)
    model = models.create_model("slimnet", filter_count_values=[8, 8, 8, 8], initial_conv=[16, 7, 2])
    config = TrainSettings(epochs=1, batch_size=16, lr=1e-3, precision="fp32")
    trained = train_model(model, tiny_synthetic, config)
    steps = parse_variant("cp:rank_ratio=0.5,layers=conv1.*,als_iters=5")
    out = compress_and_finetune(model, tiny_synthetic, steps, {"epochs": 1, "limit_train": 16}, config)
    assert out.model.conv1[0][0].out_channels > out.model.conv1[0][0].in_channels  # an expanding first factor
    assert out.finetune_setup == "channels_last, fp32, 1 expanding 1x1 conv merged into the next"
    assert "forward" not in out.model.conv1[0].__dict__  # the saved model computes its factors
    assert _setups_text(trained.setup, out.finetune_setup) == (
        "channels_last, fp32; fine-tune: channels_last, fp32, 1 expanding 1x1 conv merged into the next"
    )
    assert _setups_text(trained.setup, trained.setup) == trained.setup
