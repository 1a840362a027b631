"""Bad input gives a clear one-line error (exit 2, no traceback) or, for unreadable images, one
warning that counts and names them (an error under --strict); odd image modes are converted."""
import logging
import os
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from trees import class_tree, face, fer_csv, rafdb_tree, write

from dicefer.cli import main
from dicefer.config import DataConfig, TrainConfig
from dicefer.data.images import UnreadableImage, decode
from dicefer.data.listing import DataError
from dicefer.data.registry import load_dataset
from dicefer.data.spec import DataSpec


def run_error(capsys, tmp_path: Path, *args: str) -> str:
    """Run `dicefer train` expecting a user error: exit 2, no traceback; return the message line."""
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}):
        rc = main(["train", "--preset", "smoke", "--quiet", "--out", str(tmp_path / "run"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dicefer: error: ")
    assert not (tmp_path / "run").exists(), "a failed start must leave no run folder that blocks the next attempt"
    return last


def load(spec, tmp_path: Path, **data):
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}):
        return load_dataset(TrainConfig(data=DataConfig(spec=DataSpec.parse(spec), size=32, **data)))


def test_unknown_spec_lists_the_valid_ones(capsys, tmp_path):
    line = run_error(capsys, tmp_path, "--data", "mnist:/x")
    assert "unknown dataset spec 'mnist:/x'" in line and "rafdb:PATH" in line and "folder:PATH" in line and "synthetic" in line


def test_path_that_does_not_exist(capsys, tmp_path):
    line = run_error(capsys, tmp_path, "--data", f"rafdb:{tmp_path / 'nowhere'}")
    assert f"{tmp_path / 'nowhere'} does not exist" in line


def test_missing_label_file_names_it_and_the_layout(capsys, tmp_path):
    (tmp_path / "raf" / "Image" / "aligned").mkdir(parents=True)
    line = run_error(capsys, tmp_path, "--data", f"rafdb:{tmp_path / 'raf'}")
    assert "EmoLabel/list_patition_label.txt does not exist" in line and "expected RAF-DB's basic/ folder" in line


def test_missing_split_folder_names_it_and_the_layout(capsys, tmp_path):
    class_tree(tmp_path / "d", {"test": {"happy": 1}})
    line = run_error(capsys, tmp_path, "--data", f"folder:{tmp_path / 'd'}")
    assert f"{tmp_path / 'd' / 'train'} is not a folder" in line and "one sub-folder per class" in line


@pytest.mark.parametrize("bad, message", [("train_00002.jpg", "line 2: 'train_00002.jpg'; expected an image name and a label"),
                                          ("train_00002.jpg five", "line 2: unknown label 'five'; RAF-DB labels are 1..7"),
                                          ("train_00002.jpg 9", "line 2: unknown label '9'; RAF-DB labels are 1..7"),
                                          ("val_00002.jpg 3", "line 2: val_00002.jpg starts with neither train_ nor test_")])
def test_malformed_or_unknown_rafdb_label_names_file_and_line(tmp_path, bad, message):
    basic = rafdb_tree(tmp_path / "raf", ["train_00001.jpg 1", "test_0001.jpg 2"])
    labels = basic / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(f"train_00001.jpg 1\n{bad}\ntest_0001.jpg 2\n")
    with pytest.raises(DataError) as err:
        load(f"rafdb:{basic}", tmp_path)
    assert str(err.value).startswith(f"{labels}, {message}")


def test_fer2013_csv_bad_rows(tmp_path, caplog):
    good = np.zeros((48, 48), dtype=np.uint8)
    path = fer_csv(tmp_path / "fer.csv", [(0, "Training", good), (9, "Training", good)])
    with pytest.raises(DataError, match=r"fer\.csv, line 3: unknown emotion '9'"):
        load(f"fer2013:{path}", tmp_path)
    path = fer_csv(tmp_path / "fer.csv", [(0, "Training", good), (1, "Testing", good)])
    with pytest.raises(DataError, match=r"fer\.csv, line 3: unknown Usage 'Testing'"):
        load(f"fer2013:{path}", tmp_path)
    path.write_text("emotion,pixels,Usage\n0,1 2 3,Training,extra\n")
    with pytest.raises(DataError, match=r"fer\.csv, line 2: 4 fields, expected 3"):
        load(f"fer2013:{path}", tmp_path)
    path = fer_csv(tmp_path / "fer.csv", [(0, "Training", good), (1, "Training", "1 2 3"), (2, "PublicTest", good)])
    train, _ = load(f"fer2013:{path}", tmp_path)
    assert len(train) == 1 and "fer.csv:3 (expected 2304 pixel values 0..255, got 3 values)" in caplog.text


def unreadable_tree(root: Path) -> Path:
    class_tree(root, {"train": {"happy": 3, "sad": 2}, "test": {"happy": 1}})
    (root / "train" / "happy" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    buffer = root / "train" / "sad" / "whole.jpg"
    face(5, 64, "RGB").save(buffer, quality=95)
    (root / "train" / "sad" / "truncated.jpg").write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    buffer.unlink()
    (root / "train" / "sad" / "empty.png").write_bytes(b"")
    return root


def test_unreadable_images_are_skipped_with_one_warning(tmp_path, caplog):
    root = unreadable_tree(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="dicefer"):
        train, _ = load(f"folder:{root}", tmp_path)
    assert len(train) == 5 and not any(s.endswith(("corrupt.jpg", "truncated.jpg", "empty.png")) for s in train.sources)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "folder train: 3 of 8 images cannot be read" in warnings[0]
    assert "corrupt.jpg (not an image PIL can read)" in warnings[0] and "empty.png (empty file)" in warnings[0]
    assert "truncated.jpg (cannot be decoded" in warnings[0] and "--strict" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicefer"):
        load(f"folder:{root}", tmp_path)  # from the cache: the same warning, not silence
    assert "3 of 8 images cannot be read" in caplog.text


def test_unreadable_images_fail_under_strict(capsys, tmp_path):
    root = unreadable_tree(tmp_path / "d")
    line = run_error(capsys, tmp_path, "--data", f"folder:{root}", "--strict")
    assert "folder train: 3 of 8 images cannot be read: " in line and "corrupt.jpg" in line


def test_listed_image_that_does_not_exist(tmp_path, caplog):
    basic = rafdb_tree(tmp_path / "raf", ["train_00001.jpg 1", "train_00002.jpg 2", "test_0001.jpg 3"])
    missing = basic / "Image" / "aligned" / "train_00002_aligned.jpg"
    missing.unlink()
    train, _ = load(f"rafdb:{basic}", tmp_path)
    assert len(train) == 1 and f"{missing} (file does not exist)" in caplog.text
    with pytest.raises(DataError, match="train_00002_aligned.jpg \\(file does not exist\\)"):
        load(f"rafdb:{basic}", tmp_path, strict=True)


def test_empty_class_folder(tmp_path):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2}, "test": {"happy": 1}})
    (root / "train" / "fear").mkdir()
    with pytest.raises(DataError, match=r"train/fear holds no images: an empty class"):
        load(f"folder:{root}", tmp_path)


