import os

import pytest

from bench.config import StudyConfigError, expand_cells, load_config, merge_config
from bench.schema import MAJORITY
from tests.helpers import tiny_study


def _config(tmp_path, **train):
    return tiny_study(train=train)


def test_cells_have_a_majority_row_and_one_per_model_and_seed(tmp_path):
    config = merge_config(_config(tmp_path), {"seeds": [0, 1], "models": ["slimnet", "squeezenet1_1"]})
    cells = expand_cells(config)
    assert [c["model"] for c in cells] == [MAJORITY, "slimnet", "slimnet", "squeezenet1_1", "squeezenet1_1"]
    assert [c["seed"] for c in cells[1:]] == [0, 1, 0, 1]
    assert cells[1]["train"]["seed"] == 0 and cells[2]["train"]["seed"] == 1


@pytest.mark.parametrize("override, message", [
    ({"models": ["resnet19"]}, "models\\[0\\]: unknown model 'resnet19'"),
    ({"models": [{"nam": "slimnet"}]}, "unknown key models\\[0\\].nam: did you mean models\\[0\\].name\\?"),
    ({"models": [{}]}, "models\\[0\\]: expected a model name"),
    ({"models": [{"name": "slimnet", "epochs": 3}]}, "unknown key models\\[0\\].epochs"),
    ({"train": {"epoch": 3}}, "unknown key train.epoch: did you mean train.epochs\\?"),
    ({"train": {"epochs": 0}}, "'epochs' must be >= 1"),
    ({"seeds": []}, "at least one seed"),
])
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
