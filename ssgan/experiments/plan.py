"""The grid of a comparison or ablation: label budgets x split seeds x methods, parsed from the command line."""
from __future__ import annotations

from dataclasses import dataclass

from ssgan.config import modes
from ssgan.errors import ConfigError
from ssgan.experiments.baselines import BASELINES
from ssgan.training.seeds import STACKABLE  # the modes whose seeds train at once (--seeds-at-once)

MODES = modes()  # the toolkit's network: ssgan, supervised, vat, mean_teacher, pi_model; the rest are scikit-learn's
ENSEMBLE = "ssgan_ensemble"  # `Plan.members` ssgan runs per split, averaged
METHODS = (*MODES, ENSEMBLE, *BASELINES)
DEFAULT_METHODS = (*STACKABLE, *BASELINES)  # `ssgan compare` without --methods (an ensemble costs --members runs)
ALL = "all"  # the budget that uses every training label: the fully supervised ceiling


@dataclass(frozen=True)
class Plan:
    """The grid of a comparison: label budgets x split seeds 0..seeds-1 x methods."""

    budgets: tuple[str, ...]  # "20", "50", ..., "all"
    seeds: int
    methods: tuple[str, ...]
    members: int = 3  # runs per split of the ssgan_ensemble method

    @classmethod
    def parse(cls, budgets: str, seeds: int, methods: str, members: int = 3) -> Plan:
        """From the command line's `--labels 20,50,all --seeds 5 --methods ssgan,supervised [--members 3]`."""
        names = [m.strip() for m in methods.split(",") if m.strip()]
        if not names:
            raise ConfigError(f"--methods is empty; choose from {', '.join(METHODS)}")
        for m in names:
            if m not in METHODS:
                raise ConfigError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        if ENSEMBLE in names and members < 2:
            raise ConfigError(f"--members must be >= 2 (runs averaged per split by {ENSEMBLE}), got {members}")
        parsed: list[str] = []
        for item in (b.strip() for b in budgets.split(",") if b.strip()):
            if item.lower() != ALL and not item.lstrip("-").isdigit():
                raise ConfigError(f"--labels: {item!r} is neither a number of labels nor '{ALL}'")
            budget = ALL if item.lower() == ALL else str(int(item))
            if budget in parsed:
                raise ConfigError(f"--labels lists {budget} twice")
            parsed.append(budget)
        if not parsed:
            raise ConfigError(f"--labels is empty; give label budgets such as 20,50,{ALL}")
        return cls(tuple(parsed), seeds, tuple(dict.fromkeys(names)), members)

    def runs(self) -> list[tuple[str, str, int]]:
        """(method, budget, seed) in training order: all methods of one split together."""
        return [(m, b, s) for b in self.budgets for s in range(self.seeds) for m in self.methods]

    def tags(self) -> dict[str, str]:
        extra = {"members": str(self.members)} if ENSEMBLE in self.methods else {}
        return {"budgets": ",".join(self.budgets), "seeds": str(self.seeds), "methods": ",".join(self.methods), **extra}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Plan:
        return cls.parse(tags["budgets"], int(tags["seeds"]), tags["methods"], int(tags.get("members", 3)))
