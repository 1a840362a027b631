"""Embedded benchmark: procedurally rendered grayscale faces with known identity and expression.

Real FER datasets rarely label identity, so we cannot measure directly how much identity leaks
into an expression code. Here both factors are known: every identity has its own face geometry
and shading, every expression is a set of facial action units (AUs) scaled by a random intensity,
and the training split can confound the two (each person mostly shows 2-3 expressions of their
own), which is exactly the shortcut an identity-free expression code has to avoid.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from dicefer.data.base import CLASSES, FaceSet
from dicefer.data.cache import default_cache_dir
from dicefer.paths import atomic_write

# Bump whenever a change to the drawing changes the pixels, so that stale disk caches are not reused.
RENDER_VERSION = 1
_SUPERSAMPLE = 3                      # draw at 3x, then box-filter down: antialiased edges
_PROGRESS_MIN_IMAGES = 2000           # below this a progress bar is noise
_TRAIN, _TEST = 0, 1                  # split ids in the rng keys
_OWN, _PERSON, _LABELS, _IMAGE = range(4)  # what an rng stream is for (see _rng)
_MEMORY: dict[str, tuple[FaceSet, FaceSet]] = {}

# Prototype AU activations at intensity 1 (FACS / EMFACS prototypes; AU10 and AU25 are added where
# the prototype's visible upper-lip raise or parted lips need them). Neutral has none.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
    "Fear": {"AU1": 1.0, "AU2": 0.6, "AU4": 0.8, "AU5": 1.0, "AU20": 1.0, "AU25": 0.8, "AU26": 0.35},
    "Disgust": {"AU9": 1.0, "AU10": 0.8, "AU15": 0.8, "AU16": 0.7},
    "Happiness": {"AU6": 1.0, "AU12": 1.0, "AU25": 0.6},
    "Sadness": {"AU1": 1.0, "AU4": 0.7, "AU15": 1.0},
    "Anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 1.0, "AU23": 1.0},
    "Neutral": {},
}
_AUS = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU16", "AU20", "AU23", "AU25", "AU26")
_NEUTRAL = CLASSES.index("Neutral")
# Curve parameters in [-1, 1], precomputed: per-image numpy overhead dominates the drawing time.
_T9, _T11, _T15, _T17 = (np.linspace(-1, 1, n) for n in (9, 11, 15, 17))
_ARC15 = (1 - _T15**2) ** 0.7


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the rendered benchmark; its hash keys the cache."""

    train_identities: int = 60
    test_identities: int = 20
    images_per_identity: int = 50      # per identity, for both splits
    size: int = 64                     # output images are size x size, uint8 grayscale
    confounded: bool = True            # training identities show mostly 2-3 expressions of their own
    dominant_share: float = 0.85       # share of a confounded training identity's images drawn from its own 2-3 expressions
    min_intensity: float = 0.25        # expression intensity ~ U(min_intensity, 1); neutral has none
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_identities", "test_identities", "images_per_identity"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticSpec.{name} must be positive, got {getattr(self, name)}")
        if self.size < 32:
            raise ValueError(f"SyntheticSpec.size must be >= 32 (features vanish below), got {self.size}")
        if not 0.0 <= self.dominant_share <= 1.0:
            raise ValueError(f"SyntheticSpec.dominant_share must be in [0, 1], got {self.dominant_share}")
        if not 0.0 <= self.min_intensity <= 1.0:
            raise ValueError(f"SyntheticSpec.min_intensity must be in [0, 1], got {self.min_intensity}")


@dataclass(frozen=True)
class _Identity:
    """One person's appearance, in canvas units (1.0 = image width)."""

    background: float
    skin: float
    hair: float
    hair_style: int                    # 0 short, 1 long, 2 bald
    hair_volume: float
    hairline: float                    # forehead left uncovered above the neutral brows
    shirt: float
    face_w: float                      # half-width of the face ellipse
    face_h: float                      # half-height of the upper face
    chin: float                        # lower-face half-height relative to face_h
    face_y: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    iris: float
    iris_r: float
    brow_dy: float
    brow_len: float
    brow_thick: float
    brow_dark: float
    nose_len: float
    nose_w: float
    mouth_dy: float
    mouth_w: float
    lip_thick: float
    ear: float
    glasses: bool


