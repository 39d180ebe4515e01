"""A deterministic synthetic face-attribute set written in CelebA's official on-disk format.

Each of the 40 CelebA attributes changes the drawn 178x218 face in its own way (hair colour,
glasses, hat, mouth curve, blur, ...). Positive rates follow the real ones measured on 20,000
CelebA rows (``REAL_POSITIVE_RATES``); a few real correlations are built in (Goatee, Mustache,
Sideburns, 5 o'clock shadow and Bald imply Male; Heavy_Makeup and Wearing_Lipstick are never Male;
Smiling goes with High_Cheekbones and an open mouth), and the subjective attributes carry label
noise so no model reaches 100 %. Image ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.data.celeba import CELEBA_ATTRIBUTES
from bench.progress import null_progress
from bench.store.files import file_lock, partial_name, remove_stale_partials

_logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 178, 218
GENERATOR_VERSION = 2  # bump whenever a change alters the images or labels, so caches regenerate

# Positive rates measured on 20,000 real CelebA rows (shared/celeba_attribute_rates.csv).
REAL_POSITIVE_RATES = {
    "5_o_Clock_Shadow": 0.1123,
    "Arched_Eyebrows": 0.2642,
    "Attractive": 0.5131,
    "Bags_Under_Eyes": 0.2046,
    "Bald": 0.0232,
    "Bangs": 0.1515,
    "Big_Lips": 0.2386,
    "Big_Nose": 0.2374,
    "Black_Hair": 0.2427,
    "Blond_Hair": 0.1489,
    "Blurry": 0.0517,
    "Brown_Hair": 0.2032,
    "Bushy_Eyebrows": 0.1441,
    "Chubby": 0.0571,
    "Double_Chin": 0.0464,
    "Eyeglasses": 0.0646,
    "Goatee": 0.0625,
    "Gray_Hair": 0.0419,
    "Heavy_Makeup": 0.3849,
    "High_Cheekbones": 0.4500,
    "Male": 0.4215,
    "Mouth_Slightly_Open": 0.4791,
    "Mustache": 0.0394,
    "Narrow_Eyes": 0.1158,
    "No_Beard": 0.8321,
    "Oval_Face": 0.2788,
    "Pale_Skin": 0.0432,
    "Pointy_Nose": 0.2762,
    "Receding_Hairline": 0.0780,
    "Rosy_Cheeks": 0.0634,
    "Sideburns": 0.0584,
    "Smiling": 0.4793,
    "Straight_Hair": 0.2124,
    "Wavy_Hair": 0.3161,
    "Wearing_Earrings": 0.1863,
    "Wearing_Hat": 0.0498,
    "Wearing_Lipstick": 0.4711,
    "Wearing_Necklace": 0.1220,
    "Wearing_Necktie": 0.0741,
    "Young": 0.7799,
}

# Fraction of labels flipped after drawing: these attributes are subjective in the real annotations.
LABEL_NOISE = {"Attractive": 0.15, "Oval_Face": 0.10, "Pointy_Nose": 0.10}

HAIR_RGB = {
    "Black_Hair": (28, 22, 22),
    "Blond_Hair": (226, 196, 118),
    "Brown_Hair": (112, 72, 40),
    "Gray_Hair": (172, 172, 176),
    "other": (150, 62, 34),
}


def _bern(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _noise_free_rate(target: float, flip: float) -> float:
    # Flipping with probability e turns rate p into p(1-e) + (1-p)e; invert so the noisy label hits target.
    return (target - flip) / (1.0 - 2.0 * flip)


def sample_attributes(rng: np.random.Generator) -> dict[str, bool]:
    """Return one face's true (noise-free) attributes, drawn with the real marginals and correlations."""
    r = REAL_POSITIVE_RATES
    a: dict[str, bool] = {}
    male = a["Male"] = _bern(rng, r["Male"])
    female_share = 1.0 - r["Male"]
    # Bald is male-only; hair colour is one category for everybody else.
    a["Bald"] = male and _bern(rng, r["Bald"] / r["Male"])
    hair_names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
    not_bald = 1.0 - r["Bald"]
    probabilities = [r[n] / not_bald for n in hair_names]
    choice = rng.choice(5, p=probabilities + [1.0 - sum(probabilities)])
    for index, name in enumerate(hair_names):
        a[name] = (not a["Bald"]) and choice == index
    a["hair"] = "Bald" if a["Bald"] else (hair_names[choice] if choice < 4 else "other")
    # Facial hair: men only. No_Beard is the complement of beard presence.
    has_beard = male and _bern(rng, (1.0 - r["No_Beard"]) / r["Male"])
    a["No_Beard"] = not has_beard
    a["Goatee"] = has_beard and _bern(rng, r["Goatee"] / (1.0 - r["No_Beard"]))
    a["Mustache"] = has_beard and _bern(rng, r["Mustache"] / (1.0 - r["No_Beard"]))
    a["Sideburns"] = has_beard and _bern(rng, r["Sideburns"] / (1.0 - r["No_Beard"]))
    a["5_o_Clock_Shadow"] = male and _bern(rng, r["5_o_Clock_Shadow"] / r["Male"])
    a["Heavy_Makeup"] = (not male) and _bern(rng, r["Heavy_Makeup"] / female_share)
    lipstick_given_female = r["Wearing_Lipstick"] / female_share
    lipstick_given_makeup = 0.95
    makeup_given_female = r["Heavy_Makeup"] / female_share
    lipstick_given_plain = (lipstick_given_female - makeup_given_female * lipstick_given_makeup) / (1 - makeup_given_female)
    a["Wearing_Lipstick"] = (not male) and _bern(rng, lipstick_given_makeup if a["Heavy_Makeup"] else lipstick_given_plain)
    a["Wearing_Earrings"] = (not male) and _bern(rng, r["Wearing_Earrings"] / female_share)
    a["Wearing_Necktie"] = male and _bern(rng, r["Wearing_Necktie"] / r["Male"])
    # Smiling drives High_Cheekbones and an open mouth, as in the real data.
    smiling = a["Smiling"] = _bern(rng, r["Smiling"])
    cheek_if_smiling = 0.80
    cheek_if_not = (r["High_Cheekbones"] - r["Smiling"] * cheek_if_smiling) / (1 - r["Smiling"])
    a["High_Cheekbones"] = _bern(rng, cheek_if_smiling if smiling else cheek_if_not)
    open_if_smiling = 0.70
    open_if_not = (r["Mouth_Slightly_Open"] - r["Smiling"] * open_if_smiling) / (1 - r["Smiling"])
    a["Mouth_Slightly_Open"] = _bern(rng, open_if_smiling if smiling else open_if_not)
    a["Straight_Hair"] = (not a["Bald"]) and _bern(rng, r["Straight_Hair"] / not_bald)
    a["Wavy_Hair"] = (not a["Bald"]) and (not a["Straight_Hair"]) and _bern(rng, r["Wavy_Hair"] / (not_bald - r["Straight_Hair"]))
    for name in CELEBA_ATTRIBUTES:
        if name not in a:
            a[name] = _bern(rng, _noise_free_rate(r[name], LABEL_NOISE[name]) if name in LABEL_NOISE else r[name])
    return a


