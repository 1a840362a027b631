"""Distributed training: the pair sampler shards each epoch across ranks, and torchrun with two CPU
processes (gloo) trains every stage, writes the run folder once (rank 0) and a valid report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dicefer
from dicefer.data.base import CLASSES
from dicefer.data.pairs import SameExpressionPairs
from dicefer.training.checkpoint import load_checkpoint

TINY = ["--preset", "smoke", "--quiet", "threads=1", "data.train_identities=6", "data.test_identities=3",
        "data.images_per_identity=12", "batch_size=8", "stage1.epochs=2", "stage2.epochs=1", "stage3.epochs=2"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_distinct_pairs_of_the_same_shuffle(world_size):
    y = np.random.default_rng(0).integers(0, 7, 301)
    whole = SameExpressionPairs(y, seed=5)
    shards = [SameExpressionPairs(y, 5, rank, world_size) for rank in range(world_size)]
    for epoch in (0, 1):
        for sampler in (whole, *shards):
            sampler.set_epoch(epoch)
        parts = [s.pairs() for s in shards]
        assert all(len(p) == len(s) == len(shards[0]) for p, s in zip(parts, shards))
        every = np.stack(parts, axis=1).reshape(-1, 2)  # rank r holds every world_size-th pair from r
        n = len(whole.pairs())
        assert np.array_equal(every[:n], whole.pairs()) and len(every) - n < world_size
        assert np.array_equal(every[n:], whole.pairs()[:len(every) - n])  # the padding repeats the first pairs
    shards[0].set_epoch(0)
    first = shards[0].pairs()
    shards[0].set_epoch(1)
    assert not np.array_equal(first, shards[0].pairs())


# Run on every rank by torchrun: `dicefer train`, watched from outside the product code. It records
# each rank's trained modules (each stage's networks, by the name training saves them under, or
# STAGE.NAME for a stage's own) and how often the discriminator's gradient averaging ran, so the
# test can compare the ranks.
RANK_WATCH = """
import json, os, sys
from dicefer import cli
from dicefer.training import distributed, loop
out, modules, averaged = sys.argv[1], {}, []
run = loop.StageRunner.run
def watched(self, stage, *args, **kwargs):
    run(self, stage, *args, **kwargs)
    shared = ("expression", "identity", "classifier")
    modules.update({name if name in shared else stage.name + "." + name: m for name, m in stage.named_children()})
loop.StageRunner.run = watched
step = distributed.AveragedGradients.step
def counted(self):
    averaged.append(1)
    step(self)
distributed.AveragedGradients.step = counted
code = cli.main(sys.argv[2:])
sums = {name: [float(p.detach().double().sum()) for p in m.parameters()] for name, m in modules.items()}
with open(os.path.join(out, "rank" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump({"sums": sums, "averaged": len(averaged)}, f)
sys.exit(code)
"""


def test_torchrun_with_two_cpu_processes(tmp_path):
    run = tmp_path / "run"
    src = str(Path(dicefer.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    (tmp_path / "watch.py").write_text(RANK_WATCH)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "watch.py"), str(tmp_path), "train", "--device", "cpu", "--out", str(run), *TINY]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("report:") == 1  # only rank 0 reports
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {"expression", "identity", "classifier", "stage2.disc"} <= set(ranks[0]["sums"])
    assert ranks[0]["sums"] == ranks[1]["sums"]  # every module's weights agree across the ranks
    assert ranks[0]["averaged"] == ranks[1]["averaged"] > 0  # the discriminator's gradients were averaged

    report = json.loads((run / "report" / "report.json").read_text())
    for split in ("train", "test"):
        m = report[split]
        assert sum(map(sum, m["confusion"])) == sum(c["support"] for c in m["per_class"].values()) > 0
        assert set(m["per_class"]) == set(CLASSES) and 0 <= m["accuracy"] <= 1
    assert 0 <= report["disentanglement"]["identity_probe_accuracy_I"] <= 1

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["stage1", "stage1", "stage2", "stage3", "stage3"]  # written once, by rank 0
    assert all(np.isfinite(r["loss"]) for r in rows)
    record = load_checkpoint(run / "checkpoint.safetensors")
    assert record["world_size"] == 2 and len(record["rng"]) == 2
    assert record["rng"][0]["torch"].shape == record["rng"][1]["torch"].shape