# ---------------------------------------------------------------------------------------------- API


def load_synthetic(spec: SyntheticSpec, cache_dir: Path | None = None, progress: bool = True) -> tuple[FaceSet, FaceSet]:
    """(train, test). Cached: in memory (per process) and on disk as .npz under cache_dir
    (default: $DICEFER_CACHE or ~/.cache/dicefer), keyed by a hash of the spec and RENDER_VERSION,
    because rendering takes seconds and every experiment reloads the same benchmark."""
    key = _spec_key(spec)
    if key not in _MEMORY:
        path = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / f"synthetic-{key}.npz"
        _MEMORY[key] = _load_npz(path) if path.exists() else _render_and_store(spec, path, progress)
    # Copies, so that a caller normalising in place cannot corrupt the cache.
    return tuple(f.subset(np.arange(len(f))) for f in _MEMORY[key])  # type: ignore[return-value]


def render_face(spec: SyntheticSpec, identity: int, expression: int, intensity: float = 1.0,
                nuisance: bool = False, k: int = 0) -> np.ndarray:
    """One face of a benchmark identity (global id, as in FaceSet.identity) at a chosen expression
    and intensity, for inspection and tests; with nuisance=False there is no pose, lighting, noise
    or AU jitter, so two renders differ only by what is asked for."""
    split = _split_of(spec, identity)
    person = _sample_identity(_rng(spec, split, _PERSON, identity))
    rng = _rng(spec, split, _IMAGE, identity, k) if nuisance else None
    aus = _expression_aus(expression, intensity, rng)
    return _render(person, aus, spec.size, rng)