def test_unknown_class_folder(tmp_path):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2, "bored": 1}, "test": {"happy": 1}})
    with pytest.raises(DataError, match=r"'bored' is not an expression class; class folders are named \(any case\) surprise"):
        load(f"folder:{root}", tmp_path)


def test_non_image_files_are_ignored_with_a_warning(tmp_path, caplog):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2}, "test": {"happy": 1}})
    (root / "train" / "happy" / "notes.txt").write_text("labelled by A.")
    (root / "train" / "happy" / ".DS_Store").write_bytes(b"\0\1")
    train, _ = load(f"folder:{root}", tmp_path)
    assert len(train) == 2 and "ignored 1 entries that are not image files" in caplog.text and "notes.txt" in caplog.text


def test_odd_image_modes_are_converted_not_rejected(tmp_path):
    folder = tmp_path / "d" / "train" / "happy"
    write(folder / "gray.png", Image.new("L", (32, 32), 77))
    write(folder / "rgba.png", Image.new("RGBA", (32, 32), (0, 0, 0, 0)))  # fully transparent: white
    write(folder / "sixteen.png", Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16)))
    write(folder / "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 0, 0, 0)))  # no ink: white
    write(folder / "palette.gif", Image.new("P", (32, 32), 0))
    class_tree(tmp_path / "d", {"test": {"happy": 1}})
    gray, _ = load(f"folder:{tmp_path / 'd'}", tmp_path)
    rgb, _ = load(f"folder:{tmp_path / 'd'}", tmp_path, grayscale=False)
    by_name = {Path(s).name: i for i, s in enumerate(gray.sources)}
    assert len(gray) == 5 and rgb.images.shape == (5, 32, 32, 3)
    assert (gray.images[by_name["gray.png"]] == 77).all()
    assert (gray.images[by_name["rgba.png"]] == 255).all()
    assert (gray.images[by_name["sixteen.png"]] == 255).all()  # scaled, not clipped to 255 from 65535 by accident
    assert (gray.images[by_name["cmyk.jpg"]] >= 250).all()


def test_sixteen_bit_mid_grey_is_scaled_not_clipped(tmp_path):
    write(tmp_path / "d" / "train" / "happy" / "mid.png", Image.fromarray(np.full((32, 32), 32896, dtype=np.uint16)))
    class_tree(tmp_path / "d", {"test": {"happy": 1}})
    train, _ = load(f"folder:{tmp_path / 'd'}", tmp_path)
    assert (train.images[0] == 128).all()


def test_an_image_pil_cannot_convert_is_skipped_and_a_run_warns_once(tmp_path, caplog, monkeypatch):
    """PIL's failures while converting go the skip path, and a whole train + report warns once. A LAB
    TIFF, which the dataset decoder once converted straight to L (unsupported), is read through RGB
    now, as predict reads it."""
    with pytest.raises(UnreadableImage, match=r"cannot be decoded \(ValueError: conversion from La to"):
        decode(lambda: Image.new("La", (24, 24)), 32, True)
    root = class_tree(tmp_path / "d", {"train": {"happy": 6, "sad": 6}, "test": {"happy": 2, "sad": 2}})
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).convert("LAB").save(root / "train" / "sad" / "lab.tif")
    png = root / "train" / "sad" / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:300])  # truncated
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING, logger="dicefer"):
        assert main(["train", "--preset", "smoke", "--data", f"folder:{root}", "--out", str(tmp_path / "run"), "--quiet",
                     "--set", "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1"]) == 0
    skipped = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(skipped) == 1 and "cut.png (cannot be decoded" in skipped[0] and "lab.tif" not in skipped[0]
    assert (decode(lambda: Image.open(root / "train" / "sad" / "lab.tif"), 24, True) == 90).all()


