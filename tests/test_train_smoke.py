"""End to end: smoke runs of both methods write a valid report, Stage 1 does not collapse,
the same seed gives the same metrics, and user errors are one-line messages."""
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from dicefer.cli import main
from dicefer.data.base import CLASSES


def train(out: Path, *args: str) -> int:
    return main(["train", "--preset", "smoke", "--out", str(out), "--quiet", *args])


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert train(root / "dicefer") == 0
    assert train(root / "supervised", "--method", "supervised") == 0
    return root


def read_report(run: Path) -> dict:
    return json.loads((run / "report" / "report.json").read_text())


@pytest.mark.parametrize("method", ["dicefer", "supervised"])
def test_report_is_valid(runs, method):
    run = runs / method
    report = read_report(run)
    assert report["method"] == method and report["classes"] == list(CLASSES)
    for split in ("train", "test"):
        m = report[split]
        confusion = m["confusion"]
        assert len(confusion) == 7 and all(len(row) == 7 and all(isinstance(v, int) for v in row) for row in confusion)
        assert sum(map(sum, confusion)) == sum(c["support"] for c in m["per_class"].values())
        assert m["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(7)) / sum(map(sum, confusion)))
        assert set(m["per_class"]) == set(CLASSES) and 0 <= m["macro_f1"] <= 1
    d = report["disentanglement"]
    assert 0 < d["chance_identity"] < 1 and 0 <= d["identity_probe_accuracy_E"] <= 1
    assert (d["identity_probe_accuracy_I"] is None) == (method == "supervised")
    assert 0 <= d["identity_probe_whitened_E"] <= 1 and 0 <= d["identity_probe_predictions"] <= 1
    assert (d["identity_probe_whitened_I"] is None) == (method == "supervised")
    assert d["identity_probe_fits"] == 10 and set(d["identity_probe_sd"]) == (
        {"E", "whitened_E"} if method == "supervised" else {"E", "I", "whitened_E", "whitened_I"})
    for png in ("confusion_test.png", "confusion_train.png", "embedding.png", "training_curves.png"):
        assert Image.open(run / "report" / png).size[0] > 300
    assert "Surprise" in (run / "report" / "report.md").read_text()
    assert (run / "config.yaml").is_file() and (run / "model.safetensors").is_file()


def test_stage1_does_not_collapse(runs):
    """The public reproduction's failure: MI estimate never above zero, pairs no closer than non-pairs."""
    rows = [json.loads(line) for line in (runs / "dicefer" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["stage"] == "stage1"][-1]
    assert last["mi"] > 0.1, last  # nats, mu * global + nu * local
    assert last["l1_pair"] < 0.9 * last["l1_nonpair"], last
    assert last["code_std"] > 0.05, last


def test_same_seed_same_metrics(tmp_path):
    short = ["stage1.epochs=2", "stage3.epochs=5"]
    assert train(tmp_path / "a", *short) == 0 and train(tmp_path / "b", *short) == 0
    first, second = read_report(tmp_path / "a"), read_report(tmp_path / "b")
    for key in ("test", "train", "disentanglement"):
        assert first[key] == second[key]
    assert train(tmp_path / "c", *short, "--seed", "1") == 0
    assert read_report(tmp_path / "c")["train"] != first["train"]


def test_evaluate_rewrites_the_same_report(runs):
    before = read_report(runs / "dicefer")
    assert main(["evaluate", "--run", str(runs / "dicefer")]) == 0
    after = read_report(runs / "dicefer")
    assert after["test"] == before["test"] and after["disentanglement"] == before["disentanglement"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "imagenet"], "unknown dataset spec 'imagenet'; valid: synthetic"),
    (["train", "--set", "stage1.epochz=1"], "unknown config key 'stage1.epochz'"),
    (["evaluate", "--run", "/nonexistent/run"], "run folder /nonexistent/run does not exist"),
])
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "r"), "--preset", "smoke"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_existing_run_folder_is_not_overwritten(runs, capsys):
    assert train(runs / "dicefer") == 2
    assert "already exists" in capsys.readouterr().err


def test_folder_without_model_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


def test_finetune_changes_only_the_expression_encoder_and_classifier(tmp_path):
    from conftest import TINY
    from safetensors.torch import load_file

    from dicefer.config import build_config

    # Both runs here, with the same thread count: other tests change it, and with it the last bits of the weights.
    assert train(tmp_path / "frozen", *TINY, "threads=1") == 0
    assert train(tmp_path / "ft", *TINY, "threads=1", "stage3.finetune_epochs=1") == 0
    stages = [json.loads(line)["stage"] for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert stages[-1] == "finetune" and stages.count("finetune") == 1
    frozen, tuned = load_file(tmp_path / "frozen" / "model.safetensors"), load_file(tmp_path / "ft" / "model.safetensors")
    changed = {name.split(".")[0] for name in frozen if not (frozen[name] == tuned[name]).all()}
    assert changed == {"expression", "classifier"}  # Stages 1-3 are the same run; the identity encoder is untouched
    # The baseline's default budget counts the fine-tuning epochs: the same images through an encoder.
    cfg = build_config("smoke", None, ["stage3.finetune_epochs=3"])
    assert cfg.supervised_epochs() == cfg.stage1.epochs + cfg.stage2.epochs + 3


def test_cpu_bf16_run_trains_and_records_its_precision(tmp_path):
    from conftest import TINY

    assert train(tmp_path / "bf16", *TINY, "--precision", "bf16") == 0
    assert "precision: bf16" in (tmp_path / "bf16" / "config.yaml").read_text()
    stage1 = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0])
    assert stage1["stage"] == "stage1" and stage1["code_std"] > 0 and stage1["l1_pair"] > 0
    assert all(math.isfinite(v) for v in stage1.values() if isinstance(v, float))


def test_the_method_works_on_the_smoke_faces(runs):
    """Not just a valid report: with the demo preset's own options (Stage 1 cross-entropy head, the
    pair L1 on whitened codes held back until the MI estimate passes 0.1 nats, fine-tuning that keeps
    the L1), DICE-FER recognises expressions of unseen people far above chance, and its expression
    code holds less identity than the supervised baseline's code."""
    run = runs / "demo-options"
    assert train(run, "--set", "stage1.ce_weight=1", "stage1.l1_scale=whitened", "stage1.delta=1", "stage1.l1_after_mi=0.1",
                 "stage3.finetune_epochs=10", "stage3.finetune_delta=100") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gate = [r["l1_active"] for r in rows if r["stage"] == "stage1"]
    assert gate[0] < 1 and gate[-1] == 1  # the L1 waited for the MI estimate, then came in
    assert [r["stage"] for r in rows].count("finetune") == 10
    ours, baseline = read_report(run), read_report(runs / "supervised")
    chance = 1 / len(CLASSES)
    assert ours["test"]["accuracy"] > 2 * chance, ours["test"]["accuracy"]
    e, e_baseline = (r["disentanglement"]["identity_probe_accuracy_E"] for r in (ours, baseline))
    assert e < e_baseline and e < ours["disentanglement"]["identity_probe_accuracy_I"], (e, e_baseline)
