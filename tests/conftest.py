"""Fixtures shared by the inference tests: one tiny trained run and synthetic photos of faces."""
from pathlib import Path

import numpy as np
import pytest

from dicefer.cli import main
from dicefer.data.synthetic import SyntheticSpec, render_face

# Weights do not matter for inference plumbing: a DICE-FER run (it has an identity encoder) of a few steps.
TINY = ["data.train_identities=4", "data.test_identities=2", "data.images_per_identity=10", "stage1.epochs=1",
        "stage3.epochs=1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inference") / "run"
    assert main(["train", "--preset", "smoke", "--out", str(run), "--quiet", *TINY]) == 0
    return run


def face_photo(identity: int = 0, expression: int = 3, size: int = 192) -> np.ndarray:
    """A rendered face (96 px) on a flat gray background; OpenCV's Haar cascade finds the faces of
    identities 0, 4 and 6 at every expression (not every identity's)."""
    photo = np.full((size, size), 128, np.uint8)
    photo[40:136, 50:146] = render_face(SyntheticSpec(size=96), identity, expression)
    return photo
