"""`dicefer evaluate`: rebuild a run from its folder, score it, and write RUN/report/."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dicefer.config import TrainConfig, apply_overrides
from dicefer.data.base import CONTEMPT, FaceSet
from dicefer.data.registry import load_dataset
from dicefer.data.spec import DataSpec
from dicefer.errors import ConfigError, RunError
from dicefer.evaluation.calibration import calibration_report
from dicefer.evaluation.identity import identity_reading, reference_embeddings
from dicefer.evaluation.metrics import (
    classification_metrics,
    group_mutual_information_gap,
    identity_probe,
    mutual_information_gap,
)
from dicefer.evaluation.report import write_report
from dicefer.models import build
from dicefer.models.codes import encode_faces
from dicefer.paths import shown
from dicefer.run import LoadedRun, read_metrics

STAGE1_DIAGNOSTICS = ("mi_global", "mi_local", "code_std", "l1_pair", "l1_nonpair")


# Data settings an evaluation may change: which split and how the data is read, never the model's input.
EVALUATION_DATA = ("eval_split", "strict", "fold", "folds", "peak_frames", "aligned", "face_box")


def evaluate_run(run_dir: Path, data_spec: str | None = None, splits: tuple[FaceSet, FaceSet] | None = None,
                 identity_reference: Path | None = None, data_settings: Sequence[str] = ()) -> dict:
    """Score the run (on `data_spec` if given, else the dataset it trained on) and write RUN/report/.
    `splits`: (train, test) as training loaded them, so that they are read (and warned about) once.
    `data_settings`: KEY=VALUE for the data.* settings in EVALUATION_DATA (data.eval_split=test, ...)."""
    run = LoadedRun(run_dir)
    cfg: TrainConfig = run.config
    if data_spec:
        # Another dataset is read with the model's classes: contempt only where the model predicts it.
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, spec=DataSpec.parse(data_spec),
                                                                contempt=CONTEMPT in run.classes))
    for setting in data_settings:
        key = setting.split("=", 1)[0].strip()
        if key.removeprefix("data.") not in EVALUATION_DATA or not key.startswith("data."):
            raise ConfigError(f"evaluate --set {shown(key)}: only {', '.join('data.' + k for k in EVALUATION_DATA)} "
                              "may change at evaluation (the rest is the trained model's)")
    cfg = apply_overrides(cfg, list(data_settings))
    train_set, test_set = splits or load_dataset(cfg)
    classes = run.classes
    if classes[:len(test_set.classes)] != test_set.classes:
        raise RunError(f"the model predicts {', '.join(classes)} but {test_set.name} has {', '.join(test_set.classes)}")

    def codes_of(faces: FaceSet, module: str) -> np.ndarray:
        return encode_faces(run[module], faces, build.face_input(cfg))

    def logits(codes: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return run["classifier"](torch.from_numpy(codes)).numpy()

    e_train, e_test = codes_of(train_set, "expression"), codes_of(test_set, "expression")
    test_logits = logits(e_test)
    predicted = test_logits.argmax(1)
    codes = {"E": e_test}
    if "identity" in run.modules:
        codes["I"] = codes_of(test_set, "identity")
    reference = identity_reference or cfg.identity_reference
    reading = (identity_reading(codes, reference_embeddings(Path(reference), test_set), test_set.expression, cfg.seed)
               if reference else {"identity_r2": None, "face_embedding_r2": None})
    report = {
        "dataset": str(cfg.data.spec),
        "method": cfg.method,
        "classes": list(classes),
        "evaluated_split": test_set.split,
        test_set.split: classification_metrics(test_set.expression, predicted, classes),
        "train": classification_metrics(train_set.expression, logits(e_train).argmax(1), classes),
        "calibration": calibration_report(test_logits, test_set.expression, run.calibration),
        "disentanglement": disentanglement(codes, test_set.expression, test_set.identity, cfg.seed,
                                           np.eye(len(classes))[predicted]) | reading,
        "run": {"evaluated_on": test_set.name, **run_summary(run_dir, cfg)},
    }
    write_report(Path(run_dir) / "report", report, codes=codes, expression=test_set.expression,
                 identity=test_set.identity, metrics_log=Path(run_dir) / "metrics.jsonl", logits=test_logits)
    return report


def disentanglement(codes: dict[str, np.ndarray], expression: np.ndarray, identity: np.ndarray | None, seed: int,
                     predicted: np.ndarray | None = None) -> dict:
    """MIG over (expression, identity), group MIG (E and I as two latents, over the factors the dataset
    labels; none for a method without I) and linear identity probes, on the test identities' images.

    `predicted` (one-hot predicted expressions) gets the same probe: a classifier's mistakes depend
    on the person (one face's neutral reads as sad, every time), so its decisions alone carry some
    identity, and a code that yields those decisions can hardly read less (docs/method-notes.md).
    """
    factors = {"expression": expression} if identity is None else {"expression": expression, "identity": identity}
    group = group_mutual_information_gap(codes, factors, seed) if len(codes) > 1 else None
    grouped = {"mig_group": group and group["mig_group"], "mig_group_per_factor": group and group["per_factor"]}
    if identity is None:
        return {**grouped, "mig": None, "identity_probe_accuracy_E": None, "identity_probe_accuracy_I": None,
                "identity_probe_whitened_E": None, "identity_probe_whitened_I": None, "identity_probe_predictions": None,
                "identity_probe_sd": None, "identity_probe_fits": None, "chance_identity": None, "note": "the dataset has no identity labels, so identity cannot be measured"}
    mig = mutual_information_gap(np.concatenate(list(codes.values()), axis=1),
                                 {"expression": expression, "identity": identity})
    probes = {(name, whiten): identity_probe(code, identity, seed, whiten) for name, code in codes.items() for whiten in (False, True)}
    read = lambda name, whiten: probes[name, whiten]["accuracy"] if (name, whiten) in probes else None
    out = {
        "mig": mig["mig"], "mig_per_factor": mig["per_factor"], **grouped,
        "identity_probe_accuracy_E": read("E", False),
        "identity_probe_accuracy_I": read("I", False),
        "identity_probe_whitened_E": read("E", True),
        "identity_probe_whitened_I": read("I", True),
        "identity_probe_predictions": None if predicted is None else identity_probe(predicted, identity, seed)["accuracy"],
        # the spread of a single half-split fit, of which each reading above is the mean
        "identity_probe_sd": {("whitened_" if whiten else "") + name: probe["accuracy_sd"]
                              for (name, whiten), probe in probes.items()},
        "identity_probe_fits": probes["E", False]["fits"],
        "chance_identity": probes["E", False]["chance"],
    }
    if "I" not in codes:
        out["note"] = "this method learns no identity code, so the probes on I are n/a"
    return out


def run_summary(run_dir: Path, cfg: TrainConfig) -> dict:
    """Config essentials, throughput per stage, and Stage 1's collapse diagnostics at its last epoch."""
    face = build.face_input(cfg)
    summary: dict = {"backbone": cfg.model.backbone, "input_size": cfg.data.size, "input_width": face.width,
                     "scaling": face.scaling, "batch_size": cfg.batch_size, "mi_estimator": cfg.mi.estimator, "seed": cfg.seed}
    log = Path(run_dir) / "metrics.jsonl"
    records = read_metrics(log) if log.is_file() else []
    for stage in ("stage1", "stage2", "stage3", "finetune", "supervised"):
        rows = [r for r in records if r["stage"] == stage]
        if rows:
            summary[f"{stage}_epochs"] = len(rows)
            summary[f"{stage}_images_per_s"] = round(float(np.median([r["images_per_s"] for r in rows])), 2)
            summary[f"{stage}_time_s"] = round(sum(r["time_s"] for r in rows), 1)
    last_stage1 = [r for r in records if r["stage"] == "stage1"][-1:]
    for key in STAGE1_DIAGNOSTICS:
        if last_stage1 and key in last_stage1[0]:
            summary[f"stage1_final_{key}"] = last_stage1[0][key]
    return summary
