"""Round two of bad input: every case ends in one line that names the problem (exit 2, no
traceback), a refused start leaves nothing behind, and no output path replaces or deletes a file
that dicefer did not write."""
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import face_photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from trees import class_tree, face, fer_csv, rafdb_tree, write

from dicefer.cli import main
from dicefer.config import build_config
from dicefer.data.registry import load_dataset
from dicefer.errors import ConfigError, UserError
from dicefer.inference.preprocess import InputSpec
from dicefer.paths import SHOWN, output_file

ONE_LINE = 300  # characters: a message longer than this echoes too much


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("dicefer: error: ") and "Traceback" not in "\n".join(err), err
    assert len(err[-1]) < ONE_LINE, err[-1]
    return err[-1]


def train_error(capsys, tmp_path: Path, *args: str) -> str:
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}):
        return error_of(capsys, ["train", "--preset", "smoke", "--quiet", "--out", str(tmp_path / "run"), *args])


def test_a_config_that_is_a_folder(capsys, tmp_path):
    (tmp_path / "cfg").mkdir()
    assert "is a folder; give a YAML file" in train_error(capsys, tmp_path, "--config", str(tmp_path / "cfg"))


@pytest.mark.parametrize("setting, says", [
    ("data.train_identities=0", "must be at least 1"), ("data.test_identities=0", "must be at least 2"),
    ("data.test_identities=1", "identity probes need it"), ("data.images_per_identity=1", "identity probes need it"),
    ("data.min_intensity=-5", "between 0 and 1"), ("data.size=20000", "must be 32 to 1024"),
    ("data.size=1000", "GiB of synthetic faces"),  # within the size limit, but 13,200 faces of 1000 px: too much memory
])
def test_synthetic_settings_are_checked_before_anything_is_rendered(capsys, tmp_path, setting, says):
    with mock.patch("dicefer.data.synthetic._render_splits") as render:
        message = train_error(capsys, tmp_path, "data.train_identities=60", "data.images_per_identity=200", setting)
    assert says in message and not render.called


@pytest.mark.parametrize("out", ["/proc/dicefer-test/run", "/sys/dicefer-test"])
def test_train_out_that_cannot_be_created(capsys, out):
    assert "cannot create the folder" in error_of(capsys, ["train", "--preset", "smoke", "--quiet", "--out", out])


def test_a_refused_out_leaves_no_lock_behind(capsys, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert "not a dicefer run folder" in error_of(capsys, ["train", "--preset", "smoke", "--quiet", "--out", str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_init_with_a_text_file(capsys, tmp_path):
    (tmp_path / "weights.pth").write_text("hello\n")
    assert "not a PyTorch or safetensors weights file" in train_error(capsys, tmp_path, "--init", str(tmp_path / "weights.pth"))


def test_data_spec_without_a_path(capsys, tmp_path):
    assert "'fer2013:' needs a path: fer2013:PATH" in train_error(capsys, tmp_path, "--data", "fer2013:")


def test_yaml_aliases_are_refused_and_echoed_values_are_short(capsys, tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]"
                                                      for p, c in zip("abcdef", "bcdefg")]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\nseed: *g\n")
    assert "aliases" in train_error(capsys, tmp_path, "--config", str(tmp_path / "bomb.yaml"))
    long = "x" * 100_000
    assert "characters)" in train_error(capsys, tmp_path, f"seed={long}")
    assert "characters)" in train_error(capsys, tmp_path, f"data.spec={long}")


def test_an_overwrite_keeps_the_users_files_in_report(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "report" / "report.md").write_text("my own notes on this run\n")
    Image.fromarray(face_photo()).save(run / "report" / "confusion_from_paper.png")  # named like a report figure
    message = error_of(capsys, ["train", "--preset", "smoke", "--quiet", "--out", str(run), "--overwrite"])
    assert "report/confusion_from_paper.png" in message and "report/report.md" in message
    assert (run / "report" / "report.md").read_text() == "my own notes on this run\n"
    assert (run / "report" / "confusion_from_paper.png").is_file()


def test_an_overwrite_keeps_the_users_own_config_file(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    mine = "# my settings\nmethod: dicefer\ndata: {size: 32}\nstage1: {epochs: 1}\n"
    (run / "config.yaml").write_text(mine)
    error_of(capsys, ["train", "--preset", "smoke", "--quiet", "--config", str(run / "config.yaml"), "--out", str(run),
                      "--overwrite"])
    assert (run / "config.yaml").read_text() == mine


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path)]) == 0
    return path


