"""Calibrated probabilities by temperature scaling (Guo et al., 2017): one number T divides the
classifier's logits, fitted on faces the run did not train on, so that a face given probability
0.8 is right about 8 times in 10. Argmax, hence accuracy, is unchanged. The expected calibration
error and the reliability diagram say how far from that the probabilities are, before and after.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from dicefer.data.base import FaceSet
from dicefer.data.transforms import FaceInput
from dicefer.models.codes import encode_faces

ECE_BINS = 15
T_RANGE = (0.05, 20.0)  # temperatures outside this mean the held-out faces say nothing useful


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the negative log-likelihood of softmax(logits / T) on these faces
    (L-BFGS on log T, as Guo et al. fit it; the likelihood is smooth and has one minimum in T)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"fit_temperature needs (N, classes) logits and N labels, got {tuple(z.shape)} and {tuple(y.shape)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(nll)
    return float(np.clip(log_t.exp().item(), *T_RANGE))


def logits_of(expression: torch.nn.Module, classifier: torch.nn.Module, faces: FaceSet, face: FaceInput) -> np.ndarray:
    """The classifier's logits for every face, fed as evaluation feeds them."""
    codes = encode_faces(expression, faces, face)
    with torch.no_grad():
        return classifier(torch.from_numpy(codes)).numpy()


def calibrate(expression: torch.nn.Module, classifier: torch.nn.Module, faces: FaceSet, face: FaceInput) -> dict:
    """The temperature fitted on `faces`, and what it was fitted on, as a run records it."""
    was = expression.training, classifier.training
    expression.eval(), classifier.eval()
    try:
        temperature = fit_temperature(logits_of(expression, classifier, faces, face), faces.expression)
    finally:
        expression.train(was[0]), classifier.train(was[1])
    return {"temperature": temperature, "faces": len(faces),
            "fitted_on": {"train": "held-out slice of train", "calibration": "synthetic people rendered for it"}.get(
                faces.split, f"{faces.split} split")}


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
