"""Issue 14: datasets beyond CelebA (a CSV/TSV table, PA-100K's annotation.mat) end to end."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from bench.data.csv_table import csv_source
from bench.data.layouts import find_source
from bench.data.loading import load_data
from bench.data.pa100k import pa100k_source
from bench.data.source import DatasetFormatError
from bench.study.config import DEFAULT_CONFIG, merge_config
from bench.study.runner import create_cell_model, run_study

PA100K_ATTRIBUTES = (
    "Female",
    "AgeOver60",
    "Age18-60",
    "AgeLess18",
    "Front",
    "Side",
    "Back",
    "Hat",
    "Glasses",
    "HandBag",
    "ShoulderBag",
    "Backpack",
    "HoldObjectsInFront",
    "ShortSleeve",
    "LongSleeve",
    "UpperStride",
    "UpperLogo",
    "UpperPlaid",
    "UpperSplice",
    "LowerStripe",
    "LowerPattern",
    "LongCoat",
    "Trousers",
    "Shorts",
    "Skirt&Dress",
    "boots",
)
PETA_ATTRIBUTES = (
    "personalLess30",
    "personalLess45",
    "personalMale",
    "accessoryHat",
    "carryingBackpack",
    "upperBodyCasual",
    "lowerBodyJeans",
    "footwearSneaker",
)


def _pedestrians(folder, n, seed=0):
    """Write ``n`` 256x192 (H x W) JPEGs into ``folder``; return their names and (n, 26) 0/1 labels."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{i:06d}.jpg" for i in range(n)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, size=(256, 192, 3), dtype=np.uint8)).save(os.path.join(folder, name))
    return names, rng.integers(0, 2, size=(n, len(PA100K_ATTRIBUTES)))


def _write_pa100k(root, n=(20, 5, 5)):
    from scipy.io import savemat

    names, labels = _pedestrians(root / "data", sum(n))

    def cells(items):  # a MATLAB cell column
        return np.array([[np.array([item])] for item in items], dtype=object)

    bounds = np.cumsum((0,) + n)
    mat = {"attributes": cells(PA100K_ATTRIBUTES)}
    for k, split in enumerate(("train", "val", "test")):
        mat[f"{split}_images_name"] = cells(names[bounds[k] : bounds[k + 1]])
        mat[f"{split}_label"] = labels[bounds[k] : bounds[k + 1]].astype(np.float64)
    savemat(root / "annotation.mat", mat)
    return labels


def _write_peta(root, n=30, delimiter=",", name="peta.csv", minus_one=True):
    names, labels = _pedestrians(root / "images", n, seed=1)
    labels = labels[:, : len(PETA_ATTRIBUTES)]
    splits = ["train"] * (n - 10) + ["val"] * 5 + ["test"] * 5
    with open(root / name, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["image", *PETA_ATTRIBUTES, "split"])
        for image, row, split in zip(names, labels, splits):
            writer.writerow([f"images/{image}", *[(2 * v - 1) if minus_one else v for v in row], split])
    return labels


def _study(data_dir, **data):
    return merge_config(
        DEFAULT_CONFIG,
        {
            "study": "pedestrians",
            "data": {**DEFAULT_CONFIG["data"], "data_dir": str(data_dir), "cache_dir": os.environ.get("SLIMBENCH_CACHE"), **data},
            "models": [{"name": "slimnet", "kwargs": {"filter_count_values": [4, 4, 4, 4], "initial_conv": [8, 7, 2]}}],
            "train": {"epochs": 1, "batch_size": 8},
            "timing": {"latency": False},
        },
    )


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_pa100k_annotation_mat_is_read_directly(tmp_path, cache_dir):
    labels = _write_pa100k(tmp_path)
    source = pa100k_source(str(tmp_path / "annotation.mat"))
    assert source.attr_names == PA100K_ATTRIBUTES
    assert source.split_of.tolist() == [0] * 20 + [1] * 5 + [2] * 5
    np.testing.assert_array_equal(source.labels, labels)
    assert source.image_paths[0] == str(tmp_path / "data" / "000000.jpg")
    data = load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir})  # detected from the folder
    assert data.images.shape == (30, 256, 192, 3) and data.name == "pa100k"  # the dataset's own size, not CelebA's
    assert load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir, "image_size": [128, 96]}).images.shape == (
        30,
        128,
        96,
        3,
    )


def test_study_end_to_end_on_pa100k(tmp_path, cache_dir):
    from bench.report.render import render_report

    _write_pa100k(tmp_path / "pa100k")
    results = str(tmp_path / "results")
    rows = run_study(_study(tmp_path / "pa100k"), results)
    assert [r["model"] for r in rows] == ["majority", "slimnet"] and rows[1]["dataset"] == "pa100k"
    per_attribute = _csv_rows(os.path.join(results, "pedestrians", "per_attribute.csv"))
    assert [r["attribute"] for r in per_attribute if r["model"] == "slimnet"] == list(PA100K_ATTRIBUTES)
    written = render_report(results, "pedestrians", str(tmp_path / "reports"), plots=False)
    summary = open(written["summary.md"]).read()
    header = next(line for line in summary.splitlines() if line.startswith("| Model"))
    for column in ("mA", "Acc", "Prec", "Recall", "F1", "PPP (mA/M)"):
        assert f"| {column} |" in header
    assert "Skirt&Dress" in open(written["per_attribute.md"]).read()


