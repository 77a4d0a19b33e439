"""Where the config of a comparison or an ablation came from: the YAML file, the `--set` overrides, and the
epochs each network run trains. Recorded as tags of the parent run and stated near the top of the report,
so that a shortened smoke run (`--set train.epochs=5`) is not read as the method's result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ssgan.config import Config

DEFAULTS = "the built-in defaults"  # `-c` not given
NO_OVERRIDES = "none"  # the `overrides` tag when nothing was overridden (an override always holds '=')
SEPARATOR = "; "


@dataclass(frozen=True)
class ConfigOrigin:
    source: str  # the YAML file, or DEFAULTS
    overrides: tuple[str, ...]  # `key=value` as given to --set, in order
    epochs: int  # train.epochs of the resolved config: what every network run trains

    @classmethod
    def of(cls, cfg: Config, config_path: Optional[str] = None, overrides: Sequence[str] = ()) -> ConfigOrigin:
        return cls(str(config_path) if config_path else DEFAULTS, tuple(overrides), cfg.train.epochs)

    def tags(self) -> dict[str, str]:
        return {"config": self.source, "overrides": SEPARATOR.join(self.overrides) or NO_OVERRIDES,
                "epochs": str(self.epochs)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Optional[ConfigOrigin]:
        """None for a parent run recorded before these tags existed."""
        if not {"config", "overrides", "epochs"} <= set(tags):
            return None
        text = tags["overrides"]
        return cls(tags["config"], () if text == NO_OVERRIDES else tuple(text.split(SEPARATOR)), int(tags["epochs"]))

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "overrides": list(self.overrides), "epochs": self.epochs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfigOrigin:
        return cls(d["source"], tuple(d["overrides"]), d["epochs"])

    def sentence(self) -> str:
        """`Config: configs/x.yaml with overrides train.epochs=5 (5 epochs per network run).`"""
        changed = f"with overrides {SEPARATOR.join(self.overrides)}" if self.overrides else "no overrides"
        sep = " " if self.overrides else ", "
        return f"Config: {self.source}{sep}{changed} ({self.epochs} epoch{'s' if self.epochs != 1 else ''} per network run)."
