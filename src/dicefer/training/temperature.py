"""Temperature scaling (Guo et al., 2017), the last step of training: one number T divides the
classifier's logits, fitted on faces the run never trained on (data/registry.load_training_data),
so that its probabilities say how often it is right. Argmax, hence accuracy, is unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dicefer.data.base import FaceSet
from dicefer.data.transforms import FaceInput
from dicefer.models.codes import encode_faces

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