def noisy_labels(attributes: dict[str, bool], rng: np.random.Generator) -> np.ndarray:
    """Return the 40 0/1 labels in CelebA order, with the subjective ones flipped at ``LABEL_NOISE`` rates."""
    labels = np.array([attributes[name] for name in CELEBA_ATTRIBUTES], dtype=np.uint8)
    for name, flip in LABEL_NOISE.items():
        if rng.random() < flip:
            index = CELEBA_ATTRIBUTES.index(name)
            labels[index] = 1 - labels[index]
    return labels


def _jitter(rng: np.random.Generator, rgb, amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


@dataclass
class _Face:
    """Where a drawn face sits and its colours: centre, half sizes, skin, hair and the dark line colour."""

    cx: int
    cy: int
    half_w: int
    half_h: int
    skin: tuple
    hair: tuple
    dark: tuple = (60, 40, 30)


def _draw_body(d, f: _Face, a: dict, rng) -> None:
    """Clothes, neck and the accessories below the face."""
    cx, cy, half_h = f.cx, f.cy, f.half_h
    d.ellipse([cx - 95, cy + half_h + 10, cx + 95, cy + half_h + 160], fill=_jitter(rng, (70, 80, 110), 50))
    d.rectangle([cx - 18, cy + half_h - 14, cx + 18, cy + half_h + 26], fill=f.skin)
    if a["Wearing_Necktie"]:
        top = cy + half_h + 22
        d.polygon([(cx - 10, top), (cx + 10, top), (cx + 15, top + 50), (cx, top + 62), (cx - 15, top + 50)], fill=(180, 15, 30))
    if a["Wearing_Necklace"]:
        y = cy + half_h + 16
        for t in np.linspace(-1.0, 1.0, 11):
            x, yy = cx + 24 * t, y + 12 * (1 - t * t)
            d.ellipse([x - 4, yy - 4, x + 4, yy + 4], fill=(245, 215, 50))


def _draw_head(d, f: _Face, a: dict, rng) -> None:
    """Hair behind the head (long side hair marks women), the face, the hairline, hair texture, hat, sideburns, earrings."""
    cx, cy, half_w, half_h, hair = f.cx, f.cy, f.half_w, f.half_h, f.hair
    if a["hair"] != "Bald":
        d.ellipse([cx - half_w - 12, cy - half_h - 18, cx + half_w + 12, cy + 14], fill=hair)
        if not a["Male"]:
            d.rectangle([cx - half_w - 14, cy - 14, cx - half_w + 8, cy + half_h + 30], fill=hair)
            d.rectangle([cx + half_w - 8, cy - 14, cx + half_w + 14, cy + half_h + 30], fill=hair)
    d.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=f.skin)
    if a["Double_Chin"]:
        d.arc([cx - 28, cy + half_h - 18, cx + 28, cy + half_h + 12], 20, 160, fill=(115, 75, 55), width=5)
    hairline = cy - half_h + (26 if a["Receding_Hairline"] else 10)
    if a["hair"] != "Bald":
        d.chord([cx - half_w, cy - half_h - 8, cx + half_w, hairline + 14], 180, 360, fill=hair)
        if a["Bangs"]:
            d.rectangle([cx - half_w + 8, hairline, cx + half_w - 8, hairline + 22], fill=hair)
        line_colour = tuple(max(0, c - 70) for c in hair)
        if a["Straight_Hair"]:
            for x in range(cx - half_w - 10, cx + half_w + 10, 7):
                d.line([(x, cy - half_h - 14), (x, hairline + 4)], fill=line_colour, width=3)
        if a["Wavy_Hair"]:
            for y in range(cy - half_h - 12, hairline + 4, 7):
                points = [(x, y + 3 * np.sin(x / 4.0)) for x in range(cx - half_w - 10, cx + half_w + 10, 2)]
                d.line(points, fill=line_colour, width=3)
    if a["Wearing_Hat"]:
        hat = _jitter(rng, (40, 60, 140), 40)
        d.rectangle([cx - half_w - 20, cy - half_h + 4, cx + half_w + 20, cy - half_h + 16], fill=hat)
        d.rectangle([cx - half_w + 2, cy - half_h - 34, cx + half_w - 2, cy - half_h + 8], fill=hat)
    if a["Sideburns"]:
        for side in (-1, 1):
            x = cx + side * (half_w - 6)
            d.rectangle([x - 6, cy - 18, x + 6, cy + 20], fill=(40, 30, 25))
    if a["Wearing_Earrings"]:
        for x in (cx - half_w - 3, cx + half_w + 3):
            d.ellipse([x - 7, cy + 10, x + 7, cy + 24], fill=(250, 215, 40))


