"""Configuration: one dataclass per concern, presets, YAML files and `key=value` overrides.

Unknown keys are rejected everywhere so that a typo never silently trains with a default.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dicefer.errors import ConfigError


@dataclass
class DataConfig:
    spec: str = "synthetic"             # synthetic | rafdb:PATH | fer2013:PATH | ckplus:PATH | affectnet:PATH | oulu:PATH | folder:PATH
    size: int = 64                      # network input size: faces are decoded once, resized to size x size
    grayscale: bool = True              # false: RGB
    augment: str = "paper"              # paper: rotations -15..15 deg in 5-deg steps x h-flip; flip: h-flip only; none
    crop_padding: int = 0               # random crop: shift by up to this many pixels (edge-padded); 0 = off
    whiten: bool = True                 # per-image whitening, as in the paper; false: pixels scaled to [-1, 1]
    eval_split: str = "auto"            # auto: test if the dataset has one, else val | val | test
    strict: bool = False                # stop at the first unreadable image instead of skipping it with a warning
    cache_dir: str = ""                 # decoded faces (.npy); empty: $DICEFER_CACHE or ~/.cache/dicefer
    # real datasets (each ignores what does not apply to it)
    fold: int = 1                       # CK+, Oulu-CASIA: which subject-independent fold is the test set, 1..folds
    folds: int = 10
    contempt: bool = True               # CK+, AffectNet, folder: keep contempt as an 8th class; false drops those images
    peak_frames: int = 3                # CK+, Oulu-CASIA sequences: how many last frames count as the peak expression
    aligned: bool = True                # RAF-DB: the aligned 100x100 faces; false: the original images
    face_box: bool = True               # AffectNet: crop each image to its annotated face box
    # synthetic benchmark (ignored by other datasets)
    train_identities: int = 60
    test_identities: int = 20
    images_per_identity: int = 50
    confounded: bool = True
    min_intensity: float = 0.25         # expressions have intensity U(min_intensity, 1): low = classes overlap
    synthetic_seed: int | None = None   # the faces' seed; none: --seed. Fix it to vary only the model's seed over one benchmark


@dataclass
class ModelConfig:
    code_dim: int = 64                  # size of E and of I
    init: str = "random"                # random | imagenet | PATH to a ResNet-18 state dict (.pth, .pth.tar, .safetensors)
    maxpool: bool = True                # the stem's max-pool (torchvision's); false: 2x resolution for small faces, 2.15x compute at 48 px
    critic_dim: int = 128               # embedding size of the statistics networks
    classifier_hidden: int = 256        # width of the classifier's two hidden layers
    classifier_dropout: float = 0.0     # dropout after each hidden layer, in Stage 3 and the baseline (not in the paper)


@dataclass
class MIConfig:
    estimator: str = "dv"               # dv (Donsker-Varadhan, MINE) | jsd | infonce
    ema: float = 0.01                   # MINE moving-average rate for the DV gradient correction
    mu: float = 0.5                     # weight of the global MI term
    nu: float = 1.0                     # weight of the local MI term
    temperature: float = 0.1            # critics score cosine similarity / temperature; lower = sharper


@dataclass
class Stage1Config:
    epochs: int = 20
    lr: float = 1e-4
    delta: float = 0.1                  # weight of the L1 consistency term |E_M - E_N|
    global_critic: str = "code"         # code: T(M, E_N) = h(E_M).h(E_N) (no collapse from random weights); features: on M's feature map
    positives: str = "batch"            # batch: every same-expression (image, code) combination in the batch; pair: sampled partners only
    variance_weight: float = 0.0        # anti-collapse hinge on each code dimension's spread (VICReg); 0 = off, as in the paper
    ce_weight: float = 0.0              # cross-entropy on the code through a linear head (not in the paper; 0 = off)
    l1_standardise: bool = False        # L1 on batch-standardised codes, so shrinking the code cannot lower it (not in the paper)
    l1_relative: bool = False           # pairs' L1 over the mean L1 between any two codes: scale- and shape-free (not in the paper)
    l1_whiten: bool = False             # L1 on batch-whitened codes: directions down to ~1 % of a dimension's variance count alike, not just the dominant one (not in the paper)
    l1_after_mi: float | None = 0.0     # L1 enters once the MI estimate exceeds this (nats); none: from the first step, as in the paper

    @property
    def l1_scale(self) -> str:
        """How the L1 term is measured: raw (the paper), standardised, relative or whitened."""
        if self.l1_whiten:
            return "whitened"
        return "relative" if self.l1_relative else "standardised" if self.l1_standardise else "raw"


@dataclass
class Stage2Config:
    epochs: int = 20
    lr: float = 1e-4
    zeta_adv: float = 0.025             # weight of the adversarial term; the paper sweeps 0..0.05
    disc_lr: float = 1e-4


@dataclass
class Stage3Config:
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 256
    finetune_epochs: int = 0            # then train E and the classifier together on the pairs (not in the paper; 0 = off)
    finetune_lr: float = 1e-4
    finetune_delta: float = 0.0         # keep Stage 1's pair L1 (measured as stage1 says) at this weight while fine-tuning


@dataclass
class SupervisedConfig:
    epochs: int | None = None           # None: the epochs DICE-FER's encoders see (Stage 1 + Stage 2 + fine-tuning)
    lr: float = 1e-4


@dataclass
class TrainConfig:
    method: str = "dicefer"             # dicefer | supervised
    seed: int = 0
    batch_size: int = 32                # pairs per step (64 images); the supervised baseline takes 2x images
    lr_schedule: str = "constant"       # constant (the paper) | cosine: every stage's learning rates decay to 0 over its epochs
    device: str = "auto"                # auto | cpu | cuda (bf16 autocast, channels_last, loader workers)
    compile: bool = False               # torch.compile the encoders (CUDA; the first steps pay for compiling)
    precision: str = "auto"             # auto: bf16 autocast on CUDA and on CPUs with AVX-512 BF16 or AMX, else fp32 | fp32 | bf16
    threads: int = 0                    # torch CPU threads; 0 = leave PyTorch's default
    checkpoint_steps: int = 0           # also checkpoint every N steps of an epoch; 0 = after every epoch only
    monitor: bool = False               # score the evaluation split after every epoch (eval_accuracy, wall_clock in metrics.jsonl); training is unchanged
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mi: MIConfig = field(default_factory=MIConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)

    def supervised_epochs(self) -> int:
        s = self.supervised.epochs
        return self.stage1.epochs + self.stage2.epochs + self.stage3.finetune_epochs if s is None else s


_DEMO_DATA = {"size": 48, "train_identities": 60, "test_identities": 20, "images_per_identity": 50}

PRESETS: dict[str, dict[str, Any]] = {
    # About a minute on 2 CPU cores, for tests: full-intensity expressions, and the ~140 Stage 1
    # steps that a ResNet-18 from random weights needs before its MI estimate turns positive.
    "smoke": {
        "data": {"size": 32, "train_identities": 16, "test_identities": 6, "images_per_identity": 28,
                 "min_intensity": 1.0},
        "batch_size": 16,
        "stage1": {"epochs": 10, "lr": 1e-3},
        "stage2": {"epochs": 1, "lr": 1e-3},
        "stage3": {"epochs": 30},
        "supervised": {"lr": 1e-3},
    },
    # The default of `dicefer train`: under 10 minutes on 2 CPU cores with native bf16 (see
    # `precision`). From random weights the paper's recipe leaves identity in E at this budget, so
    # the demo adds the options of docs/method-notes.md (not in the paper): cross-entropy and the
    # pair L1 on batch-whitened codes in Stage 1, the L1 waiting for a clearly positive MI estimate,
    # fine-tuning that keeps the L1.
    "demo": {
        "data": _DEMO_DATA,
        "stage1": {"epochs": 42, "lr": 1e-3, "ce_weight": 1.0, "l1_whiten": True, "delta": 1.0,
                   "l1_after_mi": 0.1},
        "stage2": {"epochs": 2, "lr": 1e-3},
        "stage3": {"finetune_epochs": 12, "finetune_delta": 100.0},
        "supervised": {"lr": 1e-3},
    },
    # The demo's data and learning rates with the paper's recipe (the demo preset until 2026-11-29).
    "demo-paper": {
        "data": _DEMO_DATA,
        "stage1": {"epochs": 6, "lr": 1e-3},
        "stage2": {"epochs": 2, "lr": 1e-3},
        "supervised": {"lr": 1e-3},
    },
    # Real datasets on a CPU: 48x48, a cosine schedule, Stage 1 with a cross-entropy head and the MI
    # terms at a tenth of the paper's weights, the paper's raw L1 once the MI estimate passes 0.1 nats,
    # one Stage 2 epoch, the classifier on the frozen code (settings chosen on FER2013 val/).
    "real-cpu": {
        "data": {"size": 48},
        "lr_schedule": "cosine",
        "mi": {"mu": 0.05, "nu": 0.1},
        "stage1": {"epochs": 8, "lr": 1e-3, "ce_weight": 1.0, "l1_after_mi": 0.1},
        "stage2": {"epochs": 1, "lr": 1e-3},
        "supervised": {"lr": 1e-3},  # Stage 1 + Stage 2 epochs: as many encoder steps of 64 images
    },
    # The paper's recipe and nothing else: DV with the Deep InfoMax global critic on M's feature map and
    # the local critic, sampled pairs only, the raw L1 from the first step, Stage 2 as described, a
    # classifier on the frozen code; 112x112 grayscale, Adam 1e-4, batch 32 pairs, 64-d codes (GPU advised).
    "paper": {
        "data": {"size": 112, "train_identities": 400, "test_identities": 100, "images_per_identity": 70},
        "stage1": {"epochs": 30, "lr": 1e-4, "global_critic": "features", "positives": "pair", "l1_after_mi": None},
        "stage2": {"epochs": 30, "lr": 1e-4},
    },
}


def _merge(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with nested `updates` applied, type-checked."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {updates!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, path)
        elif value is None:
            if "None" not in str(fields[key].type):
                raise ConfigError(f"{path}: expected {type(current).__name__}, got null")
            changes[key] = None
        else:
            changes[key] = _coerce(_example(fields[key].type) if current is None else current, value, path)
    return dataclasses.replace(obj, **changes)


def _example(annotation: str) -> Any:
    """A value of an optional setting's type ('int | None' -> 0), so that it is type-checked like the rest."""
    kinds = {"int": 0, "float": 0.0, "str": "", "bool": False}
    return kinds.get(str(annotation).split("|")[0].strip())


