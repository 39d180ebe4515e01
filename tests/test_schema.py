import pytest

from bench.store.schema import RESULT_COLUMNS, config_hash, make_row


def test_config_hash_is_stable_and_sensitive():
    cell = {"model": "slimnet", "train": {"epochs": 1, "lr": 0.001}}
    assert config_hash(cell) == config_hash({"train": {"lr": 0.001, "epochs": 1}, "model": "slimnet"})
    assert config_hash(cell) != config_hash({**cell, "train": {"epochs": 2, "lr": 0.001}})
    assert len(config_hash(cell)) == 12


def test_make_row_rejects_unknown_columns():
    with pytest.raises(KeyError, match="acc_meen"):
        make_row(RESULT_COLUMNS, {"acc_meen": 1})
