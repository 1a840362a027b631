"""Property tests: generated rows for every label and pixel parser either parse or raise the
project's own error, naming the file and the line (or, for overrides, the key). Numbers-like text
is weighted towards what Python's parsers half-accept: '²', Arabic-Indic digits, nan, inf, 1e400,
digits beyond int64."""
from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dicefer.config import PRESETS, TrainConfig, build_config, to_dict
from dicefer.data import affectnet, ckplus, fer2013, rafdb
from dicefer.data.images import UnreadableImage
from dicefer.errors import UserError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TRICKY = ["²", "١", "٣", "nan", "NaN", "inf", "-inf", "1e400", "99999999999999999999", "0x1F", "+3", " 3 ", "3.0",
          "-1", "", "7", "0", "1", "3.0000000e+00", "1_000", "\x00", "½", "Ⅻ"]
number_text = st.one_of(st.sampled_from(TRICKY), st.integers(-10**25, 10**25).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=8))


def says_where(err: UserError, path: Path) -> bool:
    return str(path) in str(err) and re.search(r"line \d+", str(err)) is not None


def parses_or_says_where(call, path: Path):
    try:
        return call()
    except UserError as err:
        assert says_where(err, path), str(err)
        return None


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@SETTINGS
@given(st.lists(st.tuples(number_text, st.one_of(st.sampled_from(["Training", "PublicTest", "PrivateTest"]), st.text(max_size=5))),
                min_size=1, max_size=4))
def test_fer2013_csv_labels(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        write_csv(path, ["emotion", "pixels", "Usage"], [[e, "0 " * 2303 + "0", u] for e, u in rows])
        parses_or_says_where(lambda: fer2013.from_csv(path), path)


pixel_value = st.one_of(st.integers(0, 255).map(str), number_text)


@SETTINGS
@given(st.lists(pixel_value, min_size=0, max_size=6), st.booleans())
def test_fer2013_pixels_decode_or_are_unreadable(values, full):
    """A row's pixels (lazily decoded) are an image or an UnreadableImage, the cache's skip path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        pixels = " ".join((["0"] * (2304 - len(values)) if full else []) + values)
        write_csv(path, ["emotion", "pixels", "Usage"], [["3", pixels, "Training"]])
        listing = next(iter(fer2013.from_csv(path).values()))
        try:
            assert isinstance(listing.read(0), Image.Image)
        except UnreadableImage:
            pass


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["train_00001.jpg", "test_00002.jpg", "val_1.jpg", "x"]), number_text),
                min_size=1, max_size=4))
def test_rafdb_label_list(lines):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = root / "EmoLabel" / "list_patition_label.txt"
        labels.parent.mkdir(parents=True)
        (root / "Image" / "aligned").mkdir(parents=True)
        labels.write_text("".join(f"{name} {label}\n" for name, label in lines), encoding="utf-8")
        parses_or_says_where(lambda: rafdb.load(root), labels)


@SETTINGS
@given(number_text)
def test_ckplus_emotion_file(text):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        label = root / "Emotion" / "S005" / "001" / "S005_001_00000011_emotion.txt"
        label.parent.mkdir(parents=True)
        label.write_text(f"   {text}\n", encoding="utf-8")
        frames = root / "cohn-kanade-images" / "S005" / "001"
        frames.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(frames / "S005_001_00000011.png")
        parses_or_says_where(lambda: ckplus._sequences(root, 3), label)


@SETTINGS
@given(st.lists(st.tuples(number_text, number_text, number_text), min_size=1, max_size=3))
def test_affectnet_csv(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training.csv"
        write_csv(path, ["subDirectory_filePath", *affectnet.BOX, "expression"],
                  [["1/a.jpg", x, "0", w, "10", e] for e, x, w in rows])
        parses_or_says_where(lambda: affectnet._read_csv(path, Path(tmp), affectnet.class_list(True), True, "affectnet"), path)


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items()
            for k in (leaf_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])]


KEYS = [k for k in leaf_keys(to_dict(TrainConfig())) if k not in ("model.init", "data.spec")]


@SETTINGS
@given(st.sampled_from(KEYS), st.one_of(number_text, st.sampled_from(["true", "null", "[1, 2]", "{a: 1}", "[", "'x"])))
def test_key_value_overrides(key, value):
    try:
        build_config("smoke", None, [f"{key}={value}"])
    except UserError as err:
        assert key in str(err) or key.split(".")[-1] in str(err), str(err)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), st.one_of(number_text, st.booleans(), st.none()), max_size=3),
       st.sampled_from(list(PRESETS)))
def test_yaml_config_files(values, preset):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        sections: dict[str, list[str]] = {}
        for key, value in values.items():
            section, _, name = key.rpartition(".")
            text = value if isinstance(value, str) else {True: "true", False: "false", None: "null"}[value]
            sections.setdefault(section, []).append(f"  {name}: {text}\n" if section else f"{name}: {text}\n")
        path.write_text("".join((f"{s}:\n" if s else "") + "".join(lines) for s, lines in sections.items()), encoding="utf-8")
        try:
            build_config(preset, path)
        except UserError as err:
            assert str(path) in str(err), str(err)