def _draw_eyes(d, f: _Face, a: dict) -> None:
    """Eyes, brows, make-up, bags and glasses."""
    cx, eye_y = f.cx, f.cy - 16
    brow_width = 8 if a["Bushy_Eyebrows"] else 3
    eye_h = 3 if a["Narrow_Eyes"] else 8
    for side in (-1, 1):
        ex = cx + side * 20
        if a["Heavy_Makeup"]:
            d.ellipse([ex - 15, eye_y - 13, ex + 15, eye_y + 5], fill=(140, 50, 155))
        if a["Arched_Eyebrows"]:
            d.arc([ex - 15, eye_y - 26, ex + 15, eye_y - 6], 200, 340, fill=f.dark, width=brow_width)
        else:
            d.line([(ex - 14, eye_y - 14), (ex + 14, eye_y - 14)], fill=f.dark, width=brow_width)
        d.ellipse([ex - 10, eye_y - eye_h, ex + 10, eye_y + eye_h], fill=(250, 250, 250))
        d.ellipse([ex - 4, eye_y - min(eye_h, 4), ex + 4, eye_y + min(eye_h, 4)], fill=(30, 30, 60))
        if a["Bags_Under_Eyes"]:
            d.arc([ex - 12, eye_y + 3, ex + 12, eye_y + 17], 20, 160, fill=(105, 60, 60), width=4)
        if a["Eyeglasses"]:
            d.rectangle([ex - 16, eye_y - 12, ex + 16, eye_y + 12], outline=(10, 10, 10), width=4)
    if a["Eyeglasses"]:
        d.line([(cx - 4, eye_y), (cx + 4, eye_y)], fill=(10, 10, 10), width=4)


