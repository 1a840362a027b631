"""Configuration: one dataclass per concern, presets, YAML files and `key=value` overrides.

Unknown keys are rejected everywhere so that a typo never silently trains with a default.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from dicefer.data.spec import DataSpec
from dicefer.errors import ConfigError
from dicefer.paths import shown
from dicefer.retired import without_retired

MAX_SIZE = 1024  # data.size: no face network here takes more
MEMORY_LIMIT = 8 * 2**30  # bytes of rendered synthetic faces (uint8) a config may ask for

# Every setting with a fixed set of values has one of these types: validation, --help and the code
# that branches on the value read them from here.
Method = Literal["dicefer", "supervised"]
Backbone = Literal["resnet18", "mobilefacenet"]
Estimator = Literal["dv", "jsd", "infonce"]
Augment = Literal["paper", "flip", "none"]
EvalSplit = Literal["auto", "val", "test"]
Positives = Literal["batch", "pair"]
GlobalCriticKind = Literal["code", "features"]
L1Scale = Literal["raw", "whitened"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
Schedule = Literal["constant", "cosine"]


@dataclass
class DataConfig:
    spec: DataSpec = field(default_factory=DataSpec)  # --data: synthetic | rafdb:PATH | fer2013:PATH | ckplus:PATH | affectnet:PATH | oulu:PATH | folder:PATH
    size: int = 64                      # network input: faces are decoded once and resized to size x size
    grayscale: bool = True              # false: RGB
    augment: Augment = "paper"          # paper: rotations -15..15 deg in 5-deg steps x h-flip | flip: h-flip only | none
    eval_split: EvalSplit = "auto"      # auto: test if the dataset has one, else val | val | test
    strict: bool = False                # stop at the first unreadable image instead of skipping it with a warning
    fold: int = 1                       # CK+, Oulu-CASIA: the subject-independent fold tested, 1..folds
    folds: int = 10                     # CK+, Oulu-CASIA: how many folds
    contempt: bool = True               # CK+, AffectNet, folder: contempt as an 8th class; false drops those images
    peak_frames: int = 3                # CK+, Oulu-CASIA: how many last frames of a sequence show its expression
    aligned: bool = True                # RAF-DB: the aligned 100x100 faces; false: the original images
    face_box: bool = True               # AffectNet: crop each image to its annotated face box
    train_identities: int = 60          # synthetic: people in the training split
    test_identities: int = 20           # synthetic: unseen people in the test split
    images_per_identity: int = 50       # synthetic: images of each person
    min_intensity: float = 0.25         # synthetic: expression intensity is U(min_intensity, 1); low = classes overlap
    synthetic_seed: int | None = None   # synthetic: the faces' seed; null: --seed (fix it to vary only the model's seed)
    calibration_holdout: float = 0.0    # share of train held out, never trained on, to fit the probabilities' temperature
                                        # where no split is free for it (val is, when test is scored); 0: keep them uncalibrated


@dataclass
class ModelConfig:
    backbone: Backbone = "resnet18"     # resnet18 | mobilefacenet: the encoders' network (models/backbones.py), which fixes the input's aspect and pixel scaling
    code_dim: int = 64                  # size of E and of I
    init: str = "random"                # random | imagenet (resnet18) | PATH of the backbone's weights (.pth, .pth.tar, .ckpt, .safetensors)
    maxpool: bool = True                # the stem's max-pool; false: twice the resolution in every block, for small faces


@dataclass
class MIConfig:
    estimator: Estimator = "dv"         # dv (Donsker-Varadhan, MINE) | jsd | infonce
    mu: float = 0.5                     # weight of the global MI term
    nu: float = 1.0                     # weight of the local MI term


@dataclass
class Stage1Config:
    epochs: int = 20                    # Stage 1: the expression encoder E and its critics
    lr: float = 1e-4                    # Adam; also the baseline's, and a tenth of it for fine-tuning
    delta: float = 0.1                  # weight of the L1 consistency term |E_M - E_N|
    global_critic: GlobalCriticKind = "code"  # code: T(M, E_N) scores E_M against E_N | features: Deep InfoMax on M's feature map (the paper)
    positives: Positives = "batch"      # batch: every same-expression (image, code) pair of the batch | pair: the sampled partners (the paper)
    ce_weight: float = 0.0              # cross-entropy of a linear head on the code (0 = off, as in the paper)
    l1_scale: L1Scale = "raw"           # raw: the paper's L1 | whitened: on batch-whitened codes, every direction alike
    l1_after_mi: float | None = 0.0     # the L1 enters once the MI estimate exceeds this (nats); null: from the first step (the paper)


@dataclass
class Stage2Config:
    epochs: int = 20                    # Stage 2: the identity encoder I, E frozen
    lr: float = 1e-4                    # Adam, for I and its critics
    zeta_adv: float = 0.025             # weight of the adversarial term (the paper sweeps 0..0.05)
    disc_lr: float = 1e-4               # the shuffle discriminator's learning rate


@dataclass
class Stage3Config:
    epochs: int = 50                    # Stage 3: the classifier on the frozen code
    lr: float = 1e-3                    # Adam, for the classifier
    finetune_epochs: int = 0            # then E and the classifier together on the pairs (0 = off, as in the paper)
    finetune_delta: float = 0.0         # the pair L1 (measured as stage1.l1_scale says) kept at this weight while fine-tuning


@dataclass
class SupervisedConfig:
    epochs: int | None = None           # null: as many as DICE-FER's encoders (Stage 1 + Stage 2 + fine-tuning); lr: stage1.lr


@dataclass
class TrainConfig:
    method: Method = "dicefer"          # dicefer | supervised (the baseline: the same ResNet-18 and classifier, cross-entropy)
    seed: int = 0                       # every random draw: initialisation, pairs, augmentation, the synthetic faces
    batch_size: int = 32                # pairs per step (2 x batch_size images); the baseline's batches hold as many images
    lr_schedule: Schedule = "constant"  # constant (the paper) | cosine: each stage's rates decay to 0 over its epochs
    device: Device = "auto"             # auto: CUDA if there is one | cpu | cuda
    compile: bool = False               # torch.compile the encoders (worth it on a GPU for long runs)
    precision: Precision = "auto"       # auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32 | fp32 | bf16
    threads: int = 0                    # torch CPU threads; 0 = PyTorch's default
    checkpoint_steps: int = 0           # also checkpoint every N steps within an epoch; 0 = after every epoch only
    monitor: bool = False               # score the evaluation split after every epoch (metrics.jsonl); training is unchanged
    identity_reference: str | None = None  # PATH of a face-recognition MobileFaceNet: the report reads how much of its embedding each code predicts
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

    @property
    def finetune_lr(self) -> float:
        return self.stage1.lr / 10


def _read_presets() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """presets/NAME.yaml: each a partial config over the defaults, and its summary, the file's first
    comment paragraph (docs/method-notes.md has their history)."""
    folder = resources.files("dicefer") / "presets"
    presets, summaries = {}, {}
    for f in sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name[:-5]):
        text = f.read_text()
        presets[f.name[:-5]] = yaml.safe_load(text)
        first = itertools.takewhile(lambda line: line.startswith("#") and line.strip() != "#", text.splitlines())
        summaries[f.name[:-5]] = " ".join(line.lstrip("# ").strip() for line in first)
    return presets, summaries


PRESETS, PRESET_SUMMARIES = _read_presets()


def _merge(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with nested `updates` applied, type-checked."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {shown(updates)}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown config key {shown(path)}; valid keys here: {', '.join(fields)}")
        current = getattr(obj, key)
        if isinstance(current, DataSpec):
            changes[key] = value if isinstance(value, DataSpec) else DataSpec.parse(_coerce("", value, path))
        elif dataclasses.is_dataclass(current):
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
        raise ConfigError(f"{path}: expected true or false, got {shown(value)}")
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {shown(value)}")
        if kind is int and float(value) != int(value):
            raise ConfigError(f"{path}: expected an integer, got {shown(value)}")
        return kind(value)
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{path}: expected {kind.__name__}, got {shown(value)}")


def _parse_override(text: str) -> dict[str, Any]:
    """`stage1.epochs=3` -> {"stage1": {"epochs": 3}}; the value is read as YAML (3, 1e-3, true, text)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (for example stage1.epochs=3)")
    key, raw = text.split("=", 1)
    try:
        # data.spec is text as given: 'fer2013:' would read as a YAML mapping
        value = raw if key.strip() == "data.spec" else yaml.load(raw, Loader=_UniqueKeyLoader) if raw else ""
    except yaml.YAMLError:
        value = raw  # not YAML (an unclosed bracket, an alias): the text itself, checked against the setting's type
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
    """yaml.safe_load, except that a key given twice in one mapping is an error, not 'last wins', and
    aliases (*name) are refused: no setting needs them, and nested ones expand exponentially."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases such as *{shown(event.anchor)[1:-1]} are not accepted "
                                              "in a config; write the value out", event.start_mark)
        return super().compose_node(parent, index)

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
        except IsADirectoryError:
            raise ConfigError(f"config file {file} is a folder; give a YAML file (such as RUN/config.yaml)") from None
        except PermissionError:
            raise ConfigError(f"config file {file} cannot be read (permission denied)") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {file} is not UTF-8 text") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {file} is not valid YAML: {' '.join(str(err).split())}") from None
        try:
            cfg = _merge(cfg, without_retired(loaded, Stage1Config.lr) if isinstance(loaded, dict) else loaded, "")
            validate(cfg)
            _check_files(cfg)
        except ConfigError as err:
            raise ConfigError(f"config file {file}: {err}") from None
    cfg = apply_overrides(cfg, overrides)
    _check_files(cfg)
    return cfg


def _check_files(cfg: TrainConfig) -> None:
    """The files a config names exist. Checked when a config is built, not in validate: a saved run
    stays loadable after its init file has moved."""
    if cfg.model.init not in ("random", "imagenet") and not Path(cfg.model.init).expanduser().is_file():
        raise ConfigError(f"model.init={shown(cfg.model.init)} is neither random, imagenet nor an existing weights file")
    if cfg.identity_reference is not None and not Path(cfg.identity_reference).expanduser().is_file():
        raise ConfigError(f"identity_reference={shown(cfg.identity_reference)} is not an existing weights file")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`cfg` with KEY=VALUE overrides applied, validated."""
    for text in overrides:
        cfg = _merge(cfg, _parse_override(text), "")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    for name, (value, valid) in _choices(cfg).items():
        if value not in valid:
            raise ConfigError(f"{name}={shown(value)} is not one of: {', '.join(valid)}")
    rates = {"stage1.lr": cfg.stage1.lr, "stage2.lr": cfg.stage2.lr, "stage2.disc_lr": cfg.stage2.disc_lr,
             "stage3.lr": cfg.stage3.lr}
    for name, rate in rates.items():
        if not rate > 0:
            raise ConfigError(f"{name}={rate!r}: a learning rate must be above 0")
    at_least = {"stage1.epochs": (cfg.stage1.epochs, 0), "stage2.epochs": (cfg.stage2.epochs, 0),
                "stage3.epochs": (cfg.stage3.epochs, 1), "model.code_dim": (cfg.model.code_dim, 1), "threads": (cfg.threads, 0),
                "supervised.epochs": (cfg.supervised.epochs, 1), "mi.mu": (cfg.mi.mu, 0), "mi.nu": (cfg.mi.nu, 0),
                "stage1.delta": (cfg.stage1.delta, 0), "stage1.ce_weight": (cfg.stage1.ce_weight, 0),
                "stage2.zeta_adv": (cfg.stage2.zeta_adv, 0),
                "stage3.finetune_delta": (cfg.stage3.finetune_delta, 0)}
    for name, (value, low) in at_least.items():
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be at least {low}")
    if cfg.checkpoint_steps < 0:
        raise ConfigError("checkpoint_steps must be 0 (after every epoch only) or a positive number of steps")
    if cfg.batch_size < 2:
        raise ConfigError("batch_size must be at least 2: the MI estimators contrast items within a batch")
    if not 32 <= cfg.data.size <= MAX_SIZE:
        raise ConfigError(f"data.size={cfg.data.size}: must be 32 to {MAX_SIZE} pixels")
    if cfg.data.spec.name == "synthetic":
        _validate_synthetic(cfg.data)
    if cfg.data.folds < 2 or not 1 <= cfg.data.fold <= cfg.data.folds:
        raise ConfigError(f"data.fold={cfg.data.fold} of data.folds={cfg.data.folds}: need folds >= 2 and 1 <= fold <= folds")
    if cfg.stage3.finetune_epochs < 0:
        raise ConfigError("stage3.finetune_epochs must be 0 (the paper's frozen code) or a positive number of epochs")
    if not 0 <= cfg.seed < 2**32:  # NumPy's seeds are 32-bit
        raise ConfigError(f"seed={cfg.seed!r}: expected a whole number 0..{2**32 - 1}")
    seed = cfg.data.synthetic_seed
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**32):
        raise ConfigError(f"data.synthetic_seed={seed!r}: expected a non-negative integer, or null to follow --seed")
    if not 0 <= cfg.data.calibration_holdout <= 0.5:
        raise ConfigError(f"data.calibration_holdout={cfg.data.calibration_holdout!r}: expected a share of train, 0 to 0.5")
    if cfg.data.peak_frames < 1:
        raise ConfigError("data.peak_frames must be at least 1")
    if cfg.model.init == "imagenet" and cfg.model.backbone != "resnet18":
        raise ConfigError(f"model.init=imagenet: there are ImageNet weights for resnet18 only, not {cfg.model.backbone}; "
                          "give a face-recognition checkpoint (--init PATH) or --init random")


