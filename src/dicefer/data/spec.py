"""`--data SPEC` as a typed value: parsed once, where the config is built, and carried as (name, path)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicefer.data.listing import DataError
from dicefer.errors import ConfigError
from dicefer.paths import shown

ON_DISK = ("rafdb", "fer2013", "ckplus", "affectnet", "oulu", "folder")  # each a module of data/ and an adapter


@dataclass(frozen=True)
class DataSpec:
    """'synthetic' (the embedded benchmark) or NAME:PATH of a dataset on disk."""

    name: str = "synthetic"
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        name, _, path = str(text).partition(":")
        if name != "synthetic" and name not in ON_DISK:
            raise ConfigError(f"unknown dataset spec {shown(str(text))}; valid: synthetic, {', '.join(f'{n}:PATH' for n in ON_DISK)}")
        if name == "synthetic" and path:
            raise ConfigError("the synthetic dataset takes no path; set its options with data.* "
                              "(for example data.train_identities=100)")
        if name in ON_DISK and not path:
            raise ConfigError(f"dataset spec {shown(str(text))} needs a path: {name}:PATH")
        return cls(name, path)

    def root(self) -> Path:
        """The dataset's folder (or file), which must exist: checked when the dataset is read, not
        when a run's saved config is, so that a run stays loadable after its data has moved."""
        root = Path(self.path).expanduser()
        if not root.exists():
            raise DataError(f"{self.path} does not exist (from --data {self})")
        return root

    def __str__(self) -> str:
        return f"{self.name}:{self.path}" if self.path else self.name