def _coerce(current: Any, value: Any, path: str) -> Any:
    if current is None:  # an optional setting of a type _example does not know
        return value
    kind = type(current)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        if kind is int and float(value) != int(value):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return kind(value)
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{path}: expected {kind.__name__}, got {value!r}")


def _parse_override(text: str) -> dict[str, Any]:
    """`stage1.epochs=3` -> {"stage1": {"epochs": 3}}; the value is read as YAML (3, 1e-3, true, text)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (for example stage1.epochs=3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw  # not YAML (an unclosed bracket): the text itself, checked against the setting's type
    if isinstance(value, str) and _looks_numeric(raw):
        value = float(raw)
    nested: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def _looks_numeric(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not 'last wins'."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in one mapping (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def build_config(preset: str | None = "demo", file: Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the preset (None: none, as for a run's saved config), then the YAML file, then overrides."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    cfg = _merge(TrainConfig(), PRESETS[preset], "") if preset else TrainConfig()
    if file is not None:
        try:
            loaded = yaml.load(Path(file).read_text(), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {file} is not UTF-8 text") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {file} is not valid YAML: {' '.join(str(err).split())}") from None
        try:
            cfg = _merge(cfg, loaded, "")
            validate(cfg)
        except ConfigError as err:
            raise ConfigError(f"config file {file}: {err}") from None
    for text in overrides:
        cfg = _merge(cfg, _parse_override(text), "")
    validate(cfg)
    # Checked here, not in validate: a saved run stays loadable after its init file has moved.
    if cfg.model.init not in ("random", "imagenet") and not Path(cfg.model.init).expanduser().is_file():
        raise ConfigError(f"model.init={cfg.model.init!r} is neither random, imagenet nor an existing weights file")
    return cfg


def validate(cfg: TrainConfig) -> None:
    choices = {
        "method": (cfg.method, ("dicefer", "supervised")),
        "mi.estimator": (cfg.mi.estimator, ("dv", "jsd", "infonce")),
        "data.augment": (cfg.data.augment, ("paper", "flip", "none")),
        "data.eval_split": (cfg.data.eval_split, ("auto", "val", "test")),
        "stage1.positives": (cfg.stage1.positives, ("batch", "pair")),
        "stage1.global_critic": (cfg.stage1.global_critic, ("code", "features")),
        "device": (cfg.device, ("auto", "cpu", "cuda")),
        "precision": (cfg.precision, ("auto", "fp32", "bf16")),
        "lr_schedule": (cfg.lr_schedule, ("constant", "cosine")),
    }
    for name, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(valid)}")
    rates = {"stage1.lr": cfg.stage1.lr, "stage2.lr": cfg.stage2.lr, "stage2.disc_lr": cfg.stage2.disc_lr,
             "stage3.lr": cfg.stage3.lr, "stage3.finetune_lr": cfg.stage3.finetune_lr, "supervised.lr": cfg.supervised.lr}
    for name, rate in rates.items():
        if not rate > 0:
            raise ConfigError(f"{name}={rate!r}: a learning rate must be above 0")
    at_least = {"stage1.epochs": (cfg.stage1.epochs, 0), "stage2.epochs": (cfg.stage2.epochs, 0),
                "stage3.epochs": (cfg.stage3.epochs, 1), "stage3.batch_size": (cfg.stage3.batch_size, 1),
                "model.code_dim": (cfg.model.code_dim, 1), "model.critic_dim": (cfg.model.critic_dim, 1),
                "model.classifier_hidden": (cfg.model.classifier_hidden, 1), "threads": (cfg.threads, 0),
                "supervised.epochs": (cfg.supervised.epochs, 1), "mi.mu": (cfg.mi.mu, 0), "mi.nu": (cfg.mi.nu, 0),
                "stage1.delta": (cfg.stage1.delta, 0), "stage1.ce_weight": (cfg.stage1.ce_weight, 0),
                "stage1.variance_weight": (cfg.stage1.variance_weight, 0), "stage2.zeta_adv": (cfg.stage2.zeta_adv, 0),
                "stage3.finetune_delta": (cfg.stage3.finetune_delta, 0)}
    for name, (value, low) in at_least.items():
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be at least {low}")
    if not 0 < cfg.mi.ema <= 1 or not cfg.mi.temperature > 0:
        raise ConfigError(f"mi.ema={cfg.mi.ema!r} must be in (0, 1] and mi.temperature={cfg.mi.temperature!r} above 0")
    if cfg.checkpoint_steps < 0:
        raise ConfigError("checkpoint_steps must be 0 (after every epoch only) or a positive number of steps")
    if cfg.batch_size < 2:
        raise ConfigError("batch_size must be at least 2: the MI estimators contrast items within a batch")
    if cfg.data.size < 32:
        raise ConfigError("data.size must be at least 32 pixels")
    if not 0 <= cfg.data.crop_padding < cfg.data.size // 2:
        raise ConfigError(f"data.crop_padding must be between 0 and {cfg.data.size // 2 - 1} pixels")
    if cfg.data.folds < 2 or not 1 <= cfg.data.fold <= cfg.data.folds:
        raise ConfigError(f"data.fold={cfg.data.fold} of data.folds={cfg.data.folds}: need folds >= 2 and 1 <= fold <= folds")
    if not 0 <= cfg.model.classifier_dropout < 1:
        raise ConfigError("model.classifier_dropout must be at least 0 (off) and below 1")
    if cfg.stage1.l1_standardise + cfg.stage1.l1_relative + cfg.stage1.l1_whiten > 1:
        raise ConfigError("stage1.l1_standardise, l1_relative and l1_whiten are ways to measure the L1 term: set one")
    if cfg.stage3.finetune_epochs < 0:
        raise ConfigError("stage3.finetune_epochs must be 0 (the paper's frozen code) or a positive number of epochs")
    if not 0 <= cfg.seed < 2**32:  # NumPy's seeds are 32-bit
        raise ConfigError(f"seed={cfg.seed!r}: expected a whole number 0..{2**32 - 1}")
    seed = cfg.data.synthetic_seed
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**32):
        raise ConfigError(f"data.synthetic_seed={seed!r}: expected a non-negative integer, or null to follow --seed")
    if cfg.data.peak_frames < 1:
        raise ConfigError("data.peak_frames must be at least 1")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved config exactly (no preset applied)."""
    cfg = _merge(TrainConfig(), data, "")
    validate(cfg)
    return cfg
