"""How calibrated a run's probabilities are: the expected calibration error and the reliability
diagram, before and after the temperature the run fitted (training/temperature.py). A face given
probability 0.8 should be right about 8 times in 10.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt
import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per confidence bin (equal widths over [0, 1], right edge included): faces, mean confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, confidence, minlength=bins) / count
        accuracy = np.bincount(which, correct.astype(float), minlength=bins) / count
    return {"count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of |accuracy - mean confidence|, weighted by the bin's share of the faces."""
    r = reliability(probabilities, labels, bins)
    used = r["count"] > 0
    return float(np.sum(r["count"][used] * np.abs(r["accuracy"][used] - r["confidence"][used])) / r["count"].sum())


def calibration_report(logits: np.ndarray, labels: np.ndarray, calibration: dict | None) -> dict:
    """The expected calibration error on the scored faces with and without the run's temperature."""
    raw = expected_calibration_error(softmax(logits), labels)
    if calibration is None:
        return {"temperature": None, "ece_before": raw, "ece_after": None, "bins": ECE_BINS}
    return {**calibration, "ece_before": raw,
            "ece_after": expected_calibration_error(softmax(logits, calibration["temperature"]), labels), "bins": ECE_BINS}


def reliability_figure(logits: np.ndarray, labels: np.ndarray, temperature: float | None, split: str,
                       bins: int = ECE_BINS) -> plt.Figure:
    """Accuracy against confidence per bin, before and after the temperature, beside the diagonal."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    width = 1 / bins
    shown = [(1.0, "tab:red", "uncalibrated" if temperature is None else "before")]
    if temperature is not None:
        shown.append((temperature, "tab:blue", f"after (T = {temperature:.2f})"))
    for t, colour, name in shown:
        p = softmax(logits, t)
        r = reliability(p, labels, bins)
        used = r["count"] > 0
        ax.bar((np.arange(bins) + 0.5)[used] * width, r["accuracy"][used], width=width * 0.9, alpha=0.45,
               color=colour, label=f"{name}: ECE {expected_calibration_error(p, labels, bins):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=f"Reliability on {split} ({len(labels)} faces, {bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    return fig
