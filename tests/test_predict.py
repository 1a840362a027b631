"""`dicefer predict` and ExpressionRecognizer: inputs of every kind, records, annotation, user
errors, and preprocessing that is exactly what the encoder saw in training."""
import csv
import itertools
import json
import re
import runpy
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import face_photo
from PIL import Image

from dicefer import ExpressionRecognizer
from dicefer.cli import main
from dicefer.data.base import CLASSES, FaceSet
from dicefer.data.images import load_image, to_luma
from dicefer.data.synthetic import SyntheticSpec, render_face
from dicefer.data.torch_datasets import Faces, evaluation_faces, resize_all
from dicefer.data.transforms import FaceInput, Preprocess
from dicefer.inference.detectors import HaarDetector
from dicefer.inference.framing import Framing, square_crop
from dicefer.inference.preprocess import InputSpec


def predict(capsys, *argv: str) -> tuple[int, list[dict], list[str]]:
    """(exit code, JSON records on stdout, stderr lines without progress bars)."""
    code = main(["predict", "--quiet", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], [e for e in err.splitlines() if e.strip()]


def assert_valid_face(record: dict) -> None:
    assert len(record["box"]) == 4 and all(isinstance(v, int) and v >= 0 for v in record["box"])
    p = record["probabilities"]
    assert list(p) == list(CLASSES) and sum(p.values()) == pytest.approx(1, abs=1e-6)
    assert record["label"] == max(p, key=p.get)


def bomb_png(path: Path, side: int = 30000) -> None:
    """A valid PNG header announcing side x side pixels, 10 times PIL's limit, and almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_folders_globs_and_records(tiny_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(face_photo(0, 3)).save(photos / "a.png")
    Image.fromarray(face_photo(4, 0)).save(photos / "sub" / "b.jpg")  # found by the recursive folder search
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(photos / "empty.png")
    (photos / "broken.png").write_text("not an image")
    (photos / "notes.txt").write_text("not an input")  # ignored in folders: not an image suffix
    Image.fromarray(face_photo(6, 5)).save(tmp_path / "c.png")
    code, records, err = predict(capsys, "--run", str(tiny_run), str(photos), str(tmp_path / "*.png"),
                                 str(tmp_path / "missing.jpg"), "--annotate", str(tmp_path / "annotated"))
    assert code == 0
    by_source = {Path(r["source"]).name: r for r in records}
    assert sorted(by_source) == ["a.png", "b.jpg", "c.png", "empty.png"] and len(records) == 4
    for name in ("a.png", "b.jpg", "c.png"):
        assert_valid_face(by_source[name])
        assert "frame" not in by_source[name]
    assert by_source["empty.png"]["note"] == "no face detected" and by_source["empty.png"]["box"] is None
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 2 and "broken.png" in warnings[0] + warnings[1] and "missing.jpg" in warnings[0] + warnings[1]
    assert "3 faces in 4 images, 2 inputs skipped" in err[-1]
    annotated = sorted(p.name for p in (tmp_path / "annotated").iterdir())
    assert annotated == ["a.jpg", "b.jpg", "c.jpg", "empty.jpg"]
    drawn = np.asarray(Image.open(tmp_path / "annotated" / "a.jpg"))
    assert drawn.shape == (192, 192, 3) and (np.abs(drawn[..., 1].astype(int) - drawn[..., 0]) > 100).sum() > 100  # a green box


def test_csv_output(tiny_run, tmp_path, capsys):
    Image.fromarray(face_photo(0, 1)).save(tmp_path / "a.png")
    assert main(["predict", "--quiet", "--run", str(tiny_run), str(tmp_path / "a.png"), "--out", str(tmp_path / "f.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert capsys.readouterr().out == "" and len(rows) == 1
    assert list(rows[0]) == ["source", "frame", "time", "x", "y", "w", "h", "label", *CLASSES, "note", "track"]
    assert sum(float(rows[0][c]) for c in CLASSES) == pytest.approx(1, abs=1e-5) and rows[0]["label"] in CLASSES


def face_video(path: Path) -> Path:
    """25 frames of a rendered face at 10 frames/s (MJPG)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (192, 192))
    for i in range(25):
        writer.write(cv2.cvtColor(face_photo(0, i % 7), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_video_every_nth_frame(tiny_run, tmp_path, capsys):
    video = face_video(tmp_path / "clip.avi")
    code, records, _ = predict(capsys, "--run", str(tiny_run), str(video), "--every", "10")
    assert code == 0
    assert [(r["frame"], r["time"]) for r in records] == [(0, 0.0), (10, 1.0), (20, 2.0)]
    for r in records:
        assert_valid_face(r)
    assert [r["track"] for r in records] == [1, 1, 1]  # one person, one track through the video


def test_video_smoothing_averages_a_tracks_probabilities(tiny_run, tmp_path, capsys):
    video = face_video(tmp_path / "clip.avi")
    raw = predict(capsys, "--run", str(tiny_run), str(video), "--every", "5")[1]
    smooth = predict(capsys, "--run", str(tiny_run), str(video), "--every", "5", "--smooth", "3")[1]
    assert len(raw) == len(smooth) == 5 and smooth[0]["probabilities"] == raw[0]["probabilities"]
    for i in range(1, 5):
        window = raw[max(0, i - 2):i + 1]
        expected = {c: np.mean([r["probabilities"][c] for r in window]) for c in raw[i]["probabilities"]}
        assert smooth[i]["probabilities"] == pytest.approx(expected)
    assert main(["predict", "--quiet", "--run", str(tiny_run), str(video), "--smooth", "0"]) == 2
    assert "--smooth must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "exif"])
def test_image_modes_load_as_the_same_picture(tmp_path, mode):
    gray = face_photo(0, 3)
    path = tmp_path / f"face-{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
        assert Image.open(path).mode.startswith("I")
    elif mode == "exif":  # stored lying on its side, with the EXIF tag that says "rotate 90 degrees clockwise"
        path = path.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.rot90(gray)).convert("RGB").save(path, exif=exif, quality=100)
    elif mode == "RGBA":
        rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
        rgba[:10, :10, 3] = 0  # transparent corner: composited on white
        Image.fromarray(rgba).save(path)
    else:
        Image.fromarray(gray).convert(mode).save(path)
    loaded = load_image(path)
    luma = loaded if loaded.ndim == 2 else loaded[..., :3].mean(axis=2)
    if mode == "exif":
        assert np.abs(luma - gray).mean() < 2  # JPEG, but upright: a sideways face would differ by tens
    elif mode == "RGBA":
        assert (luma[:10, :10] == 255).all() and (luma[10:] == gray[10:]).all()
    else:
        assert (luma == gray).all()


def test_unreadable_and_huge_images_are_skipped_with_a_message(tiny_run, tmp_path, capsys):
    bomb_png(tmp_path / "bomb.png")
    (tmp_path / "text.jpg").write_text("hello")
    code, records, err = predict(capsys, "--run", str(tiny_run), str(tmp_path / "bomb.png"), str(tmp_path / "text.jpg"))
    assert code == 2 and records == []
    assert any("bomb.png" in line and "decompression bomb" in line for line in err)
    assert any("text.jpg" in line and "not an image" in line for line in err)
    assert err[-1] == "dicefer: error: nothing could be processed: none of the 2 inputs gave a readable image"


@pytest.mark.parametrize("argv, message", [
    (["--run", "{tmp}"], "model.safetensors is missing"),
    (["--run", "{tmp}/nope"], "run folder {tmp}/nope does not exist"),
    (["--run", "{run}", "--detector", "yunet"], "--detector yunet needs --detector-model PATH"),
    (["--run", "{run}", "--detector", "yunet", "--detector-model", "{tmp}/yunet.onnx"], "YuNet model file {tmp}/yunet.onnx does not exist"),
    (["--run", "{run}", "--every", "0"], "--every must be at least 1"),
])
def test_user_errors_are_one_line(tiny_run, tmp_path, capsys, argv, message):
    Image.fromarray(face_photo()).save(tmp_path / "a.png")
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    code, _, err = predict(capsys, *argv, str(tmp_path / "a.png"))
    assert code == 2 and len(err) == 1 and err[0].startswith("dicefer: error: ")
    assert message.format(tmp=tmp_path) in err[0]


def test_api_accepts_paths_pil_images_and_arrays(tiny_run, tmp_path):
    rec = ExpressionRecognizer.from_run(tiny_run)
    photo = np.dstack([face_photo(4, 2)] * 3)
    Image.fromarray(photo).save(tmp_path / "p.png")
    results = [rec.predict(x) for x in (tmp_path / "p.png", str(tmp_path / "p.png"), Image.open(tmp_path / "p.png"), photo)]
    assert len(results[0]) == 1 and all(r == results[0] for r in results)
    face = results[0][0]
    assert face.label in CLASSES and face.probabilities[face.label] == max(face.probabilities.values())
    assert rec.predict(np.full((64, 64), 128, np.uint8)) == []


def test_predict_many_detects_in_parallel_as_one_by_one(tiny_run):
    """Photos searched by the thread pool give the faces that searching them one at a time gives,
    and every searching thread has its own cascade (a cascade keeps per-image state)."""
    rec = ExpressionRecognizer.from_run(tiny_run)
    photos = [np.dstack([face_photo(i, e)] * 3) for i in (0, 1, 4, 6) for e in range(3)]
    together = rec.predict_many(photos)
    assert rec._pool is not None
    one_by_one = [rec.predict(p) for p in photos]
    assert [[f.box for f in faces] for faces in together] == [[f.box for f in faces] for faces in one_by_one]
    pairs = zip(itertools.chain(*together), itertools.chain(*one_by_one), strict=True)
    for a, b in pairs:  # a batch of all faces against batches of one: float rounding only
        assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=1e-5)
    assert sum(bool(faces) for faces in together) >= 9  # identities 0, 4 and 6 are always found
    cascades = []
    threads = [threading.Thread(target=lambda: cascades.append(rec.detector._cascade())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cascades) == 2 and cascades[0] is not cascades[1]


def test_haar_search_split_by_face_size_finds_the_same_faces():
    """One photo's search split in two ranges of face size (run at once, merged afterwards) gives
    exactly the boxes of one search: photos with no face, one, and two of different sizes."""
    detector, pool = HaarDetector(), ThreadPoolExecutor(2)
    two = np.full((240, 400), 128, np.uint8)
    two[20:92, 20:92] = render_face(SyntheticSpec(size=72), 0, 3)
    two[60:220, 200:360] = render_face(SyntheticSpec(size=160), 4, 1)
    photos = [two, np.full((200, 300), 90, np.uint8), *(np.dstack([face_photo(i, e)] * 3) for i in (0, 4, 6) for e in (0, 5))]
    split = [detector(p, pool=pool) for p in photos]
    assert split == [detector(p) for p in photos]
    assert len(split[0]) == 2 and split[1] == [] and all(len(found) == 1 for found in split[2:])
    sizes = sorted(box[2] for box in split[0])
    assert sizes[0] <= detector._split_size(two.shape, detector.min_size) < sizes[1]  # each half found one face
    pool.shutdown()


def test_embed_gives_expression_and_identity_codes(tiny_run):
    rec = ExpressionRecognizer.from_run(tiny_run, detector="none")
    crops = [render_face(SyntheticSpec(size=64), i, e) for i, e in [(0, 0), (0, 3), (4, 3)]]
    codes = rec.embed(crops)
    assert set(codes) == {"expression", "identity"}
    assert codes["expression"].shape == codes["identity"].shape == (3, 64)
    assert not np.allclose(codes["expression"][0], codes["expression"][1])
    assert np.allclose(rec.embed(crops[:1])["expression"], codes["expression"][:1], atol=1e-5)  # batching changes nothing


@pytest.mark.parametrize("width, scaling", [(32, "whiten"), (27, "centred")])  # ResNet-18's input, MobileFaceNet's
def test_preprocessing_is_what_training_fed_the_encoder(width, scaling):
    """A face crop through InputSpec equals the same image through the training dataset (no augmentation)."""
    images = np.stack([render_face(SyntheticSpec(size=64), i, e, nuisance=True) for i, e in [(0, 1), (3, 4)]])
    faces = FaceSet(images, np.array([1, 4]), None, "t")
    cases = ((True, [images[0], np.dstack([images[1]] * 3)]), (False, list(images)))
    for grayscale, crops in cases:
        face = FaceInput(32, width, grayscale, scaling)
        trained = Faces(resize_all(faces if grayscale else FaceSet(np.stack([np.dstack([i] * 3) for i in images]),
                                                                  faces.expression, None, "t"), face),
                        faces.expression, Preprocess(face, "none"))
        expected = torch.stack([trained[0][0], trained[1][0]])
        assert expected.shape == (2, face.channels, 32, width)
        assert torch.equal(InputSpec(face, CLASSES).batch(crops), expected)


def test_square_crop_pads_at_the_image_edge():
    image = np.arange(100 * 80, dtype=np.uint8).reshape(80, 100)
    crop = square_crop(image, (0, 10, 20, 10), Framing.from_margin(0.5))  # square side 40, centred at (10, 15)
    assert crop.shape == (40, 40)
    assert (crop[:, :10] == crop[:, 10:11]).all()  # the left edge repeated where the box leaves the image
    assert (crop[5:, 10:] == image[:35, :30]).all()
    assert square_crop(np.zeros((50, 60, 3), np.uint8), (10, 5, 30, 20), Framing()).shape == (30, 30, 3)


def test_readme_example_runs(tiny_run, tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(tiny_run)
    Image.fromarray(face_photo(0, 3)).convert("RGB").save(tmp_path / "photo.jpg")
    (tmp_path / "example.py").write_text(code)
    namespace = runpy.run_path(str(tmp_path / "example.py"))
    assert namespace["faces"] and set(namespace["codes"]) == {"expression", "identity"}


def test_luma_is_pils_convert_l_bit_for_bit():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(to_luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("grayscale", [True, False])
def test_predict_feeds_what_evaluation_feeds_on_resized_dataset_faces(tmp_path, grayscale, monkeypatch):
    """RAF-DB's aligned faces are 100 px RGB JPEGs; at data.size=112 the dataset cache converts and
    resizes them. predict (--detector none) must give the encoder the same tensors from the same files."""
    from trees import rafdb_tree

    from dicefer.config import build_config
    from dicefer.data.registry import load_dataset

    basic = rafdb_tree(tmp_path / "raf", ["train_00001.jpg 1", "train_00002.jpg 2", "test_0001.jpg 3", "test_0002.jpg 5"])
    for k, path in enumerate(sorted((basic / "Image" / "aligned").glob("*.jpg"))):
        Image.fromarray(render_face(SyntheticSpec(size=100), k, k, nuisance=True)).convert("RGB").rotate(3 * k).save(path)
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path / "cache"))
    cfg = build_config("smoke", None, [f"data.spec=rafdb:{basic}", "data.size=112", f"data.grayscale={str(grayscale).lower()}"])
    _, test = load_dataset(cfg, progress=False)
    face = FaceInput(112, 112, grayscale)
    evaluated = evaluation_faces(test, face)
    expected = torch.stack([evaluated[i][0] for i in range(len(test))])
    spec = InputSpec(face, CLASSES)
    assert torch.equal(spec.batch([load_image(source) for source in test.sources]), expected)


@pytest.mark.parametrize("out, message", [("missing/f.jsonl", "does not exist; create it first"),
                                          (".", "is a folder; give a file to write")])
def test_predict_out_that_cannot_be_written_is_one_line(tiny_run, tmp_path, capsys, out, message):
    Image.fromarray(face_photo()).save(tmp_path / "a.png")
    assert main(["predict", "--quiet", "--run", str(tiny_run), str(tmp_path / "a.png"), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_a_damaged_video_is_one_warning_and_frames_are_counted_as_frames(tiny_run, tmp_path, capfd):
    video = face_video(tmp_path / "clip.avi")
    (tmp_path / "damaged.mp4").write_bytes(b"garbage" * 100)
    assert main(["predict", "--quiet", "--run", str(tiny_run), str(video), str(tmp_path / "damaged.mp4")]) == 0
    err = capfd.readouterr().err  # file-descriptor level: FFmpeg writes there itself
    assert "moov atom" not in err and "damaged.mp4" in err
    assert "in 3 video frames, 1 inputs skipped" in err.strip().splitlines()[-1]