def _draw_cheeks_and_nose(d, f: _Face, a: dict) -> None:
    """Cheeks, dimples of attractiveness, lines of age, and the nose."""
    cx, cy, skin, eye_y = f.cx, f.cy, f.skin, f.cy - 16
    for side in (-1, 1):
        if a["Rosy_Cheeks"]:
            d.ellipse([cx + side * 30 - 11, cy + 4, cx + side * 30 + 11, cy + 22], fill=(225, 85, 95))
        if a["High_Cheekbones"]:
            d.ellipse([cx + side * 28 - 10, cy - 6, cx + side * 28 + 10, cy + 2], fill=tuple(min(255, c + 45) for c in skin))
    if a["Attractive"]:
        for side in (-1, 1):
            d.ellipse([cx + side * 33 - 5, cy + 28, cx + side * 33 + 5, cy + 38], fill=tuple(min(255, c + 50) for c in skin))
    if not a["Young"]:
        # Crow's feet beside the eyes and lines from nose to mouth corners.
        for side in (-1, 1):
            for k in (-5, 0, 5):
                d.line([(cx + side * 33, eye_y + k), (cx + side * 42, eye_y + 2 * k)], fill=(110, 75, 60), width=2)
            d.line([(cx + side * 12, cy + 16), (cx + side * 24, cy + 40)], fill=(110, 75, 60), width=3)
    nose_w = 13 if a["Big_Nose"] else 7
    nose_len = 24 if a["Big_Nose"] else 16
    if a["Pointy_Nose"]:
        d.polygon(
            [(cx, cy - 6), (cx - nose_w + 2, cy + nose_len), (cx + nose_w - 2, cy + nose_len)], outline=(115, 75, 55), width=3
        )
        d.line([(cx, cy + nose_len), (cx, cy + nose_len + 5)], fill=(115, 75, 55), width=3)
    else:
        d.ellipse([cx - nose_w, cy + nose_len - 9, cx + nose_w, cy + nose_len + 2], outline=(115, 75, 55), width=3)


def _draw_mouth(d, f: _Face, a: dict, rng) -> None:
    """Facial hair under the mouth, then the mouth."""
    cx, cy, half_w, half_h = f.cx, f.cy, f.half_w, f.half_h
    mouth_y = cy + 38
    if a["5_o_Clock_Shadow"]:
        for _ in range(220):
            x = cx + rng.integers(-half_w + 10, half_w - 9)
            y = mouth_y + rng.integers(-12, half_h - 40)
            d.rectangle([int(x), int(y), int(x) + 1, int(y) + 1], fill=(75, 65, 60))
    if not a["No_Beard"]:
        d.chord([cx - half_w + 4, cy + 10, cx + half_w - 4, cy + half_h + 3], 0, 180, fill=(60, 44, 36))
    if a["Goatee"]:
        d.ellipse([cx - 14, mouth_y + 10, cx + 14, cy + half_h - 2], fill=(40, 28, 22))
    if a["Mustache"]:
        d.rectangle([cx - 20, mouth_y - 12, cx + 20, mouth_y - 5], fill=(40, 28, 22))
    lip = (205, 15, 50) if a["Wearing_Lipstick"] else (155, 85, 75)
    lip_width = 8 if a["Big_Lips"] else 3
    if a["Mouth_Slightly_Open"]:
        d.ellipse([cx - 12, mouth_y - 3, cx + 12, mouth_y + 10], fill=(50, 10, 20))
    if a["Smiling"]:
        d.arc([cx - 22, mouth_y - 18, cx + 22, mouth_y + 12], 20, 160, fill=lip, width=lip_width)
    else:
        d.line([(cx - 18, mouth_y + 3), (cx + 18, mouth_y + 3)], fill=lip, width=lip_width)


