"""Dataset specs on tiny generated trees: labels land on the canonical classes, splits and folds are
right, pixels are decoded faithfully, and the decode cache is reused and invalidated correctly."""
import json
import logging
import os
import random
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from trees import class_tree, face, fer_csv, rafdb_tree, write

from dicefer.cli import main
from dicefer.config import DataConfig, TrainConfig
from dicefer.data import cache as cache_module
from dicefer.data import fer2013
from dicefer.data.base import CLASSES, CONTEMPT, canonical_class
from dicefer.data.listing import Listing
from dicefer.data.registry import load_dataset
from dicefer.data.spec import DataSpec
from dicefer.data.transforms import FaceInput, Preprocess

FER2013 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"


def load(spec: str, cache: Path, **data):
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(cache)}):
        return load_dataset(TrainConfig(data=DataConfig(spec=DataSpec.parse(spec), **data)))


def test_class_names_are_matched_case_insensitively():
    assert canonical_class("HAPPY") == canonical_class("Happiness") == "Happiness"
    assert canonical_class(" angry ") == "Anger" and canonical_class("contempt") == CONTEMPT
    assert canonical_class("bored") is None


def test_folder_dataset_maps_class_folders_and_splits(tmp_path):
    root = class_tree(tmp_path / "d", {"train": {"HAPPY": 3, "sad": 2, "Surprise": 1}, "test": {"happy": 1, "SADNESS": 2}})
    train, test = load(f"folder:{root}", tmp_path / "cache", size=32)
    assert train.classes == CLASSES and train.identity is None
    assert sorted(train.expression.tolist()) == sorted([3] * 3 + [4] * 2 + [0])
    assert test.name == "folder test" and sorted(test.expression.tolist()) == [3, 4, 4]
    assert train.images.shape == (6, 32, 32) and train.images.dtype == np.uint8
    for source, label in zip(train.sources, train.expression):
        assert canonical_class(Path(source).parent.name) == CLASSES[label]


def test_eval_split_auto_prefers_test_and_val_is_selectable(tmp_path):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2}, "val": {"happy": 3}})
    assert load(f"folder:{root}", tmp_path / "c", size=32)[1].name == "folder val"
    class_tree(root, {"test": {"sad": 1}})
    assert load(f"folder:{root}", tmp_path / "c", size=32)[1].name == "folder test"
    assert len(load(f"folder:{root}", tmp_path / "c", size=32, eval_split="val")[1]) == 3


def test_rgb_and_grayscale_decoding_match_pil(tmp_path):
    root = tmp_path / "d"
    write(root / "train" / "happy" / "a.png", face(7, 32, "RGB"))
    train_gray = load_train(root, tmp_path, grayscale=True)
    train_rgb = load_train(root, tmp_path, grayscale=False)
    original = Image.open(root / "train" / "happy" / "a.png")
    assert np.array_equal(train_rgb.images[0], np.asarray(original))
    assert np.array_equal(train_gray.images[0], np.asarray(original.convert("L")))


def load_train(root: Path, tmp_path: Path, **data):
    class_tree(root, {"test": {"happy": 1}})
    return load(f"folder:{root}", tmp_path / "c", size=32, **data)[0]


def test_rafdb_labels_splits_and_aligned_images(tmp_path):
    lines = ["train_00001.jpg 1", "train_00002.jpg 4", "train_00003.jpg 7", "test_0001.jpg 6", "test_0002.jpg 2"]
    basic = rafdb_tree(tmp_path / "raf", lines)
    train, test = load(f"rafdb:{basic}", tmp_path / "c", size=32)
    assert [CLASSES[y] for y in train.expression] == ["Surprise", "Happiness", "Neutral"]
    assert [CLASSES[y] for y in test.expression] == ["Anger", "Fear"]
    assert train.sources[0].endswith("aligned/train_00001_aligned.jpg")
    _, test_original = load(f"rafdb:{tmp_path / 'raf'}", tmp_path / "c", size=32, aligned=False)  # parent of basic/ works too
    assert test_original.sources[0].endswith("original/test_0001.jpg")


def test_fer2013_csv_splits_labels_and_exact_pixels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (48, 48)) for _ in range(4)]
    path = fer_csv(tmp_path / "fer" / "fer2013.csv", [(0, "Training", pixels[0]), (6, "Training", pixels[1]),
                                                       (3, "PublicTest", pixels[2]), (5, "PrivateTest", pixels[3])])
    train, test = load(f"fer2013:{path.parent}", tmp_path / "c", size=48)
    assert [CLASSES[y] for y in train.expression] == ["Anger", "Neutral"]
    assert test.name == "fer2013 test" and [CLASSES[y] for y in test.expression] == ["Surprise"]
    assert np.array_equal(train.images[1], pixels[1]) and np.array_equal(test.images[0], pixels[3])
    assert train.sources[0] == f"{path}:2"
    _, val = load(f"fer2013:{path}", tmp_path / "c", size=48, eval_split="val")
    assert [CLASSES[y] for y in val.expression] == ["Happiness"]


