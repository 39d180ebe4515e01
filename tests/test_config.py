import os

import pytest

from bench.settings import StudyConfigError
from bench.store.schema import MAJORITY
from bench.study.config import expand_cells, load_config, merge_config
from tests.helpers import tiny_study


def _config(tmp_path, **train):
    return tiny_study(train=train)


def test_cells_have_a_majority_row_and_one_per_model_and_seed(tmp_path):
    config = merge_config(_config(tmp_path), {"seeds": [0, 1], "models": ["slimnet", "squeezenet1_1"]})
    cells = expand_cells(config)
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet", "squeezenet1_1", "squeezenet1_1"]
    assert [c["seed"] for c in cells[1:]] == [0, 1, 0, 1]
    assert cells[1]["train"]["seed"] == 0 and cells[2]["train"]["seed"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ({"models": ["resnet19"]}, "models\\[0\\]: unknown model 'resnet19'"),
        ({"models": [{"nam": "slimnet"}]}, "unknown key models\\[0\\].nam: did you mean models\\[0\\].name\\?"),
        ({"models": [{}]}, "models\\[0\\]: expected a model name"),
        ({"models": [{"name": "slimnet", "epochs": 3}]}, "unknown key models\\[0\\].epochs"),
        ({"train": {"epoch": 3}}, "unknown key train.epoch: did you mean train.epochs\\?"),
        ({"train": {"epochs": 0}}, r"train.epochs: expected an integer in \[1, inf\], got 0"),
        ({"seeds": []}, "seeds: expected a list of distinct integers"),
    ],
)
def test_bad_config_values_are_named(tmp_path, override, message):
    with pytest.raises((StudyConfigError, ValueError), match=message):
        expand_cells(merge_config(_config(tmp_path), override))


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("studdy: x\n")
    with pytest.raises(StudyConfigError, match="unknown key studdy: did you mean study\\?"):
        load_config(str(bad))
    bad.write_text("models: [slimnet\n")
    with pytest.raises(StudyConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_shipped_configs_are_valid():
    from run_bench import DEFAULT_CONFIG_PATH, HERE

    cells = expand_cells(load_config(DEFAULT_CONFIG_PATH))
    assert [c["model"] for c in cells] == [MAJORITY] + ["slimnet"] * 5 + ["mobilenetv3_small_100"]
    assert [c["compression"][0]["method"] for c in cells if c.get("compression")] == ["svd", "prune", "cp", "cp_epc"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "resnet18_lwalm.yaml")))
    assert [c["variant"] for c in cells] == ["", "", "TKD+SVD", "CPD+SVD", "CPD-EPC+SVD"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "pse_dmtl.yaml")))
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet_pse", "slimnet_dmtl", "slimnet_dmtl_pse"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "course.yaml")))
    assert cells[2]["train"]["freeze_backbone_epochs"] == 1 and cells[2]["pretrained"]
    cells = expand_cells(load_config(os.path.join(HERE, "configs", "slimnet_deploy.yaml")))
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet"]
    assert cells[2]["compression"][0]["target_latency"] == 0.5 and cells[2]["finetune"]["distill"] == 0.7


def _documented_default(comment: str):
    import re

    import yaml

    match = re.search(r"default (\S+?)[;,)]?(?:\s|$)", comment)
    return yaml.safe_load(match.group(1)) if match else None


