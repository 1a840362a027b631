"""Each stage is one module: its state_dict holds everything a checkpoint needs, its optimisers come
in the order their losses are back-propagated, and the choices it branches on are checked, not
left to fall through to another branch. Also: checkpoints of the earlier layout, and the one reader
of metrics.jsonl."""
import json
import typing

import numpy as np
import pytest
import torch

from dicefer.cli import build_parser
from dicefer.config import PRESET_SUMMARIES, Backbone, Estimator, TrainConfig, build_config, choices
from dicefer.data.base import FaceSet
from dicefer.data.torch_datasets import resize_all
from dicefer.errors import ConfigError, RunError
from dicefer.models import build
from dicefer.models.backbones import BACKBONES
from dicefer.models.mi import MIEstimator
from dicefer.run import read_metrics
from dicefer.training.accelerator import Accelerator
from dicefer.training.checkpoint import FORMAT_1, load_checkpoint
from dicefer.training.distributed import Process
from dicefer.training.loop import train_one_epoch
from dicefer.training.setup import Setup
from dicefer.training.stages import Stage1, Stage2, Stage3, plan
from dicefer.training.stages.objectives import MITerm, consistency_l1, joint_mask

SMALL = ["data.size=32", "batch_size=4", "precision=fp32", "stage1.ce_weight=1", "stage1.l1_after_mi=0.0"]


def setup(seed: int = 0) -> Setup:
    """A Setup over 24 random 32 px faces, as training builds one."""
    cfg = build_config("smoke", overrides=SMALL)
    torch.manual_seed(seed)
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 32), dtype=np.uint8)
    faces = FaceSet(pixels, np.arange(24) % 3, None, "random faces", split="train")
    face = build.face_input(cfg)
    return Setup.build(cfg, Process(), Accelerator(torch.device("cpu"), precision="fp32"), faces, face,
                       resize_all(faces, face))


def batch(seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 32, 32, generator=g), torch.randn(4, 1, 32, 32, generator=g), torch.tensor([0, 1, 2, 0])


def test_the_plan_lists_each_methods_stages_in_order():
    names = lambda *o: [s.name for s in plan(build_config("smoke", overrides=list(o)))]
    assert names() == ["stage1", "stage2", "stage3"]
    assert names("stage3.finetune_epochs=1") == ["stage1", "stage2", "stage3", "finetune"]
    assert names("method=supervised") == ["supervised"]


def test_a_stages_state_dict_is_all_a_checkpoint_needs_of_it():
    """Two Stage 2s built apart: after loading one's state_dict and optimiser states into the other,
    a step of each gives the same losses (the shuffles' generator travels as extra state)."""
    first = setup(0)
    Stage1(first)
    a = Stage2(first)
    train_one_epoch(a.step, a.optimizers, [batch(1), batch(2)], a.name, 0, a.images, False)
    second = setup(5)
    Stage1(second)
    b = Stage2(second)
    b.load_state_dict(a.state_dict())
    for opt, other in zip(b.optimizers, a.optimizers, strict=True):
        opt.load_state_dict(other.state_dict())
    assert "_extra_state" in a.state_dict() and any(k.startswith("expression.") for k in a.state_dict())
    torch.manual_seed(0)
    (la, da), _ = a.step(batch(3))
    torch.manual_seed(0)
    (lb, db), _ = b.step(batch(3))
    assert float(la.detach()) == float(lb.detach()) and float(da.detach()) == float(db.detach())


def test_stage1_keeps_its_l1_switch_as_a_buffer():
    stage = Stage1(setup())
    assert not stage.state_dict()["l1_active"]
    stage.l1_after_mi = -1e9  # any estimate passes
    stage.step(batch())
    assert stage.state_dict()["l1_active"]


def test_stage2_trains_identity_and_leaves_the_frozen_expression_encoder_as_it_was():
    """As MoCo's linear stage proves: the frozen weights and BatchNorm statistics do not move."""
    s = setup()
    Stage1(s)
    stage = Stage2(s)
    before = {k: v.clone() for k, v in stage.expression.state_dict().items()}
    identity_before = {k: v.clone() for k, v in stage.identity.state_dict().items()}
    train_one_epoch(stage.step, stage.optimizers, [batch(1), batch(2)], stage.name, 0, stage.images, False)
    assert all(torch.equal(v, stage.expression.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, stage.identity.state_dict()[k]) for k, v in identity_before.items())


