import numpy as np
import pytest

from bench.data.celeba import CELEBA_ATTRIBUTES, read_attr_txt, read_partition
from bench.data.synthetic import (
    REAL_POSITIVE_RATES,
    draw_face,
    ensure_synthetic_celeba,
    format_attr_row,
    make_example,
    sample_attributes,
    split_of_index,
    write_synthetic_celeba,
)


@pytest.fixture(scope="module")
def labels_2000():
    return np.stack([make_example(7, i)[1] for i in range(2000)])


def test_deterministic_for_a_seed():
    image_a, labels_a = make_example(3, 11)
    image_b, labels_b = make_example(3, 11)
    np.testing.assert_array_equal(np.asarray(image_a), np.asarray(image_b))
    np.testing.assert_array_equal(labels_a, labels_b)
    image_c, _ = make_example(4, 11)
    assert not np.array_equal(np.asarray(image_a), np.asarray(image_c))
    assert image_a.size == (178, 218)


def test_positive_rates_within_3_points_of_real(labels_2000):
    rates = labels_2000.mean(axis=0)
    gaps = {name: abs(rates[j] - REAL_POSITIVE_RATES[name]) for j, name in enumerate(CELEBA_ATTRIBUTES)}
    assert max(gaps.values()) < 0.03, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
    majority = np.maximum(rates, 1 - rates).mean()
    assert abs(majority - 0.806) < 0.01


def test_real_correlations(labels_2000):
    column = {name: labels_2000[:, j].astype(bool) for j, name in enumerate(CELEBA_ATTRIBUTES)}
    assert column["Goatee"].any() and not (column["Goatee"] & ~column["Male"]).any()
    assert not (column["Heavy_Makeup"] & column["Male"]).any()
    assert not (column["Wearing_Lipstick"] & column["Male"]).any()
    assert not (column["Goatee"] & column["No_Beard"]).any()
    smiling, cheeks = column["Smiling"], column["High_Cheekbones"]
    assert cheeks[smiling].mean() > cheeks[~smiling].mean() + 0.4


def test_subjective_labels_are_noisy():
    # The label disagrees with what was drawn for roughly LABEL_NOISE of the images.
    flips = 0
    for i in range(400):
        rng = np.random.default_rng([0, i])
        drawn = sample_attributes(rng)["Attractive"]
        flips += int(make_example(0, i)[1][CELEBA_ATTRIBUTES.index("Attractive")] != drawn)
    assert 30 <= flips <= 95  # 15 % of 400 = 60


@pytest.mark.parametrize("name", [n for n in CELEBA_ATTRIBUTES])
def test_every_attribute_changes_the_picture(name):
    hair_names = {"Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald"}
    for index in range(40):
        base = sample_attributes(np.random.default_rng([1, index]))
        if name in ("Bald",) and not base["Male"]:
            continue
        if name in ("Straight_Hair", "Wavy_Hair", "Bangs", "Receding_Hairline") + tuple(hair_names) and base["Bald"]:
            continue
        if name == "Wavy_Hair" and base["Straight_Hair"]:
            continue
        flipped = dict(base)
        flipped[name] = not base[name]
        if name in hair_names:
            # Hair colour is drawn from the one category in "hair"; the flags mirror it.
            base["hair"], flipped["hair"] = "other", name
            base[name], flipped[name] = False, True
        first = np.asarray(draw_face(base, np.random.default_rng(5)), dtype=np.int16)
        second = np.asarray(draw_face(flipped, np.random.default_rng(5)), dtype=np.int16)
        changed = np.abs(first - second).max(axis=2) > 20
        assert changed.sum() >= 20, f"{name} changes only {changed.sum()} pixels"
        return
    pytest.fail(f"no base face to toggle {name} on")


def test_written_folder_is_in_the_official_format(tmp_path):
    root = write_synthetic_celeba(tmp_path / "syn", n_images=20, seed=2)
    raw = (tmp_path / "syn" / "list_attr_celeba.txt").read_bytes()
    assert raw.startswith(b"20\r\n5_o_Clock_Shadow Arched_Eyebrows")
    table = read_attr_txt(tmp_path / "syn" / "list_attr_celeba.txt")
    assert table.attr_names == CELEBA_ATTRIBUTES and len(table.image_ids) == 20
    np.testing.assert_array_equal(table.labels[4], make_example(2, 4)[1])
    partition = read_partition(tmp_path / "syn" / "list_eval_partition.txt")
    assert [partition[f"{i:06d}.jpg"] for i in (1, 16, 17, 18, 19, 20)] == [0, 0, 1, 1, 2, 2]
    assert ensure_synthetic_celeba(20, 2, cache_dir=str(tmp_path)) != root
    with pytest.raises(FileExistsError):
        write_synthetic_celeba(root, 20, 2)
    with pytest.raises(ValueError, match="n_images must be >= 10"):
        write_synthetic_celeba(tmp_path / "small", 5)


def test_row_format_matches_the_real_file(celeba_sample):
    lines = (celeba_sample / "list_attr_celeba.txt").read_bytes().split(b"\r\n")
    table = read_attr_txt(celeba_sample / "list_attr_celeba.txt")
    assert format_attr_row(table.image_ids[0], table.labels[0]).encode() == lines[2]


def test_split_proportions():
    splits = [split_of_index(i, 1000) for i in range(1000)]
    assert splits.count(0) == 800 and splits.count(1) == 100 and splits.count(2) == 100


def test_the_set_written_by_one_process_per_core_is_the_one_written_by_one(tmp_path, monkeypatch):
    import filecmp
    import multiprocessing
    import os

    from bench.data import synthetic

    monkeypatch.setattr(synthetic, "_CHUNK", 7)  # 30 images: 5 chunks over the workers
    synthetic.write_synthetic_celeba(tmp_path / "forked", 30, seed=3)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # no fork: one process
    synthetic.write_synthetic_celeba(tmp_path / "alone", 30, seed=3)
    names = sorted(os.listdir(tmp_path / "alone" / "img_align_celeba"))
    assert len(names) == 30
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "forked",
        tmp_path / "alone",
        ["list_attr_celeba.txt", "list_eval_partition.txt"] + [f"img_align_celeba/{n}" for n in names],
        shallow=False,
    )
    assert not mismatch and not errors