def test_fer2013_folder_layout(tmp_path):
    root = class_tree(tmp_path / "fer", {"train": {"angry": 2, "disgust": 1}, "val": {"fear": 1}})
    train, val = load(f"fer2013:{root}", tmp_path / "c", size=32)
    assert val.name == "fer2013 val" and sorted(CLASSES[y] for y in train.expression) == ["Anger", "Anger", "Disgust"]


def ckplus_release(root: Path, sequences: dict[tuple[str, str], int], frames: int = 5) -> Path:
    """cohn-kanade-images/S/NNN/*.png and Emotion/S/NNN/*_emotion.txt with the given CK+ codes."""
    for k, ((subject, seq), code) in enumerate(sequences.items()):
        for f in range(1, frames + 1):
            write(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png", face(100 * k + f))
        label = root / "Emotion" / subject / seq / f"{subject}_{seq}_{frames:08d}_emotion.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"   {code:.7e}\n")
    return root


def test_ckplus_release_peak_frames_contempt_and_subject_folds(tmp_path):
    sequences = {(f"S{s:03d}", f"00{q}"): 1 + (s + q) % 7 for s in range(1, 7) for q in (1, 2)}
    root = ckplus_release(tmp_path / "ck", sequences)
    seen_test = set()
    for fold in (1, 2, 3):
        train, test = load(f"ckplus:{root}", tmp_path / "c", size=32, folds=3, fold=fold, peak_frames=2)
        assert train.classes == (*CLASSES, CONTEMPT)
        assert len(train) + len(test) == 2 * len(sequences)
        assert all(Path(s).name.endswith(("_00000004.png", "_00000005.png")) for s in train.sources)
        train_people = {Path(s).name[:4] for s in train.sources}
        test_people = {Path(s).name[:4] for s in test.sources}
        assert not train_people & test_people and len(test_people) == 2
        assert set(test.identity.tolist()) == {int(p[1:]) - 1 for p in test_people}
        seen_test |= test_people
    assert len(seen_test) == 6  # every subject is tested exactly once over the folds
    codes = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # CK+'s 1..7
    for source, label in zip(train.sources + test.sources, np.concatenate([train.expression, test.expression])):
        subject, seq = Path(source).name.split("_")[:2]
        code = sequences[(subject, seq)]
        assert train.classes[label] == canonical_class(codes[code - 1])
    dropped, _ = load(f"ckplus:{root}", tmp_path / "c", size=32, folds=3, contempt=False)
    assert dropped.classes == CLASSES and CONTEMPT not in [dropped.classes[y] for y in dropped.expression]


def test_ckplus48_class_folders(tmp_path):
    root = tmp_path / "CK+48"
    for k, (cls, subject) in enumerate([("anger", "S010"), ("contempt", "S011"), ("happy", "S012"), ("sadness", "S013")]):
        write(root / cls / f"{subject}_004_00000017.png", face(k))
    _, test = load(f"ckplus:{tmp_path}", tmp_path / "c", size=32, folds=2, fold=2)
    assert {Path(s).name[:4] for s in test.sources} == {"S011", "S013"}
    assert sorted(test.classes[y] for y in test.expression) == ["Contempt", "Sadness"]


def test_oulu_takes_last_frames_in_numeric_order(tmp_path):
    for s in range(1, 5):
        for expr in ("Anger", "Happiness"):
            for f in range(12):  # 0.jpeg .. 11.jpeg: name order would put 10, 11 before 2
                write(tmp_path / "oulu" / f"P{s:03d}" / expr / f"{f}.jpeg", face(f))
    train, test = load(f"oulu:{tmp_path / 'oulu'}", tmp_path / "c", size=32, folds=2, fold=1, peak_frames=3)
    assert sorted({Path(s).name for s in train.sources + test.sources}) == ["10.jpeg", "11.jpeg", "9.jpeg"]
    assert len(test) == 2 * 2 * 3 and test.identity is not None


def test_affectnet_csv_codes_contempt_and_face_box(tmp_path):
    root = tmp_path / "an"
    image = np.zeros((40, 40), dtype=np.uint8)
    image[10:30, 5:25] = 200  # the face box
    write(root / "Manually_Annotated_Images" / "1" / "a.png", Image.fromarray(image))
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = ["1/a.png,5,10,20,20,,1,0.1,0.2", "1/a.png,5,10,20,20,,7,0,0", "1/a.png,5,10,20,20,,9,0,0"]
    for name in ("training.csv", "validation.csv"):
        (root / name).write_text("\n".join([header, *rows]) + "\n")
    train, val = load(f"affectnet:{root}", tmp_path / "c", size=32)
    assert [train.classes[y] for y in train.expression] == ["Happiness", "Contempt"] and val.name == "affectnet val"
    assert (train.images[0] == 200).all()  # cropped to the box
    seven, _ = load(f"affectnet:{root}", tmp_path / "c", size=32, contempt=False, face_box=False)
    assert seven.classes == CLASSES and len(seven) == 1 and (seven.images[0] == 0).any()


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2}, "test": {"sad": 1}})
    first, _ = load(f"folder:{root}", tmp_path / "c", size=32)
    assert len(list((tmp_path / "c").glob("faces-*.npy"))) == 2

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")

    with monkeypatch.context() as m:
        m.setattr(cache_module, "decode", no_decoding)
        again, _ = load(f"folder:{root}", tmp_path / "c", size=32)
    assert np.array_equal(first.images, again.images) and isinstance(again.images, np.memmap)
    changed = Path(first.sources[0])
    write(changed, face(99, 24))
    os.utime(changed, ns=(1, 1))
    rebuilt, _ = load(f"folder:{root}", tmp_path / "c", size=32)
    assert not np.array_equal(rebuilt.images[0], first.images[0])
    assert len(list((tmp_path / "c").glob("faces-*.npy"))) == 3
    load(f"folder:{root}", tmp_path / "c", size=40)
    assert len(list((tmp_path / "c").glob("faces-*.npy"))) == 5  # another size, another cache


