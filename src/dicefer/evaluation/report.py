"""Writes an evaluation folder: report.json for machines, report.md and PNG figures for people."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt
import numpy as np

from dicefer.evaluation.calibration import reliability_figure
from dicefer.evaluation.metrics import embedding_2d
from dicefer.run import FIGURE_MARK, REPORT_TITLE, read_metrics

DPI = 120
SPLITS = ("test", "val", "train")
MAX_IDENTITY_LEGEND = 10


def write_report(
    out_dir: Path,
    report: dict,
    *,
    codes: Mapping[str, np.ndarray] | None = None,
    expression: np.ndarray | None = None,
    identity: np.ndarray | None = None,
    metrics_log: Path | None = None,
    logits: np.ndarray | None = None,
) -> None:
    """Write report.json (verbatim), the PNG figures that the inputs allow, and report.md linking them.

    `codes` maps a code name ("E", "I") to an (N, d) array whose rows match `expression`
    and `identity`; `metrics_log` is the JSON-lines training log, one dict per epoch; `logits`
    the classifier's on the evaluated split, rows matching `expression` (the reliability diagram).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=_json_scalar) + "\n")
    classes = list(report["classes"])
    figures: list[str] = []
    for split in SPLITS:
        if split in report:
            name = f"confusion_{split}.png"
            _plot_confusion(out_dir / name, report[split], classes, split.capitalize())
            figures.append(name)
    if codes:
        _plot_embedding(out_dir / "embedding.png", codes, expression, identity, classes)
        figures.append("embedding.png")
    if logits is not None and expression is not None and "calibration" in report:
        split = evaluated_split(report)
        _save(reliability_figure(logits, expression, report["calibration"]["temperature"], split),
              out_dir / "reliability.png")
        figures.append("reliability.png")
    rows = read_metrics(metrics_log) if metrics_log is not None and Path(metrics_log).exists() else []
    if rows and _plot_training_curves(out_dir / "training_curves.png", rows):
        figures.append("training_curves.png")
    (out_dir / "report.md").write_text(_markdown(report, classes, figures))


def evaluated_split(report: dict) -> str:
    """The name of the split a report scored (test or val); reports before it was recorded scored "test"."""
    return report.get("evaluated_split", "test")


def _json_scalar(value: object) -> object:
    """Let numpy scalars from a caller's run summary through json.dumps as python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------- markdown


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "---:") -> list[str]:
    """Markdown table; the first column is left-aligned, the rest use `align`."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join([align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _percent(value: float) -> str:
    return f"{value:.3f} ({100 * value:.1f}%)"


