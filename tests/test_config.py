import pytest
import torch

from dicefer.cli import parse_args
from dicefer.config import PRESETS, build_config, from_dict, to_dict
from dicefer.errors import ConfigError
from dicefer.training.accelerator import Accelerator, cpu_has_native_bf16


def test_precedence_preset_file_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stage1:\n  epochs: 7\n  delta: 0.2\n")
    cfg = build_config("smoke", f, ["stage1.epochs=9", "mi.estimator=jsd"])
    assert cfg.stage1.epochs == 9 and cfg.stage1.delta == 0.2 and cfg.mi.estimator == "jsd"
    assert cfg.data.size == PRESETS["smoke"]["data"]["size"]


def test_paper_defaults():
    cfg = build_config("paper")
    assert (cfg.mi.mu, cfg.mi.nu, cfg.stage1.delta, cfg.stage2.zeta_adv) == (0.5, 1.0, 0.1, 0.025)
    assert (cfg.stage1.lr, cfg.batch_size, cfg.model.code_dim, cfg.data.size) == (1e-4, 32, 64, 112)


def test_paper_preset_is_the_papers_recipe_and_nothing_else():
    cfg = build_config("paper")
    assert (cfg.mi.estimator, cfg.stage1.global_critic, cfg.stage1.positives) == ("dv", "features", "pair")
    assert cfg.stage1.l1_after_mi is None and cfg.stage1.l1_scale == "raw"  # the raw L1 from the first step
    assert (cfg.stage1.ce_weight, cfg.stage3.finetune_epochs) == (0.0, 0)
    assert (cfg.stage2.lr, cfg.lr_schedule, cfg.data.augment) == (1e-4, "constant", "paper")
    assert cfg.data.grayscale and cfg.model.maxpool


def test_real_cpu_preset_is_48px_and_keeps_the_frozen_code():
    cfg = build_config("real-cpu", None, ["data.spec=fer2013:/nowhere"])
    assert cfg.data.size == 48 and cfg.stage3.finetune_epochs == 0 and cfg.stage1.l1_scale == "raw"
    assert cfg.supervised_epochs() == cfg.stage1.epochs + cfg.stage2.epochs  # as many steps of 64 images


def test_demo_paper_is_the_demo_with_the_papers_objectives():
    demo, paper_recipe, defaults = build_config("demo"), build_config("demo-paper"), build_config(None)
    assert paper_recipe.data == demo.data and paper_recipe.stage1.lr == demo.stage1.lr
    assert paper_recipe.mi == defaults.mi and paper_recipe.stage2.zeta_adv == defaults.stage2.zeta_adv
    objective = lambda c: (c.stage1.delta, c.stage1.ce_weight, c.stage1.l1_scale, c.stage1.l1_after_mi,
                           c.stage3.finetune_epochs, c.stage3.finetune_delta)
    assert objective(paper_recipe) == objective(defaults) == (0.1, 0.0, "raw", 0.0, 0, 0.0)
    assert objective(demo) == (1.0, 1.0, "whitened", 0.1, 12, 100.0)


@pytest.mark.parametrize("override, message", [
    (["stage1.epoch=3"], "unknown config key 'stage1.epoch'"),
    (["stage1.epochs=abc"], "stage1.epochs: expected int"),
    (["stage1.epochs=2.5"], "expected an integer"),
    (["mi.estimator=mine"], "mi.estimator='mine' is not one of"),
    (["precision=fp16"], "precision='fp16' is not one of: auto, fp32, bf16"),
    (["epochs"], "not of the form key=value"),
    (["stage1.l1_scale=relative"], "stage1.l1_scale='relative' is not one of: raw, whitened"),
    (["model.classifier_dropout=0.5"], "unknown config key 'model.classifier_dropout'"),
    (["data.spec=imagenet:/x"], "unknown dataset spec 'imagenet:/x'"),
    (["data.spec=fer2013"], "needs a path: fer2013:PATH"),
    (["data.synthetic_seed=-1"], "synthetic_seed=-1: expected a non-negative integer"),
    (["data.synthetic_seed=abc"], "data.synthetic_seed: expected int, got 'abc'"),
    (["stage1.epochs=nan"], "stage1.epochs: expected a finite number, got nan"),
    (["stage1.lr=-1"], "stage1.lr=-1.0: a learning rate must be above 0"),
    (["stage1.lr=nan"], "stage1.lr: expected a finite number"),
    (["supervised.epochs=abc"], "supervised.epochs: expected int, got 'abc'"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config("smoke", None, override)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="choose one of"):
        build_config("huge")
    with pytest.raises(ConfigError, match="does not exist"):
        build_config("smoke", tmp_path / "nope.yaml")


def test_round_trip():
    cfg = build_config("demo", None, ["seed=5"])
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("device, precision, bf16", [
    ("cpu", "bf16", True), ("cpu", "fp32", False), ("cuda", "auto", True), ("cuda", "fp32", False),
])
def test_precision_decides_autocast(device, precision, bf16):
    accel = Accelerator(torch.device(device), precision=precision)
    assert accel.bf16 == bf16
    if device == "cpu":
        with accel.autocast():
            assert torch.is_autocast_enabled("cpu") == bf16
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if bf16 else torch.float32)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_the_cpu_follows_its_bf16_hardware(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu_has_native_bf16.cache_clear()  # the probe is asked once per process
    try:
        assert Accelerator(torch.device("cpu"), precision="auto").bf16 == native
    finally:
        cpu_has_native_bf16.cache_clear()


def test_overrides_may_follow_other_options_on_the_command_line(capsys):
    args = parse_args(["train", "a.b=1", "--set", "c=2", "--method", "supervised", "supervised.epochs=40", "d=3"])
    assert args.method == "supervised" and args.overrides == ["c=2"]
    assert args.overrides_positional == ["a.b=1", "supervised.epochs=40", "d=3"]
    for argv in (["train", "--method", "supervised", "--bogus"], ["evaluate", "--run", "r", "stage1.epochs=2"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "unrecognized arguments" in capsys.readouterr().err


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("stage1:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' is given twice in one mapping \(line 4\)"):
        build_config("smoke", path)


def test_a_config_saved_before_settings_were_retired_still_loads():
    old = to_dict(build_config("demo"))
    old["stage1"].pop("l1_scale")
    old["stage1"].update(l1_whiten=True, l1_standardise=False, l1_relative=False, variance_weight=0.0)
    old["data"].update(crop_padding=0, whiten=True, confounded=True, cache_dir="/somewhere")
    old["model"].update(critic_dim=128, classifier_hidden=256, classifier_dropout=0.0)
    old["mi"].update(ema=0.01, temperature=0.1)
    old["stage3"].update(batch_size=256, finetune_lr=1e-4)
    old["supervised"]["lr"] = 1e-3
    assert from_dict(old) == build_config("demo")
    old["stage1"]["l1_relative"] = True
    with pytest.raises(ConfigError, match="stage1.l1_relative=True: this setting was retired"):
        from_dict(old)


def test_the_data_spec_is_parsed_once_into_a_name_and_a_path():
    cfg = build_config("smoke", None, ["data.spec=ckplus:/data/CK+"])
    assert (cfg.data.spec.name, cfg.data.spec.path) == ("ckplus", "/data/CK+")
    assert to_dict(cfg)["data"]["spec"] == "ckplus:/data/CK+" and from_dict(to_dict(cfg)) == cfg