@pytest.mark.parametrize(
    "section, settings_class", [("train", "TrainSettings"), ("finetune", "FinetuneSettings"), ("timing", "TimingSettings")]
)
def test_default_yaml_documents_every_default_it_changes(section, settings_class):
    """Each value configs/default.yaml sets either is the dataclass default or says in its comment what the default is;
    the finetune and timing sections list every field (the YAML is their documentation)."""
    import yaml

    import bench.settings
    from run_bench import DEFAULT_CONFIG_PATH

    defaults = bench.settings.defaults(getattr(bench.settings, settings_class))
    lines = open(DEFAULT_CONFIG_PATH, encoding="utf-8").read().split(f"\n{section}:", 1)[1].split("\n")[1:]
    seen = {}
    for line in lines:
        if not line.startswith("  "):
            break
        if line.strip().startswith("#"):
            continue
        key_value, _, comment = line.strip().partition("#")
        key, _, value = key_value.partition(":")
        seen[key.strip()] = (yaml.safe_load(value), comment)
    assert set(seen) <= set(defaults)
    if section != "train":
        assert set(seen) == set(defaults), sorted(set(defaults) - set(seen))
    for key, (value, comment) in seen.items():
        if value != defaults[key] and not (isinstance(value, list) and tuple(value) == tuple(defaults[key])):
            assert _documented_default(comment) == defaults[key], (key, value, comment)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train": {"pos_weight": "false"}}, r"train.pos_weight: expected true or false, got 'false'"),
        ({"train": {"hflip": "false"}}, r"train.hflip: expected true or false, got 'false'"),
        ({"timing": {"latency": "false"}}, r"timing.latency: expected true or false, got 'false'"),
        ({"seeds": "12"}, r"seeds: expected a list of distinct integers"),
        ({"seeds": 3}, r"seeds: expected a list of distinct integers"),
        ({"train": {"lr": "0.01"}}, r"train.lr: expected in \(0, inf\], got '0.01'"),
        ({"train": {"epochs": 1.7}}, r"train.epochs: expected an integer in \[1, inf\], got 1.7"),
        ({"train": {"epochs": "ten"}}, r"train.epochs: expected an integer in \[1, inf\], got 'ten'"),
        ({"train": {"device": "gpu"}}, r"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ({"data": {"limit_train": "48"}}, r"data.limit_train: expected an integer in \[1, inf\], got '48'"),
        ({"data": {"limit_train": -5}}, r"data.limit_train: expected an integer in \[1, inf\], got -5"),
        ({"study": 123}, r"study: expected a name"),
        ({"finetune": {"distill": 1.5}}, r"finetune.distill: expected in \[0, 1\], got 1.5"),
        ({"timing": {"blocks": 6, "max_blocks": 4}}, r"timing.max_blocks: expected at least timing.blocks"),
        ({"reference": "resnet18"}, r"reference: expected one of the study's models"),
    ],
)
def test_values_are_checked_against_their_type_with_the_field_named(override, message):
    with pytest.raises(StudyConfigError, match=message):
        expand_cells(merge_config(tiny_study(), override))


def test_a_variant_must_have_steps_and_not_repeat_another():
    with pytest.raises(StudyConfigError, match="has no step"):
        expand_cells(tiny_study(compressions=["+"]))
    with pytest.raises(StudyConfigError, match="repeats"):
        expand_cells(tiny_study(compressions=["svd:rank_ratio=0.5", "svd:rank_ratio=0.5"]))
    fine_tuned_longer = {"name": "svd long", "steps": ["svd:rank_ratio=0.5"], "finetune": {"epochs": 3}}
    assert len(expand_cells(tiny_study(compressions=["svd:rank_ratio=0.5", fine_tuned_longer]))) == 4  # another experiment


def test_cells_hold_their_settings_in_full_and_no_timing_settings():
    cells = expand_cells(tiny_study(compressions=["svd:rank_ratio=0.5"]))
    assert cells[1]["train"]["weight_decay"] == 1e-4 and cells[1]["train"]["epochs"] == 1
    assert cells[2]["finetune"] == {**bench_defaults("FinetuneSettings")}
    assert all("timing" not in cell for cell in cells)  # timing is a phase of the study: retiming retrains nothing


def bench_defaults(name):
    import bench.settings

    return bench.settings.defaults(getattr(bench.settings, name))


def test_the_reference_model_is_the_first_unless_named():
    from bench.study.config import reference_model

    config = tiny_study(models=["mobilenetv3_small_100", "slimnet"])
    assert reference_model(config) == "mobilenetv3_small_100"
    assert reference_model({**config, "reference": "slimnet"}) == "slimnet"