def _markdown(report: dict, classes: list[str], figures: list[str]) -> str:
    lines = [f"{REPORT_TITLE} {report['dataset']} ({report['method']})", ""]
    splits = [s for s in SPLITS if s in report]
    lines += ["## Overall", ""]
    lines += _table(
        ["Split", "Accuracy", "Macro-F1"],
        [[s.capitalize(), _percent(report[s]["accuracy"]), report[s]["macro_f1"]] for s in splits],
    )
    for split in splits:
        lines += ["", f"## {split.capitalize()} confusion matrix", ""]
        confusion = report[split]["confusion"]
        lines += _table(["Actual \\ Predicted", *classes], [[c, *row] for c, row in zip(classes, confusion)])
    split = evaluated_split(report)
    if split in report:
        lines += ["", f"## Class-wise results ({split})", "", *_classwise(report[split])]
    if report.get("calibration"):
        lines += ["", "## Calibration", "", _calibration(report["calibration"], split)]
    lines += ["", "## Disentanglement", "", *_disentanglement(report.get("disentanglement") or {})]
    if report.get("run"):
        lines += ["", "## Run", ""]
        lines += _table(["Key", "Value"], [[k, _run_value(v)] for k, v in report["run"].items()], align="---")
    if figures:
        lines += ["", "## Figures", ""]
        for figure in figures:
            lines += [f"![{Path(figure).stem}]({figure})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _calibration(c: dict, split: str) -> str:
    ece = f"expected calibration error on {split} ({c['bins']} bins)"
    if c["temperature"] is None:
        return (f"Uncalibrated probabilities (no faces were free to fit a temperature on: see data.calibration_holdout); "
                f"{ece}: {c['ece_before']:.3f}.")
    return (f"Probabilities divided by the temperature T = {c['temperature']:.3f} before the softmax, fitted on the "
            f"{c['fitted_on']} ({c['faces']} faces); {ece}: {c['ece_before']:.3f} before, {c['ece_after']:.3f} after.")


def _classwise(metrics: dict) -> list[str]:
    """Per-class table sorted by F1, with accuracy = recall as in the source DICE-FER report."""
    ranked = sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"], reverse=True)
    rows = [[name, m["recall"], m["precision"], m["recall"], m["f1"], m["support"]] for name, m in ranked]
    lines = _table(["Expression", "Accuracy", "Precision", "Recall", "F1-Score", "Support"], rows)
    return lines + ["", f"Overall accuracy: {_percent(metrics['accuracy'])}"]


def _disentanglement(d: dict) -> list[str]:
    sd = d.get("identity_probe_sd") or {}

    def probe(key: str, name: str) -> object:
        value = d.get(key)
        return f"{_fmt(value)} ± {_fmt(sd[name])}" if value is not None and name in sd else value

    rows: list[list[object]] = [["MIG", d.get("mig")]]
    rows += [[f"MIG ({name})", value] for name, value in (d.get("mig_per_factor") or {}).items()]
    rows += [["Group MIG (E and I as two latents)", d.get("mig_group")]]
    rows += [[f"Group MIG ({name})", f["gap"]] for name, f in (d.get("mig_group_per_factor") or {}).items()]
    rows += [
        ["Identity probe accuracy on E (lower is better)", probe("identity_probe_accuracy_E", "E")],
        ["Identity probe accuracy on I (higher is better)", probe("identity_probe_accuracy_I", "I")],
        ["Identity probe on whitened E (every direction counts alike)", probe("identity_probe_whitened_E", "whitened_E")],
        ["Identity probe on whitened I", probe("identity_probe_whitened_I", "whitened_I")],
        ["Identity probe on the predicted expression alone (what the mistakes carry)", d.get("identity_probe_predictions")],
        ["Chance (most frequent identity)", d.get("chance_identity")],
    ]
    for name, value in (d.get("identity_r2") or {}).items():
        rows.append([f"Identity R^2 of {name}: the face-recognition embedding it predicts, expression removed", value])
    for name, value in (d.get("face_embedding_r2") or {}).items():
        rows.append([f"Face-embedding R^2 of {name} (expression not removed)", value])
    lines = _table(["Metric", "Value"], rows)
    if d.get("identity_r2"):
        lines += ["", ("Identity R^2 (`identity_reference`): a ridge map from the code, fitted on half of the evaluated "
                       "faces, predicts a face-recognition network's embedding of the other half, after the embedding's "
                       "mean per expression is removed; 0: the code predicts none of it, 1: all of it (README).")]
    if d.get("identity_probe_fits"):
        lines += ["", (f"Each probe reading is the mean of {d['identity_probe_fits']} fits, each trained on one half of "
                       "every test identity's images and tested on the other; ± is the standard deviation of one fit. "
                       "Test identities show every expression equally often, so a classifier without mistakes "
                       "would leave its predictions at chance; a code can hardly read less identity than they do.")]
    if d.get("note"):
        lines += ["", f"Note: {d['note']}"]
    return lines


def _run_value(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


# ---------------------------------------------------------------- figures


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=dict([FIGURE_MARK]))  # the mark --overwrite looks for
    plt.close(fig)


def _plot_confusion(path: Path, metrics: dict, classes: list[str], split: str) -> None:
    """Colour by row-normalised rate so small classes stay readable; annotate raw counts."""
    counts = np.asarray(metrics["confusion"], dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if rates[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=9)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(f"{split} confusion matrix, accuracy {100 * metrics['accuracy']:.1f}%")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of actual class")
    _save(fig, path)


def _plot_embedding(
    path: Path,
    codes: Mapping[str, np.ndarray],
    expression: np.ndarray | None,
    identity: np.ndarray | None,
    classes: list[str],
) -> None:
    """t-SNE of each code, one row per code: E should cluster by expression, I by identity."""
    colourings = [(k, v) for k, v in (("expression", expression), ("identity", identity)) if v is not None]
    palette = _expression_colours(classes)
    ncols = max(len(colourings), 1)
    fig, axes = plt.subplots(
        len(codes), ncols, figsize=(4.5 * ncols, 4.2 * len(codes)), squeeze=False, layout="constrained"
    )
    for row, (code_name, code) in zip(axes, codes.items()):
        xy, index = embedding_2d(code)
        if not colourings:
            row[0].scatter(xy[:, 0], xy[:, 1], s=5, color="0.4", alpha=0.7)
            row[0].set_title(f"{code_name} (t-SNE)")
        for ax, (label_name, labels) in zip(row, colourings):
            _scatter_by_label(ax, xy, np.asarray(labels)[index], palette if label_name == "expression" else None)
            ax.set_title(f"{code_name} coloured by {label_name}")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    if expression is not None:
        handles = [plt.Line2D([], [], ls="", marker="o", color=palette[k], label=c) for k, c in enumerate(classes)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(classes), 7), frameon=False)
    if identity is not None and len(np.unique(identity)) <= MAX_IDENTITY_LEGEND:
        fig.legend(*_identity_handles(np.unique(identity)), loc="outside right center", title="identity", frameon=False)
    _save(fig, path)


def _expression_colours(classes: list[str]) -> list[tuple]:
    return [plt.get_cmap("tab10")(k % 10) for k in range(len(classes))]


def _identity_colour(rank: int) -> tuple:
    """Qualitative colours, cycled: neighbouring identity ranks get clearly different hues."""
    return plt.get_cmap("tab20")(rank % 20)


def _identity_handles(ids: np.ndarray) -> tuple[list, list[str]]:
    handles = [plt.Line2D([], [], ls="", marker="o", color=_identity_colour(r)) for r in range(len(ids))]
    return handles, [str(i) for i in ids]


def _scatter_by_label(ax: plt.Axes, xy: np.ndarray, labels: np.ndarray, palette: list[tuple] | None) -> None:
    """Expression labels index `palette`; identities are ranked and take cycled qualitative colours."""
    if palette is None:
        ranks = np.unique(labels, return_inverse=True)[1]
        colours = [_identity_colour(r) for r in ranks]
    else:
        colours = [palette[int(k)] for k in labels]
    ax.scatter(xy[:, 0], xy[:, 1], s=5, c=colours, alpha=0.7, linewidths=0)


NOT_CURVES = {"epoch", "global_epoch", "time_s", "l1_active"}  # bookkeeping, not training curves


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plot_training_curves(path: Path, rows: list[dict]) -> bool:
    """One panel per numeric key over the global epoch index, one line per stage; False if nothing to plot."""
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if k not in NOT_CURVES and _is_number(v)))
    if not keys:
        return False
    stages = list(dict.fromkeys(str(row.get("stage", "")) for row in rows))
    colours = {stage: plt.get_cmap("tab10")(k % 10) for k, stage in enumerate(stages)}
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.flat, keys):
        for stage in stages:
            points = [
                (x, row[key]) for x, row in enumerate(rows, start=1)
                if str(row.get("stage", "")) == stage and _is_number(row.get(key))
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", ms=3, color=colours[stage])
        ax.set_title(key)
        ax.set_xlabel("epoch (global)")
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    if any(stages):
        handles = [plt.Line2D([], [], color=colours[s], label=s or "(none)") for s in stages]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(stages), title="stage", frameon=False)
    _save(fig, path)
    return True
