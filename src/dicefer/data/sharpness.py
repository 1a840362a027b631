"""Are the training faces blurrier than the evaluated ones? A label-free check of the two splits.

A network learns only the detail its training images hold. Trained on blurred faces and shown
sharp ones, it meets textures it never learnt. The copy of FER2013 in ../shared is like this:
its train/ fits a Gaussian blur of sigma 3.25 px of val/'s faces. Blurring the sharper split
until its radial power spectrum has the other's shape measures the gap as one Gaussian sigma.
`data.test_blur` then blurs evaluated and predicted faces to match.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .transforms import LUMA, gaussian_blur

SIGMAS = tuple(np.round(np.arange(0.5, 5.01, 0.5), 2))  # a coarse grid: the check warns, data.test_blur is tuned on val
BANDS = 12          # radial frequency bands between 0 (excluded) and Nyquist
WORTH_FIXING = 1.0  # sigma (pixels) from which training warns


def _sample(images: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """Up to n uint8 faces (N, H, W[, C]) as float grayscale (n, 1, H, W)."""
    keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    x = images[keep].astype(np.float32)
    if x.ndim == 4:
        x = x[..., :3] @ LUMA.astype(np.float32)
    return torch.from_numpy(x).unsqueeze(1)


def log_bands(x: torch.Tensor) -> np.ndarray:
    """log10 of the mean power of (N, 1, H, W) images in BANDS radial bands; the mean brightness is left out."""
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs().square().mean(dim=(0, 1)).numpy()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    edges = np.linspace(0, 0.5, BANDS + 1)
    bands = [power[(radius > lo) & (radius <= hi)].mean() for lo, hi in itertools.pairwise(edges)]
    return np.log10(np.maximum(bands, 1e-12))


def _mismatch(a: np.ndarray, b: np.ndarray) -> float:
    """Spread of the log-spectrum difference: 0 when the shapes agree up to a contrast gain."""
    return float(np.std(a - b))


def _best_blur(sharp: torch.Tensor, target: np.ndarray) -> tuple[float, float]:
    """(sigma, mismatch) of the blur of `sharp` whose spectrum best matches `target`. The blurred
    faces are rounded to integers, as stored images are: rounding sets the finest bands' floor."""
    return min(((s, _mismatch(log_bands(gaussian_blur(sharp, float(s)).round()), target)) for s in SIGMAS),
               key=lambda t: t[1])


def blur_gap(train: np.ndarray, test: np.ndarray, n: int = 256, seed: int = 0) -> float:
    """The Gaussian sigma (pixels) by which the training faces are blurrier than the evaluated ones.

    Negative when the evaluated faces are the blurrier; 0 when no blur brings the two spectra
    clearly closer (less than half their mismatch). Both are uint8 face arrays of one size.
    """
    a, b = _sample(train, n, seed), _sample(test, n, seed + 1)
    base = _mismatch(log_bands(a), log_bands(b))
    (s_test, e_test), (s_train, e_train) = _best_blur(b, log_bands(a)), _best_blur(a, log_bands(b))
    sigma, error = (s_test, e_test) if e_test <= e_train else (-s_train, e_train)
    return float(sigma) if error < 0.5 * base else 0.0


def advice(gap: float, test_blur: float) -> str | None:
    """What to tell a user about a `blur_gap` worth acting on; None when there is nothing to do."""
    if gap >= WORTH_FIXING and not test_blur:
        return (f"the training faces are blurrier than the evaluated ones, as if blurred by a Gaussian of sigma {gap:g} px, "
                f"so the model will meet detail it never learnt; set data.test_blur={gap:g} to blur evaluated and "
                "predicted faces to match, or tune it on a validation split after training with "
                "`dicefer evaluate --run RUN --test-blur SIGMA`")
    if gap <= -WORTH_FIXING:
        return (f"the evaluated faces are blurrier than the training ones, as if blurred by a Gaussian of sigma {-gap:g} px; "
                "expect lower accuracy than on faces like the training ones")
    return None