def draw_face(a: dict[str, bool], rng: np.random.Generator) -> Image.Image:
    """Return a 178x218 RGB picture showing the attributes ``a``.

    The face fills the frame as in aligned CelebA (about 92 x 120 px) and every cue is at least
    3-4 px thick, so it survives a CNN's early stride-2 reductions: small cues that vanish there
    cannot be learned in a few thousand training steps, which is all the default study affords.
    The parts are drawn in a fixed order, each taking its random numbers from ``rng`` in turn, so
    image ``i`` of a seed never changes.
    """
    image = Image.new("RGB", (WIDTH, HEIGHT), _jitter(rng, (rng.integers(60, 200),) * 3, 40))
    cx = WIDTH // 2 + int(rng.integers(-5, 6))
    cy = 100 + int(rng.integers(-5, 6))
    half_w = 44 + (14 if a["Chubby"] else 0) + (-6 if a["Oval_Face"] else 0) + int(rng.integers(-2, 3))
    half_h = 58 + (10 if a["Oval_Face"] else 0) + int(rng.integers(-2, 3))
    skin = (240, 228, 218) if a["Pale_Skin"] else _jitter(rng, (190, 140, 105), 18)
    face = _Face(cx, cy, half_w, half_h, skin, _jitter(rng, HAIR_RGB.get(a["hair"], skin), 10))
    d = ImageDraw.Draw(image)
    _draw_body(d, face, a, rng)
    _draw_head(d, face, a, rng)
    _draw_eyes(d, face, a)
    _draw_cheeks_and_nose(d, face, a)
    _draw_mouth(d, face, a, rng)
    if a["Blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(radius=3.0))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(HEIGHT, WIDTH, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_example(seed: int, index: int) -> tuple[Image.Image, np.ndarray]:
    """Return image ``index`` of the set with this ``seed`` and its 40 noisy 0/1 labels."""
    rng = np.random.default_rng([seed, index])
    attributes = sample_attributes(rng)
    return draw_face(attributes, rng), noisy_labels(attributes, rng)


def format_attr_row(image_name: str, labels: np.ndarray) -> str:
    """Return one row of ``list_attr_celeba.txt`` as the official file writes it (' %2d' per label)."""
    return image_name + "".join(f" {1 if v else -1:2d}" for v in labels)


def split_of_index(index: int, n_images: int) -> int:
    """Return the split (0 train, 1 val, 2 test) of image ``index``: CelebA's 80/10/10 proportions."""
    n_train = int(round(0.8 * n_images))
    n_val = int(round(0.1 * n_images))
    return 0 if index < n_train else (1 if index < n_train + n_val else 2)


_CHUNK = 250


def _write_chunk(image_dir: str, seed: int, start: int, stop: int) -> list[str]:
    """Write images ``start``..``stop - 1`` and return their rows of ``list_attr_celeba.txt``."""
    rows = []
    for index in range(start, stop):
        name = f"{index + 1:06d}.jpg"
        image, labels = make_example(seed, index)
        image.save(os.path.join(image_dir, name), quality=95)
        rows.append(format_attr_row(name, labels))
    return rows


def _write_images(image_dir: str, seed: int, n_images: int):
    """Yield the attribute rows of every image in order, chunk by chunk, written by one process per core where processes
    fork (each image depends on its seed and index alone: the same files either way; 10.5 s -> 5.6 s for the default's
    10,000 on machine D's 2 cores)."""
    chunks = [(start, min(start + _CHUNK, n_images)) for start in range(0, n_images, _CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (_write_chunk(image_dir, seed, start, stop) for start, stop in chunks)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(_write_chunk, *zip(*[(image_dir, seed, start, stop) for start, stop in chunks]))


def write_synthetic_celeba(root: str | os.PathLike, n_images: int, seed: int = 0, progress=None) -> str:
    """Write ``n_images`` synthetic faces into ``root`` in CelebA's official layout; return ``root``.

    The folder gets ``img_align_celeba/NNNNNN.jpg`` (178x218, JPEG quality 95),
    ``list_attr_celeba.txt`` (count line, header, ' %2d' labels, CRLF as in the real file) and
    ``list_eval_partition.txt``. It is built in a temporary sibling and renamed into place, so an
    interrupted run never leaves a half-written set behind. ``progress`` is a tqdm-style factory
    (see ``bench.progress``).

    Raises:
        ValueError: ``n_images`` < 10 (every split needs at least one image).
        FileExistsError: ``root`` already exists.
    """
    root = os.fspath(root)
    if n_images < 10:
        raise ValueError(f"n_images must be >= 10 so that train/val/test are non-empty, got {n_images}")
    if os.path.exists(root):
        raise FileExistsError(f"{root!r} exists already; remove it to regenerate")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    work = partial_name(os.path.join(parent, "." + os.path.basename(root)))
    os.makedirs(work)
    bar = (progress or null_progress)(total=n_images, desc="generating synthetic images")
    try:
        image_dir = os.path.join(work, "img_align_celeba")
        os.makedirs(image_dir)
        attr_rows = []
        for rows in _write_images(image_dir, seed, n_images):
            attr_rows += rows
            bar.update(len(rows))
        partition_rows = [f"{index + 1:06d}.jpg {split_of_index(index, n_images)}" for index in range(n_images)]
        header = [str(n_images), " ".join(CELEBA_ATTRIBUTES) + " "]
        with open(os.path.join(work, "list_attr_celeba.txt"), "w", newline="") as handle:
            handle.write("\r\n".join(header + attr_rows) + "\r\n")
        with open(os.path.join(work, "list_eval_partition.txt"), "w", newline="") as handle:
            handle.write("\r\n".join(partition_rows) + "\r\n")
        os.rename(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        bar.close()
    _logger.info("wrote %d synthetic images to %s", n_images, root)
    return root


def default_cache_dir() -> str:
    """Return the cache folder: ``$SLIMBENCH_CACHE`` if set, else ``~/.cache/slimbench``."""
    return os.environ.get("SLIMBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "slimbench")


# What one synthetic image takes on disk, JPEG and its share of the attribute lists: 187 MB for 10,000 (machine D, ext4).
BYTES_PER_IMAGE = 20_000


def check_disk_for(n_images: int, folder: str) -> None:
    """Check that ``folder``'s file system has room for a synthetic set of ``n_images`` (:data:`BYTES_PER_IMAGE` each,
    with 10 % to spare) before a byte of it is written.

    Raises:
        ValueError: not enough free space (the setting, the space needed and the space free named).
    """
    import shutil

    needed, free = int(1.1 * n_images * BYTES_PER_IMAGE), shutil.disk_usage(folder).free
    if needed > free:
        raise ValueError(
            f"data.synthetic_images: {n_images:,} images need about {needed / 1e9:,.1f} GB in {folder}; "
            f"{free / 1e9:,.1f} GB are free (set fewer images, or data.cache_dir on a larger disk)"
        )


def ensure_synthetic_celeba(n_images: int, seed: int = 0, cache_dir: str | None = None, progress=None) -> str:
    """Return the folder of the synthetic set for ``(n_images, seed)``, generating it on first use.

    Raises:
        ValueError: ``n_images`` < 10, or not enough free disk for them (:func:`check_disk_for`).
    """
    folder = cache_dir or default_cache_dir()
    root = os.path.join(folder, f"synthetic-celeba-v{GENERATOR_VERSION}-seed{seed}-n{n_images}")
    if not os.path.isdir(root):
        os.makedirs(folder, exist_ok=True)
        check_disk_for(n_images, folder)
        remove_stale_partials(folder)  # sets half-written by killed runs
        with file_lock(root):  # two runs asking for one new set: the second waits and reuses it
            if not os.path.isdir(root):
                write_synthetic_celeba(root, n_images, seed, progress=progress)
    return root