def test_export_out_paths(tiny_run, exported, tmp_path, capsys):
    keep = tmp_path / "keep.onnx"
    keep.write_text("my own file")
    run = ["export", "--run", str(tiny_run)]
    assert "was not written by dicefer" in error_of(capsys, [*run, "--out", str(keep)])
    assert keep.read_text() == "my own file"
    assert "is a folder" in error_of(capsys, [*run, "--out", str(tmp_path)])
    assert "does not exist; create it first" in error_of(capsys, [*run, "--int8", "--out", str(tmp_path / "no" / "m.onnx")])
    assert "does not exist" in error_of(capsys, [*run, "--out", "/proc/dicefer-test/m.onnx"])
    shutil.copy(exported, tmp_path / "again.onnx")  # an earlier export may be replaced
    assert main([*run, "--out", str(tmp_path / "again.onnx")]) == 0


def test_predict_onnx_that_is_not_an_export(exported, tmp_path, capsys):
    import onnx

    Image.fromarray(face_photo()).save(tmp_path / "a.png")
    model = onnx.load(str(exported))
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        node.input[:] = ["pixels" if i == "input" else i for i in node.input]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    predict = ["predict", "--quiet", "--detector", "none", str(tmp_path / "a.png"), "--onnx"]
    assert "inputs and outputs of a `dicefer export`" in error_of(capsys, [*predict, str(tmp_path / "renamed.onnx")])
    model = onnx.load(str(exported))
    for prop in model.metadata_props:
        if prop.key in ("grayscale", "classes"):
            prop.value = "{not json"
    onnx.save(model, str(tmp_path / "meta.onnx"))
    assert "metadata is damaged" in error_of(capsys, [*predict, str(tmp_path / "meta.onnx")])
    assert "is a folder" in error_of(capsys, [*predict, str(tmp_path)])


def test_predict_annotate_and_out_paths(tiny_run, tmp_path, capsys):
    Image.fromarray(face_photo()).save(tmp_path / "a.png")
    predict = ["predict", "--quiet", "--run", str(tiny_run), str(tmp_path / "a.png")]
    (tmp_path / "file").write_text("mine")
    assert "is a file; give a folder" in error_of(capsys, [*predict, "--annotate", str(tmp_path / "file")])
    assert "cannot create it" in error_of(capsys, [*predict, "--annotate", "/proc/dicefer-test/annotated"])
    (tmp_path / "notes.jsonl").write_text("my notes, not records\n")
    assert "was not written by dicefer" in error_of(capsys, [*predict, "--out", str(tmp_path / "notes.jsonl")])
    assert (tmp_path / "notes.jsonl").read_text() == "my notes, not records\n"
    # an annotated copy never replaces a user's image of the same name; a second predict replaces its own copy
    shots = tmp_path / "shots"
    shots.mkdir()
    Image.fromarray(face_photo(4)).save(shots / "a.jpg")
    before = (shots / "a.jpg").read_bytes()
    for _ in range(2):
        assert main([*predict, "--annotate", str(shots), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert (shots / "a.jpg").read_bytes() == before and sorted(p.name for p in shots.iterdir()) == ["a-2.jpg", "a.jpg"]


def test_a_byte_order_mark_is_accepted_in_label_files(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48))
    path = fer_csv(tmp_path / "fer" / "fer2013.csv", [(3, "Training", pixels), (4, "Training", pixels),
                                                       (3, "PublicTest", pixels), (5, "PrivateTest", pixels)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Excel saves UTF-8 CSV
    basic = rafdb_tree(tmp_path / "raf", ["train_00001.jpg 1", "train_00002.jpg 4", "test_0001.jpg 3"])
    labels = basic / "EmoLabel" / "list_patition_label.txt"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}):
        for spec in (f"fer2013:{path}", f"rafdb:{basic}"):
            train, test = load_dataset(build_config("smoke", None, [f"data.spec={spec}"]))
            assert len(train) == 2 and len(test) == 1


def test_folder_layout_counts_and_names_what_it_skips(tmp_path, caplog):
    root = class_tree(tmp_path / "d", {"train": {"happy": 2, "sad": 2}, "test": {"happy": 1, "sad": 1}})
    (root / "train" / "happy" / "looks_like.jpg").mkdir()
    os.symlink("loop.png", root / "train" / "sad" / "loop.png")  # a link to itself
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}), \
            caplog.at_level(logging.WARNING, logger="dicefer"):
        train, _ = load_dataset(build_config("smoke", None, [f"data.spec=folder:{root}", "data.eval_split=auto"]))
    assert len(train) == 4 and "ignored 2 entries that are not image files" in caplog.text


