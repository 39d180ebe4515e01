import shutil

import numpy as np
import pytest
from PIL import Image

from bench.data.celeba import (
    CELEBA_ATTRIBUTES,
    CelebAFormatError,
    find_celeba_files,
    read_attr_csv,
    read_attr_txt,
    read_attributes,
    read_partition,
    split_indices,
)
from bench.data.loading import ImageDecodeError, load_celeba

# ---- the real sample in ../shared -------------------------------------------------------------


def test_real_sample_parses_548_rows_and_40_names(celeba_sample):
    table = read_attr_txt(celeba_sample / "list_attr_celeba.txt")
    assert len(table.image_ids) == 548
    assert table.attr_names == CELEBA_ATTRIBUTES
    assert table.labels.shape == (548, 40) and set(np.unique(table.labels)) <= {0, 1}
    assert table.image_ids[0] == "000002.jpg"
    # First row of the real file: -1 -1 -1  1 -1 ... (Bags_Under_Eyes positive).
    assert table.labels[0, :4].tolist() == [0, 0, 0, 1]


def test_real_sample_partition_and_decoding(celeba_sample, cache_dir):
    partition = read_partition(celeba_sample / "list_eval_partition.txt")
    assert len(partition) == 548 and set(partition.values()) == {0}
    data = load_celeba(str(celeba_sample), cache_dir=cache_dir, name="sample")
    assert data.images.shape == (548, 218, 178, 3) and data.images.dtype == np.uint8
    assert data.split_sizes() == {"n_train": 548, "n_val": 0, "n_test": 0}
    original = np.asarray(Image.open(celeba_sample / "img_align_celeba" / "000002.jpg").convert("RGB"))
    np.testing.assert_array_equal(data.images[0], original)


# ---- generated copies in every supported layout ------------------------------------------------


def _write_copy(root, n=6, crlf=True, kaggle=False, names=CELEBA_ATTRIBUTES):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(n, len(names)))
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    image_dir = root / ("img_align_celeba/img_align_celeba" if kaggle else "img_align_celeba")
    image_dir.mkdir(parents=True)
    for image_id in ids:
        Image.new("RGB", (178, 218), tuple(int(v) for v in rng.integers(0, 255, 3))).save(image_dir / image_id)
    end = "\r\n" if crlf else "\n"
    if kaggle:
        rows = ["image_id," + ",".join(names)] + [
            i + "," + ",".join("1" if v else "-1" for v in row) for i, row in zip(ids, labels)
        ]
        (root / "list_attr_celeba.csv").write_text(end.join(rows) + end)
        parts = ["image_id,partition"] + [f"{i},{k % 3}" for k, i in enumerate(ids)]
        (root / "list_eval_partition.csv").write_text(end.join(parts) + end)
    else:
        rows = [str(n), " ".join(names) + " "] + [
            i + "".join(f" {1 if v else -1:2d}" for v in row) for i, row in zip(ids, labels)
        ]
        (root / "list_attr_celeba.txt").write_bytes((end.join(rows) + end).encode())
        (root / "list_eval_partition.txt").write_bytes(
            end.join(f"{i} {k % 3}" for k, i in enumerate(ids)).encode() + end.encode()
        )
    return ids, labels


@pytest.mark.parametrize("crlf", [True, False])
def test_official_text_format_crlf_and_lf(tmp_path, crlf):
    ids, labels = _write_copy(tmp_path, crlf=crlf)
    table = read_attributes(tmp_path / "list_attr_celeba.txt")
    assert table.image_ids == tuple(ids)
    np.testing.assert_array_equal(table.labels, labels)


def test_kaggle_csv_layout(tmp_path, cache_dir):
    ids, labels = _write_copy(tmp_path, kaggle=True)
    files = find_celeba_files(tmp_path)
    assert files.attr_path.endswith(".csv") and files.image_dir.endswith("img_align_celeba/img_align_celeba")
    data = load_celeba(str(tmp_path), cache_dir=cache_dir, name="kaggle")
    assert data.split_sizes() == {"n_train": 2, "n_val": 2, "n_test": 2}
    assert data.attr_names == CELEBA_ATTRIBUTES
    np.testing.assert_array_equal(data.labels[data.splits["train"]], labels[[0, 3]].astype(np.float32))