def test_no_stage1_epochs_is_said(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dicefer"):
        assert main(["train", "--preset", "smoke", "--out", str(tmp_path / "run"), "--quiet", "--set", "stage1.epochs=0",
                     "stage2.epochs=1", "stage3.epochs=1", "data.train_identities=4", "data.test_identities=2",
                     "data.images_per_identity=10"]) == 0
    assert "stage1.epochs=0: Stage 2 and the classifier use the expression encoder as model.init=random" in caplog.text


@pytest.mark.parametrize("pixel, why", [("99999999999999999999", "'99999999999999999999' (number 2) is not a whole number 0..255"),
                                        ("300", "pixel value 300 (number 2) is not a whole number 0..255")])
def test_fer2013_pixel_out_of_range_is_skipped_with_its_reason(tmp_path, caplog, pixel, why):
    """Issue case 4 (an OverflowError traceback before) and the minor 'got 2304 values' report."""
    good = np.zeros((48, 48), dtype=np.uint8)
    bad = "0 " + pixel + " 0" * 2302
    path = fer_csv(tmp_path / "fer.csv", [(0, "Training", good), (1, "Training", bad), (2, "PublicTest", good)])
    with caplog.at_level(logging.WARNING, logger="dicefer"):
        train, _ = load(f"fer2013:{path}", tmp_path)
    assert len(train) == 1 and why in caplog.text


@pytest.mark.parametrize("spec", ["fer2013", "rafdb"])
def test_a_superscript_digit_label_is_a_data_error(tmp_path, spec):
    """Issue case 5: '²'.isdigit() is True but int('²') fails."""
    if spec == "fer2013":
        path = fer_csv(tmp_path / "fer.csv", [(0, "Training", np.zeros((48, 48), np.uint8)), ("²", "Training", "0")])
        with pytest.raises(DataError, match=r"fer\.csv, line 3: unknown emotion '²'"):
            load(f"fer2013:{path}", tmp_path)
    else:
        basic = rafdb_tree(tmp_path / "raf", ["train_00001.jpg 1", "test_0001.jpg 2"])
        (basic / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg ²\ntest_0001.jpg 2\n")
        with pytest.raises(DataError, match=r"list_patition_label\.txt, line 1: unknown label '²'"):
            load(f"rafdb:{basic}", tmp_path)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_ckplus_emotion_file_holding_nan_or_inf_is_a_data_error(tmp_path, text):
    """Issue case 7."""
    root = tmp_path / "ck"
    label = root / "Emotion" / "S005" / "001" / "S005_001_00000011_emotion.txt"
    label.parent.mkdir(parents=True)
    label.write_text(f"   {text}\n")
    frames = root / "cohn-kanade-images" / "S005" / "001"
    for k in range(3):
        write(frames / f"S005_001_0000001{k}.png", face(k, 24))
    with pytest.raises(DataError, match=rf"S005_001_00000011_emotion\.txt, line 1: unknown emotion code '{re.escape(text)}'"):
        load(f"ckplus:{root}", tmp_path)