def choices(section: type, name: str) -> tuple[str, ...]:
    """The values a setting of a fixed set accepts (for --help and argparse), read from its type."""
    return get_args(get_type_hints(section)[name])


def _choices(obj: Any, where: str = "") -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Every setting of a fixed set in `obj` and its sections: dotted name -> (value, accepted values)."""
    found = {}
    for name, hint in get_type_hints(type(obj)).items():
        value, path = getattr(obj, name), f"{where}{name}"
        if get_origin(hint) is Literal:
            found[path] = (value, get_args(hint))
        elif dataclasses.is_dataclass(value) and not isinstance(value, DataSpec):
            found.update(_choices(value, path + "."))
    return found


def _validate_synthetic(data: DataConfig) -> None:
    """What the synthetic benchmark needs, checked before anything is rendered or trained: the
    identity probes need two people in the test split and two images of each."""
    for name, low in (("train_identities", 1), ("test_identities", 2), ("images_per_identity", 2)):
        if getattr(data, name) < low:
            raise ConfigError(f"data.{name}={getattr(data, name)}: must be at least {low}"
                              + (" (the identity probes need it)" if low == 2 else ""))
    if not 0.0 <= data.min_intensity <= 1.0:
        raise ConfigError(f"data.min_intensity={data.min_intensity}: must be between 0 and 1")
    images = (data.train_identities + data.test_identities) * data.images_per_identity
    needed = images * data.size ** 2 * (1 if data.grayscale else 3)
    if needed > MEMORY_LIMIT:
        raise ConfigError(f"data.size={data.size}, data.train_identities={data.train_identities}, data.test_identities="
                          f"{data.test_identities} and data.images_per_identity={data.images_per_identity} ask for "
                          f"{needed / 2**30:.1f} GiB of synthetic faces ({images} images); at most "
                          f"{MEMORY_LIMIT // 2**30} GiB: lower data.size or the counts")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain values, as config.yaml and a run's weights hold them (the data spec as its text)."""
    out = dataclasses.asdict(cfg)
    out["data"]["spec"] = str(cfg.data.spec)
    return out


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved config exactly (no preset applied)."""
    cfg = _merge(TrainConfig(), without_retired(data, Stage1Config.lr), "")
    validate(cfg)
    return cfg