def save_contact_sheet(faces: FaceSet, path: Path, identities: int = 6) -> None:
    """PNG grid, rows = the first `identities` identities, columns = CLASSES (one image each, blank if
    none): the quickest way to check by eye that faces and expressions look right."""
    if faces.identity is None:
        raise ValueError(f"{faces.name}: a contact sheet needs identity labels")
    people = list(dict.fromkeys(faces.identity.tolist()))[:identities]
    scale = max(1, math.ceil(96 / faces.size))
    cell, label_w, title_h = faces.size * scale, 48, 18
    sheet = Image.new("L", (label_w + cell * len(CLASSES), title_h + cell * len(people)), 255)
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for col, name in enumerate(CLASSES):
        draw.text((label_w + col * cell + 2, 2), name, fill=0, font=font)
    for row, person in enumerate(people):
        top = title_h + row * cell
        draw.text((2, top + cell // 2 - 6), f"id {person}", fill=0, font=font)
        for col in range(len(CLASSES)):
            hits = np.flatnonzero((faces.identity == person) & (faces.expression == col))
            if len(hits):
                tile = Image.fromarray(faces.images[hits[0]]).resize((cell, cell), Image.NEAREST)
                sheet.paste(tile, (label_w + col * cell, top))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# -------------------------------------------------------------------------------------- caching


def _spec_key(spec: SyntheticSpec) -> str:
    blob = json.dumps({"render_version": RENDER_VERSION, **asdict(spec)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_npz(path: Path) -> tuple[FaceSet, FaceSet]:
    with np.load(path) as z:
        return tuple(  # type: ignore[return-value]
            FaceSet(z[f"{s}_images"], z[f"{s}_expression"], z[f"{s}_identity"], f"synthetic-{s}")
            for s in ("train", "test")
        )


def _render_and_store(spec: SyntheticSpec, path: Path, progress: bool) -> tuple[FaceSet, FaceSet]:
    train, test = _render_splits(spec, progress)
    arrays = {f"{s}_{field}": getattr(f, field) for s, f in (("train", train), ("test", test))
              for field in ("images", "expression", "identity")}

    def store(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, store)  # a concurrent reader sees either no file or a complete one
    return train, test


# ---------------------------------------------------------------------------------- label plans


def _rng(spec: SyntheticSpec, split: int, purpose: int, identity: int = 0, k: int = 0) -> np.random.Generator:
    """An independent stream per (split, purpose, identity, image): rendering order never matters.
    Keys always have the same length, because SeedSequence pads short keys with zeros
    ((s, 0, 3) and (s, 0, 3, 0) would otherwise be the same stream)."""
    return np.random.default_rng((spec.seed, split, purpose, identity, k))


def _split_of(spec: SyntheticSpec, identity: int) -> int:
    """Split id of a global identity id."""
    if 0 <= identity < spec.train_identities:
        return _TRAIN
    if identity < spec.train_identities + spec.test_identities:
        return _TEST
    raise ValueError(f"identity {identity} is not in this spec (0..{spec.train_identities + spec.test_identities - 1})")


def _spread(total: int, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels: `total` images over `classes` as evenly as possible, remainders to random classes."""
    counts = np.full(len(classes), total // len(classes))
    counts[rng.choice(len(classes), total % len(classes), replace=False)] += 1
    return np.repeat(classes, counts)


def _own_expressions(spec: SyntheticSpec) -> list[np.ndarray]:
    """Each training identity's 2-3 own expressions, least-used classes first, so that the
    confounded split stays roughly class-balanced overall."""
    rng = _rng(spec, _TRAIN, _OWN)
    dominant = round(spec.dominant_share * spec.images_per_identity)
    load = np.zeros(len(CLASSES))
    owns = []
    for _ in range(spec.train_identities):
        n_own = int(rng.integers(2, 4))
        order = rng.permutation(len(CLASSES))
        own = np.sort(order[np.argsort(load[order], kind="stable")[:n_own]])
        load[own] += dominant / n_own
        owns.append(own)
    return owns


def _label_plans(spec: SyntheticSpec, split: int) -> list[np.ndarray]:
    """Per identity of the split, the expression label of each of its images."""
    n = spec.images_per_identity
    every = np.arange(len(CLASSES))
    first = 0 if split == _TRAIN else spec.train_identities
    count = spec.train_identities if split == _TRAIN else spec.test_identities
    owns = _own_expressions(spec) if split == _TRAIN and spec.confounded else None
    plans = []
    for i in range(count):
        rng = _rng(spec, split, _LABELS, first + i)
        if owns is None:
            labels = _spread(n, every, rng)
        else:
            dominant = round(spec.dominant_share * n)
            others = np.setdiff1d(every, owns[i])
            labels = np.concatenate([_spread(dominant, owns[i], rng), _spread(n - dominant, others, rng)])
        plans.append(rng.permutation(labels))
    return plans


def _render_splits(spec: SyntheticSpec, progress: bool) -> tuple[FaceSet, FaceSet]:
    total = (spec.train_identities + spec.test_identities) * spec.images_per_identity
    with tqdm(total=total, desc="rendering synthetic faces", disable=not progress or total < _PROGRESS_MIN_IMAGES) as bar:
        return tuple(_render_split(spec, split, bar) for split in (_TRAIN, _TEST))  # type: ignore[return-value]


def _render_split(spec: SyntheticSpec, split: int, bar: tqdm) -> FaceSet:
    first = 0 if split == _TRAIN else spec.train_identities
    plans = _label_plans(spec, split)
    images = np.empty((sum(map(len, plans)), spec.size, spec.size), np.uint8)
    identity = np.repeat(np.arange(first, first + len(plans)), [len(p) for p in plans])
    row = 0
    for i, labels in enumerate(plans):
        person = _sample_identity(_rng(spec, split, _PERSON, first + i))
        for k, label in enumerate(labels):
            rng = _rng(spec, split, _IMAGE, first + i, k)
            intensity = rng.uniform(spec.min_intensity, 1.0)
            images[row] = _render(person, _expression_aus(int(label), intensity, rng), spec.size, rng)
            row += 1
        bar.update(len(labels))
    name = "synthetic-train" if split == _TRAIN else "synthetic-test"
    return FaceSet(images, np.concatenate(plans), identity, name)


# ------------------------------------------------------------------------------- identity / AUs


def _sample_identity(rng: np.random.Generator) -> _Identity:
    """Strong, visible identity factors: shape, tones, feature sizes and spacing, hair, glasses."""
    u = rng.uniform
    skin = u(90, 215)
    background = _contrasting(rng, skin, 45)
    hair = _contrasting(rng, skin, 60, low=10, high=200)
    face_w = u(0.26, 0.34)
    face_h = face_w * u(1.0, 1.45)
    eye_w = u(0.052, 0.075)
    return _Identity(
        background=background, skin=skin, hair=hair,
        hair_style=int(rng.choice(3, p=[0.55, 0.33, 0.12])), hair_volume=u(0.03, 0.16), hairline=u(0.085, 0.16),
        shirt=u(20, 235), face_w=face_w, face_h=face_h, chin=u(0.85, 1.12), face_y=u(0.49, 0.54),
        eye_y=u(-0.2, 0.0) * face_h, eye_dx=u(0.34, 0.44) * face_w, eye_w=eye_w, eye_h=u(0.45, 0.62) * eye_w,
        iris=u(10, 90), iris_r=u(0.4, 0.55) * eye_w,
        brow_dy=u(0.05, 0.075), brow_len=u(0.9, 1.25) * eye_w, brow_thick=u(0.016, 0.034), brow_dark=u(0.6, 0.95),
        nose_len=u(0.26, 0.4) * face_h, nose_w=u(0.018, 0.034), mouth_dy=u(0.15, 0.24) * face_h,
        mouth_w=u(0.24, 0.34) * face_w, lip_thick=u(0.008, 0.018), ear=u(0.75, 1.3), glasses=bool(u() < 0.3),
    )


def _contrasting(rng: np.random.Generator, ref: float, gap: float, low: float = 15, high: float = 240) -> float:
    """A gray level in [low, high] at least `gap` away from `ref`, so that parts stay separable."""
    ranges = [(lo, hi) for lo, hi in ((low, ref - gap), (ref + gap, high)) if hi > lo]
    lo, hi = ranges[int(rng.integers(len(ranges)))]
    return rng.uniform(lo, hi)


def _expression_aus(expression: int, intensity: float, rng: np.random.Generator | None) -> dict[str, float]:
    """AU activations of one image: the class prototype times the intensity, with a little per-AU
    jitter (and a faint random twitch for neutral) when an rng is given."""
    prototype = _PROTOTYPES[CLASSES[expression]]
    aus = {au: prototype.get(au, 0.0) * intensity for au in _AUS}
    if rng is not None:
        jitter = rng.uniform(0.85, 1.15, len(_AUS))
        twitch = rng.uniform(0.0, 0.08, len(_AUS)) if expression == _NEUTRAL else np.zeros(len(_AUS))
        aus = {au: aus[au] * j + t for au, j, t in zip(_AUS, jitter, twitch)}
    return aus


# -------------------------------------------------------------------------------------- drawing


def _render(person: _Identity, aus: dict[str, float], size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Draw at supersampled resolution, apply pose if asked, downsample, then light and add noise."""
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), round(person.background))
    _Painter(ImageDraw.Draw(canvas), size * _SUPERSAMPLE, person, aus).draw()
    if rng is not None:
        canvas = _pose(canvas, rng, size, person.background)
    image = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32)
    if rng is not None:
        image = _lighting_and_noise(image, rng)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _pose(canvas: Image.Image, rng: np.random.Generator, size: int, fill: float) -> Image.Image:
    """Small in-plane rotation (+-8 deg), scale (+-6 %) and shift (+-3 px at 64) about the centre."""
    angle = math.radians(rng.uniform(-8, 8))
    scale = rng.uniform(0.94, 1.06)
    shift = rng.uniform(-3, 3, 2) * size / 64 * _SUPERSAMPLE
    c = canvas.width / 2
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # PIL maps output -> input: in = c + R(-angle) (out - c - shift) / scale
    ox, oy = c + shift[0], c + shift[1]
    data = (cos, sin, c - cos * ox - sin * oy, -sin, cos, c + sin * ox - cos * oy)
    # NEAREST at the supersampled size is 7x faster than BILINEAR; the box downsample smooths it.
    return canvas.transform(canvas.size, Image.AFFINE, data, Image.NEAREST, fillcolor=round(fill))


def _lighting_and_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear lighting gradient of random direction and strength, then gaussian pixel noise."""
    n = image.shape[0]
    theta, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.3)
    ramp = (np.arange(n, dtype=np.float32) / (n - 1) - 0.5) * strength
    gain = 1.0 + ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta)
    return image * gain + rng.uniform(1.5, 6.0) * rng.standard_normal(image.shape, dtype=np.float32)


def _mix(a: float, b: float, t: float) -> int:
    return round(a + (b - a) * min(max(t, 0.0), 1.0))


class _Painter:
    """Draws one face in canvas units (1.0 = image width, y down), mapping each AU to a change of
    brow, eye, nose and mouth geometry (plus the wrinkles that make low intensities readable)."""

    def __init__(self, draw: ImageDraw.ImageDraw, pixels: int, person: _Identity, aus: dict[str, float]):
        self.d, self.px, self.p, self.a = draw, pixels, person, aus
        p = person
        self.cx, self.cy = 0.5, p.face_y
        self.eye_y = self.cy + p.eye_y
        self.nose_y = self.eye_y + p.nose_len
        self.mouth_y = self.nose_y + p.mouth_dy
        self.dark = max(p.skin * 0.35, 8)

    def draw(self) -> None:
        self._body()
        self._head()
        self._forehead_lines()
        self._hair_cap()
        self._brows()
        self._eyes()
        self._nose()
        self._folds()
        self._mouth()
        if self.p.glasses:
            self._glasses()

    # -- primitives in canvas units
    def _box(self, x: float, y: float, rx: float, ry: float) -> list[float]:
        s = self.px
        return [(x - rx) * s, (y - ry) * s, (x + rx) * s, (y + ry) * s]

    def _pts(self, xs: np.ndarray, ys: np.ndarray) -> list[float]:
        """Flat [x0, y0, x1, y1, ...] in pixels: one tolist() call is the cheapest hand-over to PIL."""
        return (np.column_stack((xs, ys)).ravel() * self.px).tolist()

    def _w(self, width: float) -> int:
        return max(1, round(width * self.px))

    def _region(self, xs: np.ndarray, top: np.ndarray, bottom: np.ndarray, fill: int) -> None:
        """Fill between two curves sampled at the same xs."""
        self.d.polygon(self._pts(np.concatenate((xs, xs[::-1])), np.concatenate((top, bottom[::-1]))), fill=fill)

    def _line(self, xs: np.ndarray, ys: np.ndarray, fill: int, width: float) -> None:
        self.d.line(self._pts(np.asarray(xs), np.asarray(ys)), fill=fill, width=self._w(width), joint="curve")

    # -- parts
    def _body(self) -> None:
        p, d = self.p, self.d
        d.ellipse(self._box(self.cx, 1.12, 0.5, 0.2), fill=round(p.shirt))
        d.rectangle(self._box(self.cx, self.cy + p.face_h, p.face_w * 0.42, p.face_h * 0.8), fill=_mix(p.skin, 0, 0.15))
        if p.hair_style != 2:
            hw, hh = p.face_w * (1 + p.hair_volume), p.face_h * (1 + p.hair_volume)
            d.chord(self._box(self.cx, self.cy, hw, hh), 180, 360, fill=round(p.hair))
            if p.hair_style == 1:
                d.rectangle(self._box(self.cx, self.cy + p.face_h * 0.45, hw, p.face_h * 0.45), fill=round(p.hair))
        if p.hair_style != 1:
            for side in (-1, 1):
                d.ellipse(self._box(self.cx + side * p.face_w * 0.97, self.eye_y + 0.035, 0.028 * p.ear, 0.05 * p.ear),
                          fill=_mix(p.skin, 0, 0.12))

    def _head(self) -> None:
        p, d = self.p, self.d
        jaw = 0.05 * self.a["AU26"]
        d.chord(self._box(self.cx, self.cy, p.face_w, p.face_h), 180, 360, fill=round(p.skin))
        d.chord(self._box(self.cx, self.cy, p.face_w, p.face_h * p.chin + jaw), 0, 180, fill=round(p.skin))

    def _forehead_lines(self) -> None:
        a, p = self.a, self.p
        t = 0.5 * (a["AU1"] + a["AU2"])
        if t < 0.05:
            return
        xs = _T9
        for k in range(2):
            y = self.eye_y - p.brow_dy - 0.04 - 0.03 * k - 0.04 * t
            self._line(self.cx + xs * p.face_w * 0.45, y + 0.01 * xs**2, _mix(p.skin, self.dark, 0.55 * t), 0.008)

    def _hair_cap(self) -> None:
        p = self.p
        if p.hair_style == 2:
            return
        hw, hh = p.face_w * (1 + p.hair_volume), p.face_h * (1 + p.hair_volume)
        rise = self.cy - (self.eye_y - p.brow_dy - p.hairline)
        if rise >= hh:
            return
        alpha = math.degrees(math.asin(rise / hh))
        self.d.chord(self._box(self.cx, self.cy, hw, hh), 180 + alpha, 360 - alpha, fill=round(p.hair))

    def _brows(self) -> None:
        a, p = self.a, self.p
        inner_up = 0.06 * a["AU1"] + 0.01 * a["AU2"] - 0.04 * a["AU4"] - 0.012 * a["AU9"]
        outer_up = 0.05 * a["AU2"] + 0.012 * a["AU1"] - 0.008 * a["AU4"] - 0.008 * a["AU9"]
        pull_in = 0.022 * a["AU4"]
        color = _mix(p.skin, min(p.hair, p.skin * 0.3, 60), p.brow_dark)
        base = self.eye_y - p.brow_dy
        for side in (-1, 1):
            centre = self.cx + side * p.eye_dx
            inner_x = centre - side * (p.brow_len - pull_in)
            outer_x = centre + side * p.brow_len
            xs = np.array([inner_x, (inner_x + outer_x) / 2, outer_x])
            ys = np.array([base - inner_up, base - 0.5 * (inner_up + outer_up) - 0.012, base - outer_up + 0.004])
            self._line(xs, ys, color, p.brow_thick)
        if a["AU4"] > 0.05:
            for side in (-1, 1):
                x = self.cx + side * 0.012
                self._line(np.array([x, x]), np.array([base - 0.03, base + 0.005]),
                           _mix(p.skin, self.dark, 0.65 * a["AU4"]), 0.006)

    def _eyes(self) -> None:
        a, p = self.a, self.p
        upper = p.eye_h * max(0.15, 1 + 0.9 * a["AU5"] - 0.45 * a["AU7"] - 0.15 * a["AU4"] - 0.15 * a["AU6"])
        lower = 0.8 * p.eye_h * max(0.1, 1 - 0.6 * a["AU6"] - 0.45 * a["AU7"] - 0.35 * a["AU9"] + 0.25 * a["AU5"])
        t, arc = _T15, _ARC15
        for side in (-1, 1):
            ex = self.cx + side * p.eye_dx
            top, bottom = self.eye_y - upper * arc, self.eye_y + lower * arc
            self._region(ex + t * p.eye_w, top, bottom, 228)
            self._iris(ex, upper, lower)
            self._line(ex + t * p.eye_w, top, round(min(p.hair, 40)), 0.008)
            crease = 0.6 * a["AU6"] + 0.3 * a["AU9"]
            if crease > 0.05:
                self._line(ex + t[2:-2] * p.eye_w, self.eye_y + lower * arc[2:-2] + 0.016,
                           _mix(p.skin, self.dark, 0.8 * crease), 0.007)

    def _iris(self, ex: float, upper: float, lower: float) -> None:
        """Iris disc clipped to the lid opening, so narrowed eyes hide it and wide eyes show white."""
        p = self.p
        r = p.iris_r
        dx = r * _T11
        chord = np.sqrt(np.maximum(r**2 - dx**2, 0))
        lid = (1 - (dx / p.eye_w) ** 2).clip(0) ** 0.7
        top = np.maximum(self.eye_y - chord, self.eye_y - upper * lid)
        bottom = np.minimum(self.eye_y + chord, self.eye_y + lower * lid)
        self._region(ex + dx, top, bottom, round(p.iris))

    def _nose(self) -> None:
        a, p = self.a, self.p
        lift = 0.01 * a["AU9"]
        w = p.nose_w * (1 + 0.25 * a["AU9"])
        y = self.nose_y - lift
        shade = _mix(p.skin, self.dark, 0.4)
        self._line(np.array([self.cx + 0.006, self.cx + 0.012, self.cx + w * 0.6]),
                   np.array([self.eye_y + 0.02, y - 0.03, y - 0.005]), shade, 0.007)
        t = _T9
        self._line(self.cx + t * w, y + 0.004 - 0.01 * (1 - t**2) + 0.004 * t**2, shade, 0.007)
        for side in (-1, 1):
            self.d.ellipse(self._box(self.cx + side * w * 0.5, y, 0.009, 0.0055), fill=_mix(p.skin, self.dark, 0.8))
        if a["AU9"] > 0.05:
            for k in range(3):
                yy = self.eye_y + 0.012 + 0.014 * k
                self._line(self.cx + np.array([-0.018, 0.0, 0.018]), yy + np.array([0.004, 0.0, 0.004]),
                           _mix(p.skin, self.dark, 0.7 * a["AU9"]), 0.006)

    def _folds(self) -> None:
        """Nasolabial folds: deepen with smiling, nose wrinkling and lip stretching."""
        a, p = self.a, self.p
        depth = min(1.0, 0.9 * a["AU12"] + 0.6 * a["AU9"] + 0.5 * a["AU10"] + 0.4 * a["AU20"])
        if depth < 0.05:
            return
        width, corner = self._mouth_shape()[:2]
        for side in (-1, 1):
            xs = self.cx + side * np.array([p.nose_w + 0.012, width + 0.018, width + 0.02])
            ys = np.array([self.nose_y - 0.01, self.mouth_y - 0.01 + corner * 0.5, self.mouth_y + corner + 0.01])
            self._line(xs, ys, _mix(p.skin, self.dark, 0.6 * depth), 0.007)

    def _mouth_shape(self) -> tuple[float, float, float, float, float]:
        """(half-width, corner lift (+ = down), upper gap, lower gap, lip thickness) from the AUs."""
        a, p = self.a, self.p
        width = p.mouth_w * (1 + 0.22 * a["AU12"] + 0.35 * a["AU20"] - 0.15 * a["AU23"] - 0.12 * a["AU26"])
        corner = -0.045 * a["AU12"] + 0.032 * a["AU15"] + 0.008 * a["AU20"] + 0.006 * a["AU16"]
        upper_gap = 0.005 * a["AU25"] + 0.018 * a["AU10"] + 0.008 * a["AU26"]
        lower_gap = 0.018 * a["AU25"] + 0.07 * a["AU26"] + 0.02 * a["AU16"]
        thick = p.lip_thick * (1 - 0.75 * a["AU23"]) * (1 - 0.3 * a["AU20"])
        return width, corner, upper_gap, lower_gap, thick

    def _mouth(self) -> None:
        p = self.p
        width, corner, upper_gap, lower_gap, thick = self._mouth_shape()
        t, bulge = _T17, 1 - _T17**2
        base = self.mouth_y + corner * t**2
        upper_in, lower_in = base - upper_gap * bulge, base + lower_gap * bulge**0.8
        upper_out, lower_out = upper_in - thick * bulge**0.5, lower_in + 1.3 * thick * bulge**0.5
        xs = self.cx + t * width
        lip = _mix(p.skin, self.dark, 0.55)
        self._region(xs, upper_out, lower_out, lip)
        if upper_gap + lower_gap > 0.004:
            self._region(xs, upper_in, lower_in, 25)
            teeth = np.minimum(upper_in + 0.014 * bulge**0.5, lower_in)
            self._region(xs, upper_in, teeth, 225)
        self._line(xs, upper_in, round(self.dark * 0.6), 0.006)

    def _glasses(self) -> None:
        p = self.p
        frame = round(min(p.hair, 50))
        rx, ry = p.eye_w * 1.4, p.eye_w * 0.85
        for side in (-1, 1):
            ex = self.cx + side * p.eye_dx
            self.d.ellipse(self._box(ex, self.eye_y, rx, ry), outline=frame, width=self._w(0.009))
            self._line(np.array([ex + side * rx, self.cx + side * p.face_w]), np.array([self.eye_y] * 2), frame, 0.008)
        self._line(np.array([self.cx - p.eye_dx + rx, self.cx + p.eye_dx - rx]), np.array([self.eye_y - 0.01] * 2),
                   frame, 0.008)
