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


def test_hashes_that_look_like_numbers_are_read_back_as_text(tmp_path):
    # '8e2713051191' is a valid float literal (inf) and '012345678901' an integer: a hash column must stay text
    import csv

    from bench.store.records import read_csv_table
    from bench.store.schema import DOMINANCE_COLUMNS, LATENCY_COLUMNS

    for columns, hashes in ((DOMINANCE_COLUMNS, ("member", "zoo")), (LATENCY_COLUMNS, ("config_hash", "base_hash"))):
        path = tmp_path / "table.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerow({hashes[0]: "8e2713051191", hashes[1]: "012345678901"})
        frame = read_csv_table(str(path))
        assert list(frame[hashes[0]]) == ["8e2713051191"] and list(frame[hashes[1]]) == ["012345678901"]