def test_evaluate_chooses_the_split(tmp_path, capsys):
    root = class_tree(tmp_path / "d", {s: {c: 3 for c in ("happy", "sad", "angry")} for s in ("train", "val", "test")})
    run = tmp_path / "run"
    with mock.patch.dict(os.environ, {"DICEFER_CACHE": str(tmp_path / "cache")}):
        assert main(["train", "--preset", "smoke", "--quiet", "--out", str(run), "--method", "supervised",
                     "--data", f"folder:{root}", "data.eval_split=val", "supervised.epochs=1", "stage3.epochs=1"]) == 0
        assert json.loads((run / "report" / "report.json").read_text())["run"]["evaluated_on"].endswith("val")
        assert main(["evaluate", "--run", str(run), "--split", "test"]) == 0
        assert json.loads((run / "report" / "report.json").read_text())["run"]["evaluated_on"].endswith("test")
        assert "only data.eval_split" in error_of(capsys, ["evaluate", "--run", str(run), "--set", "data.size=64"])


names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0/"), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, content=st.binary(max_size=200), kind=st.sampled_from(["file", "folder", "missing-parent", "new"]))
def test_output_paths_never_replace_what_dicefer_did_not_write(tmp_path, name, content, kind):
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    path = case / ("sub" if kind == "missing-parent" else "") / name
    if kind == "file":
        path.write_bytes(content)
    elif kind == "folder":
        path.mkdir()
    try:
        output_file(path, "--out", lambda p: False)
    except UserError as err:
        assert "\n" not in str(err) and kind in ("file", "folder", "missing-parent")
        if kind == "file":
            assert path.read_bytes() == content
    else:
        assert kind == "new"


metadata = st.dictionaries(st.sampled_from(["input_size", "input_width", "grayscale", "classes", "scaling", "channels"]),
                           st.one_of(st.text(max_size=30), st.integers().map(str), st.just("[\"a\"]"),
                                     st.just("true"), st.just("whiten")))


@settings(max_examples=200, deadline=None)
@given(meta=metadata)
def test_onnx_metadata_parses_or_is_one_line(meta):
    try:
        spec = InputSpec.from_metadata(meta)
    except UserError as err:
        assert "\n" not in str(err) and len(str(err)) < ONE_LINE
    else:
        assert spec.face.size > 0 and spec.face.width > 0 and spec.classes
        assert InputSpec.from_metadata(spec.to_metadata()) == spec  # what an export writes reads back the same


def test_shown_values_are_capped():
    with pytest.raises(ConfigError) as err:
        build_config("smoke", None, ["method=" + "y" * 10_000])
    assert len(str(err.value)) < SHOWN + 200


def test_too_few_people_for_the_identity_probes_stops_before_training(tmp_path, capsys):
    root = tmp_path / "CK+48"  # two subjects in two folds: one person in the tested fold
    for k, (cls, subject) in enumerate([("anger", "S010"), ("happy", "S010"), ("anger", "S011"), ("happy", "S011")]):
        write(root / cls / f"{subject}_004_0000001{k}.png", face(k))
    with mock.patch("dicefer.training.setup.SameExpressionPairs") as pairs:
        message = train_error(capsys, tmp_path, "--data", f"ckplus:{tmp_path}", "--folds", "2")
    assert "identity probes need at least 2 people" in message and not pairs.called