def test_stage2_back_propagates_the_discriminators_own_loss_last():
    """After a step, the discriminator holds the gradient of its own loss only: back-propagated in
    the other order, the encoder's adversarial term would add to it."""
    s = setup()
    Stage1(s)
    stage = Stage2(s)
    assert stage.optimizers[1].param_groups[0]["params"] == list(stage.disc.parameters())
    shuffles = stage.shuffles.get_state()
    (_, d_loss), _ = stage.step(batch())
    expected = torch.autograd.grad(d_loss, list(stage.disc.parameters()))
    stage.shuffles.set_state(shuffles)
    train_one_epoch(stage.step, stage.optimizers, [batch()], stage.name, 0, stage.images, False)
    assert all(torch.allclose(p.grad, e, atol=1e-6) for p, e in zip(stage.disc.parameters(), expected))


def test_stage3_checkpoints_only_at_its_end_and_saves_all_three_networks():
    s = setup()
    Stage1(s)
    Stage2(s)
    stage = Stage3(s)
    assert not stage.every_epoch and set(stage.saved()) == {"expression", "identity", "classifier"}


def test_a_typo_made_from_python_is_an_error_not_the_other_branch():
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="positives"):
        joint_mask(y, "pairs")
    with pytest.raises(ValueError, match="L1 scale"):
        consistency_l1(torch.randn(4, 3), 2, "whiten")
    with pytest.raises(ValueError, match="global critic"):
        MITerm(8, 4, "dv", 0.5, 1.0, "cod")
    with pytest.raises(ValueError, match="estimator"):
        MIEstimator("mine")


def test_choices_come_from_the_settings_types():
    assert set(typing.get_args(Backbone)) == set(BACKBONES)
    for kind in typing.get_args(Estimator):
        MIEstimator(kind)
    with pytest.raises(ConfigError, match="mi.estimator='mine' is not one of: dv, jsd, infonce"):
        build_config("smoke", overrides=["mi.estimator=mine"])
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "precision")
    assert tuple(train.choices) == choices(TrainConfig, "precision") == ("auto", "fp32", "bf16")


def test_preset_help_is_each_preset_files_first_comment():
    squeezed = lambda text: "".join(text.split())  # argparse wraps lines, and breaks words at hyphens
    help_text = squeezed(build_parser()._subparsers._group_actions[0].choices["train"].format_help())
    for name, summary in PRESET_SUMMARIES.items():
        assert summary and "\n" not in summary
        assert squeezed(f"{name}: {summary[:1].lower()}{summary[1:].rstrip('.')}") in help_text


def test_a_checkpoint_of_the_earlier_layout_reads_as_the_stages_state(tmp_path):
    """Format 1 named each object of a stage apart; it loads into today's Stage 2 strictly."""
    from safetensors.torch import save_file

    s = setup()
    Stage1(s)
    stage = Stage2(s)
    sd, opts = stage.state_dict(), [opt.state_dict() for opt in stage.optimizers]
    part = lambda prefix: {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    old_state = {"expression": part("expression."), "identity": part("identity."), "stage2.mi": part("mi."),
                 "stage2.disc": part("disc."), "stage2.opt": opts[0], "stage2.opt_disc": opts[1],
                 "stage2.shuffles": {"state": sd["_extra_state"]}}
    tensors, index = {}, iter(range(10**6))

    def pack(obj):
        if isinstance(obj, torch.Tensor):
            key = f"t{next(index)}"
            tensors[key] = obj.contiguous()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            items = [[k, pack(v)] for k, v in obj.items()]
            return dict(items) if all(isinstance(k, str) for k in obj) else {"__items__": items}
        if isinstance(obj, (list, tuple)):
            return [pack(v) for v in obj]
        return obj

    record = {"position": {"stage": "stage2", "epoch": 0, "step": 0}, "state": old_state}
    save_file(tensors, str(tmp_path / "c.safetensors"), metadata={"format": FORMAT_1, "record": json.dumps(pack(record))})
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    fresh = Stage2(s)
    fresh.load_state_dict(loaded["state"]["stage"])  # strict: every key, none missing
    assert torch.equal(fresh.get_extra_state(), sd["_extra_state"])
    assert [o["param_groups"][0]["lr"] for o in loaded["state"]["optimizers"]] == [g["param_groups"][0]["lr"] for g in opts]


def test_metrics_log_reader_skips_a_cut_last_line_and_names_a_bad_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"stage": "stage1", "epoch": 0}\n{"stage": "stage1", "ep')
    assert read_metrics(log) == [{"stage": "stage1", "epoch": 0}]
    log.write_text('{"stage": "stage1", "epoch": 0}\nnot json\n{"stage": "stage2", "epoch": 0}\n')
    with pytest.raises(RunError, match="metrics.jsonl, line 2: not a record"):
        read_metrics(log)