def test_torchvision_layout(tmp_path):
    _write_copy(tmp_path / "celeba")
    assert find_celeba_files(tmp_path).attr_path == str(tmp_path / "celeba" / "list_attr_celeba.txt")


def test_official_archive_layout(tmp_path):
    _write_copy(tmp_path)
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Img").mkdir()
    shutil.move(tmp_path / "list_attr_celeba.txt", tmp_path / "Anno")
    shutil.move(tmp_path / "list_eval_partition.txt", tmp_path / "Eval")
    shutil.move(tmp_path / "img_align_celeba", tmp_path / "Img")
    files = find_celeba_files(tmp_path)
    assert files.partition_path.endswith("Eval/list_eval_partition.txt")


def test_limits_keep_leading_images_per_split(tmp_path, cache_dir):
    _write_copy(tmp_path, n=9)
    data = load_celeba(str(tmp_path), limits={"train": 1, "val": None, "test": 2}, cache_dir=cache_dir, name="lim")
    assert data.split_sizes() == {"n_train": 1, "n_val": 3, "n_test": 2}
    assert len(data.images) == 6


# ---- bad input ----------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_celeba_files(tmp_path / "absent")


def test_root_without_celeba(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CelebA copy under"):
        find_celeba_files(tmp_path)


def test_missing_partition_file(tmp_path):
    _write_copy(tmp_path)
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        find_celeba_files(tmp_path)


def test_row_with_wrong_field_count_names_file_and_line(tmp_path):
    _write_copy(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_bytes().split(b"\r\n")
    lines[4] = lines[4].rsplit(b" ", 1)[0]
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(CelebAFormatError, match=r"list_attr_celeba.txt, line 5: expected 41 fields .* found 40"):
        read_attr_txt(path)


def test_bad_label_value(tmp_path):
    _write_copy(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes(
        path.read_bytes().replace(b"000002.jpg -1", b"000002.jpg  2", 1).replace(b"000002.jpg  1", b"000002.jpg  2", 1)
    )
    with pytest.raises(CelebAFormatError, match=r"line 4: attribute '5_o_Clock_Shadow' has value '2'"):
        read_attr_txt(path)


def test_count_line_disagreeing_with_rows(tmp_path):
    _write_copy(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes(b"7" + path.read_bytes()[1:])
    with pytest.raises(CelebAFormatError, match="declares 7 images but 6 rows follow"):
        read_attr_txt(path)


def test_bad_count_line(tmp_path):
    _write_copy(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes(b"x" + path.read_bytes()[1:])
    with pytest.raises(CelebAFormatError, match="line 1: expected the number of images"):
        read_attr_txt(path)


def test_csv_without_image_id(tmp_path):
    path = tmp_path / "list_attr_celeba.csv"
    path.write_text("name,Smiling\na.jpg,1\n")
    with pytest.raises(CelebAFormatError, match="image_id"):
        read_attr_csv(path)


def test_partition_bad_split(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("000001.jpg 0\n000002.jpg 5\n")
    with pytest.raises(CelebAFormatError, match=r"line 2: expected '<image> <0\|1\|2>'"):
        read_partition(path)


def test_image_without_partition_entry(tmp_path):
    _write_copy(tmp_path)
    table = read_attr_txt(tmp_path / "list_attr_celeba.txt")
    with pytest.raises(CelebAFormatError, match="'000001.jpg' of the attribute file has no partition entry"):
        split_indices(table, {}, "parts.txt")


def test_listed_image_absent(tmp_path, cache_dir):
    _write_copy(tmp_path)
    (tmp_path / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(ImageDecodeError, match=r"000003.jpg' is listed in .*list_attr_celeba.txt' but does not exist"):
        load_celeba(str(tmp_path), cache_dir=cache_dir, name="absent")
    # Nothing half-written is left to be mistaken for a finished cache.
    import os

    decoded = os.path.join(cache_dir, "decoded")
    assert not [n for n in os.listdir(decoded) if ".partial" in n]


def test_unreadable_jpeg(tmp_path, cache_dir):
    _write_copy(tmp_path)
    (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="000002.jpg.*cannot be decoded"):
        load_celeba(str(tmp_path), cache_dir=cache_dir, name="broken")