def test_study_end_to_end_on_a_peta_csv_through_the_cli(tmp_path, cache_dir):
    import run_bench

    _write_peta(tmp_path / "peta")
    config = tmp_path / "study.yaml"
    config.write_text(
        "study: peta\nmodels:\n  - name: slimnet\n    kwargs: {filter_count_values: [4, 4, 4, 4], initial_conv: [8, 7, 2]}\n"
        "train: {epochs: 1, batch_size: 8}\n"
    )
    results = tmp_path / "results"
    code = run_bench.main(
        [
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "peta" / "peta.csv"),
            "--results-dir",
            str(results),
            "--reports-dir",
            str(tmp_path / "reports"),
            "--no-latency",
            "--no-plots",
            "-q",
        ]
    )
    assert code == 0
    rows = _csv_rows(results / "peta" / "results.csv")
    assert [r["dataset"] for r in rows] == ["peta", "peta"] and rows[1]["n_train"] == "20"
    per_attribute = _csv_rows(results / "peta" / "per_attribute.csv")
    assert [r["attribute"] for r in per_attribute if r["model"] == "majority"] == list(PETA_ATTRIBUTES)


def test_a_folder_with_one_tsv_and_split_files(tmp_path):
    labels = _write_peta(tmp_path, n=12, delimiter="\t", name="labels.tsv", minus_one=False)
    source = find_source(str(tmp_path))
    assert source.attr_names == PETA_ATTRIBUTES and source.name == "labels"
    np.testing.assert_array_equal(source.labels, labels)
    # separate split files instead of a split column
    with open(tmp_path / "labels.tsv") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    with open(tmp_path / "nosplit.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([row[:-1] for row in rows])
    for split, members in (("train", rows[1:9]), ("val", rows[9:11]), ("test", rows[11:])):
        (tmp_path / f"{split}.txt").write_text("".join(f"{row[0]}\n" for row in members))
    source = csv_source(str(tmp_path / "nosplit.csv"), split_files={"train": "train.txt", "val": "val.txt", "test": "test.txt"})
    assert source.split_of.tolist() == [0] * 8 + [1] * 2 + [2] * 2


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda rows: rows[3].__setitem__(-1, "holdout"),
            r"peta.csv, line 4, column 'split': expected train/val/test or 0/1/2, found 'holdout'",
        ),
        (
            lambda rows: rows[2].__setitem__(2, "0.5"),
            r"peta.csv, line 3, column 'personalLess45': expected 0/1 or -1/1, found '0.5'",
        ),
        (
            lambda rows: rows.append(list(rows[1])),
            r"peta.csv, line 32: image 'images/000000.jpg' is listed again \(first on line 2 as",
        ),
        # the same file under another spelling could sit in train and test at once
        (
            lambda rows: rows.append(["./" + rows[1][0]] + rows[1][1:]),
            r"line 32: image './images/000000.jpg' is listed again \(first on line 2 as 'images/000000.jpg'\)",
        ),
        (lambda rows: rows[5].pop(), r"peta.csv, line 6: expected 10 fields, found 9"),
    ],
)
def test_bad_tables_are_named_by_file_and_line(tmp_path, edit, message):
    _write_peta(tmp_path)
    with open(tmp_path / "peta.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(tmp_path / "peta.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(DatasetFormatError, match=message):
        csv_source(str(tmp_path / "peta.csv"))


def test_missing_files_and_images_are_named(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="attribute table .*absent.csv' does not exist"):
        csv_source(str(tmp_path / "absent.csv"))
    with pytest.raises(FileNotFoundError, match="no dataset under"):
        find_source(str(tmp_path))
    _write_peta(tmp_path)
    os.unlink(tmp_path / "images" / "000003.jpg")
    with pytest.raises(ValueError, match=r"image '.*000003.jpg' is listed in '.*peta.csv' but does not exist"):
        load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir})
    with pytest.raises(DatasetFormatError, match=r"no split column \(split or partition\) and no split_files"):
        with open(tmp_path / "nosplit.csv", "w") as handle:
            handle.write("image,a,b\nimages/000000.jpg,1,0\n")
        csv_source(str(tmp_path / "nosplit.csv"))


def test_dmtl_models_need_groups_outside_celeba(tmp_path, cache_dir):
    _write_pa100k(tmp_path)
    data = load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir})
    cell = {"model": "slimnet_dmtl_pse", "kwargs": {}}
    with pytest.raises(
        ValueError, match=r"know CelebA's 8 groups only; for these 26 attributes give the model `kwargs: \{groups"
    ):
        create_cell_model(cell, data.attr_names)
    groups = {"person": PA100K_ATTRIBUTES[:7], "accessories": PA100K_ATTRIBUTES[7:13], "clothes": PA100K_ATTRIBUTES[13:]}
    model = create_cell_model({"model": "slimnet_dmtl_pse", "kwargs": {"groups": groups}}, data.attr_names).eval()
    import torch

    assert model(torch.zeros(2, 3, 218, 178)).shape == (2, 26) and list(model.heads.groups) == [
        "person",
        "accessories",
        "clothes",
    ]
    with pytest.raises(ValueError, match=r"in no group \['boots'\]"):
        create_cell_model(
            {"model": "slimnet_dmtl", "kwargs": {"groups": {**groups, "clothes": PA100K_ATTRIBUTES[13:-1]}}}, data.attr_names
        )


def test_a_replaced_image_is_decoded_again(tmp_path, cache_dir):
    """The decoded cache was keyed on paths alone: a picture replaced under the same name kept its old pixels (issue 23)."""
    import shutil
    import time

    _write_peta(tmp_path)
    first = load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir})
    images = sorted((tmp_path / "images").glob("*.jpg"))
    time.sleep(0.01)
    shutil.copyfile(images[1], images[0])  # 000000.jpg now shows 000001.jpg's face
    second = load_data({"data_dir": str(tmp_path), "cache_dir": cache_dir})
    assert second.fingerprint != first.fingerprint
    assert not np.array_equal(np.asarray(first.images), np.asarray(second.images))  # the new pixels, not the cached ones