def test_preprocess_flip_and_scaling():
    x = torch.rand(1, 32, 32)
    face = FaceInput(32, 32, True)
    plain = Preprocess(face, "none")
    whitened = plain(x, None)
    assert abs(float(whitened.mean())) < 1e-4 and float(whitened.std()) == pytest.approx(1.0, rel=1e-3)
    centred = Preprocess(FaceInput(32, 32, True, "centred"), "none")(torch.tensor([[[0.0, 127.5 / 255, 1.0]]]), None)
    assert torch.allclose(centred, torch.tensor([[[-127.5 / 128, 0.0, 127.5 / 128]]]))  # as face recognition scales pixels
    rng = random.Random(0)
    flipped = [Preprocess(face, "flip")(x, rng) for _ in range(20)]
    assert any(torch.equal(f, plain(x, None)) for f in flipped) and any(torch.equal(f, plain(x.flip(-1), None)) for f in flipped)


def test_training_on_a_folder_with_contempt_reports_eight_classes_and_null_identity(tmp_path, monkeypatch):
    """The one tiny training run: no identity labels, so disentanglement is null and report.md says why."""
    classes = {c: 6 for c in ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral", "contempt")}
    root = class_tree(tmp_path / "d", {"train": classes, "test": {c: 2 for c in classes}}, size=32)
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path / "c"))
    rc = main(["train", "--preset", "smoke", "--quiet", "--data", f"folder:{root}", "--out", str(tmp_path / "run"),
               "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=2"])
    assert rc == 0
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert report["classes"] == [*CLASSES, CONTEMPT] and len(report["test"]["confusion"]) == 8
    assert report["test"]["per_class"][CONTEMPT]["support"] == 2
    d = report["disentanglement"]
    assert d["mig"] is None and d["identity_probe_accuracy_E"] is None and "no identity labels" in d["note"]
    assert "no identity labels" in (tmp_path / "run" / "report" / "report.md").read_text()
    assert report["run"]["evaluated_on"] == "folder test"


@pytest.mark.skipif(not (FER2013 / "train").is_dir(), reason="FER2013 is not in ../shared/data/fer2013")
def test_real_fer2013_listing_matches_its_readme(tmp_path, caplog):
    """Counts from ../shared/data/fer2013/README.md; the first val images decode to their own pixels."""
    splits = fer2013.load(FER2013)
    counts = {s: dict(zip(CLASSES, np.bincount(listing.expression, minlength=7).tolist())) for s, listing in splits.items()}
    assert set(splits) == {"train", "val"}
    assert counts["train"] == {"Surprise": 3171, "Fear": 4097, "Disgust": 436, "Happiness": 7215, "Sadness": 4830,
                               "Anger": 3995, "Neutral": 4965}
    assert sum(counts["val"].values()) == 3589 and counts["val"]["Disgust"] == 56
    val = splits["val"]
    first = Listing("fer2013 val head", val.sources[:50], val.expression[:50], None, val.classes)
    faces = cache_module.decode_cached(first, 48, True, tmp_path, progress=False)
    assert np.array_equal(faces.images[7], np.asarray(Image.open(val.sources[7]).convert("L")))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_synthetic_seed_fixes_the_faces_while_the_run_seed_varies(monkeypatch, tmp_path):
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path))

    def faces(seed: int, synthetic_seed: int | None) -> np.ndarray:
        data = DataConfig(size=32, train_identities=2, test_identities=2, images_per_identity=3,
                          synthetic_seed=synthetic_seed)
        train, test = load_dataset(TrainConfig(seed=seed, data=data), progress=False)
        return np.concatenate([train.images, test.images])

    assert np.array_equal(faces(5, 3), faces(3, None))
    assert not np.array_equal(faces(5, None), faces(3, None))
