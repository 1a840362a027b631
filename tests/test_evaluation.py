"""Metrics must separate good from bad codes, and the report folder must be complete and readable."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from dicefer.data.base import CLASSES
from dicefer.evaluation.evaluate import disentanglement
from dicefer.evaluation.metrics import (
    classification_metrics,
    embedding_2d,
    group_mutual_information_gap,
    identity_probe,
    mutual_information_gap,
)
from dicefer.evaluation.report import write_report


@pytest.fixture
def factors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"A": rng.integers(0, 7, 4000), "B": rng.integers(0, 10, 4000)}


def test_mig_near_one_when_each_factor_has_its_own_dimension(factors):
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(4000, 8))
    codes[:, 0] = factors["A"] + 0.01 * rng.normal(size=4000)
    codes[:, 1] = factors["B"] + 0.01 * rng.normal(size=4000)
    result = mutual_information_gap(codes, factors)
    assert result["mig"] > 0.9
    assert set(result["per_factor"]) == {"A", "B"}
    assert all(v > 0.9 for v in result["per_factor"].values())


def test_mig_near_zero_when_informative_dimensions_come_in_identical_mixtures(factors):
    rng = np.random.default_rng(2)
    mixes = np.stack([factors["A"], factors["B"]], axis=1) @ rng.normal(size=(4, 2)).T
    codes = np.repeat(mixes, 2, axis=1) + 0.05 * rng.normal(size=(4000, 8))
    # The code is informative (every dim correlates with both factors), so a low MIG comes from the tie.
    for values in factors.values():
        assert max(abs(np.corrcoef(codes[:, j], values)[0, 1]) for j in range(8)) > 0.3
    assert mutual_information_gap(codes, factors)["mig"] < 0.1


def test_mig_skips_constant_factors(factors):
    codes = np.random.default_rng(3).normal(size=(4000, 4))
    result = mutual_information_gap(codes, {"A": factors["A"], "const": np.zeros(4000)})
    assert set(result["per_factor"]) == {"A"}
    assert mutual_information_gap(codes, {"const": np.zeros(4000)}) == {"mig": None, "per_factor": {}}


def test_classification_metrics_on_a_hand_made_example():
    classes = ["a", "b", "c"]
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 0, 0, 1])  # class 2 is never predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, classes)
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [2, 1, 0]]
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert {c: m["per_class"][c]["support"] for c in classes} == {"a": 3, "b": 2, "c": 3}
    assert m["per_class"]["c"]["precision"] == 0.0
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 5)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    f1 = [2 * 0.4 * (2 / 3) / (0.4 + 2 / 3), 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert json.loads(json.dumps(m)) == m


def test_classification_metrics_keeps_absent_classes_in_the_confusion_matrix():
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), CLASSES)
    assert np.array(m["confusion"]).shape == (7, 7)
    assert m["per_class"]["Neutral"]["support"] == 0


def _people(n_ids: int = 30, per_id: int = 20) -> np.ndarray:
    return np.repeat(np.arange(n_ids), per_id)


def test_identity_probe_reads_identity_from_an_identity_code():
    rng = np.random.default_rng(4)
    ids = _people()
    codes = 3 * rng.normal(size=(30, 64))[ids] + 0.3 * rng.normal(size=(len(ids), 64))
    result = identity_probe(codes, ids)
    assert result["accuracy"] > 0.95
    assert result["chance"] == pytest.approx(1 / 30)


def test_identity_probe_is_near_chance_on_noise():
    ids = _people()
    result = identity_probe(np.random.default_rng(5).normal(size=(len(ids), 64)), ids)
    assert result["accuracy"] < result["chance"] + 0.1


def test_identity_probe_averages_repeated_half_splits():
    """Each reading is the mean of 2 x repeats fits, so it moves less between split seeds than a
    reading from one pair of halves does."""
    rng = np.random.default_rng(8)
    ids = _people(20, 20)
    codes = 0.4 * rng.normal(size=(20, 16))[ids] + rng.normal(size=(len(ids), 16))  # some identity, noisy
    result = identity_probe(codes, ids, repeats=4)
    assert result["fits"] == 8 and result["accuracy_sd"] > 0
    assert 0.1 < result["accuracy"] < 0.9
    one = [identity_probe(codes, ids, seed=s, repeats=1)["accuracy"] for s in range(20)]
    four = [identity_probe(codes, ids, seed=s, repeats=4)["accuracy"] for s in range(20)]
    assert np.std(four) < 0.8 * np.std(one)


def test_predictions_carry_identity_only_through_person_dependent_mistakes():
    """Every test identity shows each expression equally often, so perfect predictions leave the
    probe at chance; a classifier that reads each person's faces as that person's own expression
    half the time leaks identity through its decisions alone."""
    rng = np.random.default_rng(9)
    ids = _people(20, 28)
    expression = np.tile(np.arange(7), len(ids) // 7)  # each person: every expression 4 times
    habit = rng.integers(0, 7, 20)
    mistaken = np.where(rng.random(len(ids)) < 0.5, habit[ids], expression)
    codes = {"E": rng.normal(size=(len(ids), 8))}
    read = lambda predicted: disentanglement(codes, expression, ids, 0, np.eye(7)[predicted])["identity_probe_predictions"]
    perfect, habitual = read(expression), read(mistaken)
    assert perfect <= 1 / 20 + 0.01
    assert habitual > perfect + 0.05


def test_whitened_probe_finds_identity_that_a_dominant_direction_hides():
    """Identity in directions of small variance, mixed into every dimension with one huge
    (expression-like) direction: standardising each dimension leaves identity a sliver of each,
    which the regularised probe barely reads; whitening restores it."""
    rng = np.random.default_rng(7)
    ids = _people()
    identity_part = 0.05 * rng.normal(size=(30, 8))[ids] + 0.01 * rng.normal(size=(len(ids), 8))
    dominant = 50 * rng.normal(size=(len(ids), 1))
    codes = np.concatenate([dominant, identity_part], axis=1) @ rng.normal(size=(9, 9))
    plain, whitened = identity_probe(codes, ids), identity_probe(codes, ids, pca_whiten=True)
    assert whitened["accuracy"] > 0.9
    assert plain["accuracy"] < whitened["accuracy"] - 0.3


def test_embedding_2d_subsamples_reproducibly():
    codes = np.random.default_rng(6).normal(size=(300, 16))
    xy, index = embedding_2d(codes, seed=1, max_points=100)
    assert xy.shape == (100, 2) and len(np.unique(index)) == 100 and index.max() < 300
    np.testing.assert_array_equal(index, embedding_2d(codes[:, :4], seed=1, max_points=100)[1])


def _random_report(rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray]:
    expression = rng.integers(0, 7, n)
    noisy = np.where(rng.random(n) < 0.7, expression, rng.integers(0, 7, n))
    split = classification_metrics(expression, noisy, CLASSES)
    report = {
        "dataset": "toyset",
        "method": "dicefer",
        "classes": list(CLASSES),
        "test": split,
        "train": split,
        "disentanglement": {
            "mig": 0.12,
            "identity_probe_accuracy_E": None,
            "identity_probe_accuracy_I": None,
            "chance_identity": None,
            "note": "toyset has no identity labels",
        },
        "run": {"epochs": 3, "seconds": 12.5, "backbone": "resnet18"},
    }
    return report, expression


def test_write_report_writes_json_markdown_and_figures(tmp_path):
    rng = np.random.default_rng(7)
    report, expression = _random_report(rng, 200)
    log = tmp_path / "metrics.jsonl"
    lines = [{"stage": "mi", "epoch": e, "mi_global": 0.1 * e, "code_std": 1.0} for e in range(3)]
    lines += [{"stage": "classifier", "epoch": e, "loss": 1.0 / (e + 1), "accuracy": 0.5} for e in range(2)]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n{\"stage\": \"cut")
    out = tmp_path / "report"
    write_report(
        out,
        report,
        codes={"E": rng.normal(size=(200, 64)), "I": rng.normal(size=(200, 64))},
        expression=expression,
        identity=rng.integers(0, 12, 200),
        metrics_log=log,
    )
    assert json.loads((out / "report.json").read_text()) == report
    md = (out / "report.md").read_text()
    assert all(name in md for name in CLASSES)
    assert "Actual \\ Predicted" in md and "n/a" in md and "no identity labels" in md
    assert f"Overall accuracy: {report['test']['accuracy']:.3f}" in md
    for name in ("confusion_test.png", "confusion_train.png", "embedding.png", "training_curves.png"):
        assert f"]({name})" in md
        with Image.open(out / name) as image:
            assert min(image.size) > 300


def test_write_report_without_codes_or_log_writes_only_confusion_figures(tmp_path):
    report, _ = _random_report(np.random.default_rng(8), 50)
    write_report(tmp_path, report, metrics_log=tmp_path / "missing.jsonl")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["confusion_test.png", "confusion_train.png"]
    assert "embedding.png" not in (tmp_path / "report.md").read_text()


def _groups(expression: np.ndarray, identity: np.ndarray, rng: np.random.Generator,
            one_hot: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """E encodes the expression alone, I the identity alone: one-hot (what a linear probe reads fully)
    or as the value of one dimension (what the per-dimension MIG reads), plus noise dimensions."""
    def code(factor: np.ndarray) -> np.ndarray:
        signal = np.eye(factor.max() + 1)[factor] if one_hot else factor[:, None].astype(float)
        noisy = signal + rng.normal(scale=0.1, size=signal.shape)
        return np.concatenate([noisy, rng.normal(size=(len(factor), 6))], axis=1)
    return code(expression), code(identity)


def test_group_mig_near_one_when_each_group_carries_its_own_factor():
    rng = np.random.default_rng(2)
    expression, identity = rng.integers(0, 7, 1500), rng.integers(0, 10, 1500)
    e, i = _groups(expression, identity, rng)
    result = group_mutual_information_gap({"E": e, "I": i}, {"expression": expression, "identity": identity})
    assert result["mig_group"] > 0.8
    assert result["per_factor"]["expression"]["mi_E"] > 0.8 * result["per_factor"]["expression"]["entropy"]
    assert result["per_factor"]["expression"]["mi_I"] < 0.05


def test_group_mig_near_zero_when_both_groups_carry_the_factor():
    rng = np.random.default_rng(3)
    expression, identity = rng.integers(0, 7, 1500), rng.integers(0, 10, 1500)
    e, _ = _groups(expression, identity, rng)
    twin, _ = _groups(expression, identity, rng)
    result = group_mutual_information_gap({"E": e, "I": twin}, {"expression": expression})
    assert result["mig_group"] < 0.1


def test_group_mig_ignores_rotations_within_a_group_while_the_standard_mig_does_not():
    rng = np.random.default_rng(4)
    expression, identity = rng.integers(0, 7, 1500), rng.integers(0, 10, 1500)
    e, i = _groups(expression, identity, rng, one_hot=False)
    rotate = lambda x: x @ np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))[0]
    factors = {"expression": expression, "identity": identity}
    plain = group_mutual_information_gap({"E": e, "I": i}, factors)["mig_group"]
    rotated = group_mutual_information_gap({"E": rotate(e), "I": rotate(i)}, factors)["mig_group"]
    assert abs(plain - rotated) < 0.05
    standard = lambda a, b: mutual_information_gap(np.concatenate([a, b], axis=1), factors)["mig"]
    assert standard(e, i) > 0.5 and standard(rotate(e), rotate(i)) < standard(e, i) - 0.3


def test_group_mig_needs_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        group_mutual_information_gap({"E": np.zeros((10, 2))}, {"expression": np.arange(10) % 2})
