"""Typed configuration that crosses module lines (search → trainable → ensemble → export)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna may choose per trial; each arch brings its own fixed kwargs."""

    archs: tuple[str, ...] = ("mini_xception", "vgg_fer11")
    lr: tuple[float, float] = (3e-4, 3e-3)
    dropout: tuple[float, float] = (0.0, 0.5)
    arch_kwargs: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.archs:
            raise ValueError("SearchSpace.archs is empty")
        lo, hi = self.lr
        if not 0 < lo <= hi:
            raise ValueError(f"SearchSpace.lr must satisfy 0 < low <= high, got {self.lr}")
        dlo, dhi = self.dropout
        if not 0 <= dlo <= dhi < 1:
            raise ValueError(f"SearchSpace.dropout must satisfy 0 <= low <= high < 1, got {self.dropout}")


@dataclass(frozen=True)
class SearchConfig:
    """One search: space, budget, resources, and how each trial trains."""

    space: SearchSpace = field(default_factory=SearchSpace)
    num_samples: int = 8
    time_budget_s: float | None = None
    max_epochs: int = 10
    grace_period: int = 2
    reduction_factor: int = 3
    batch_size: int = 64
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    seed: int = 0
    augment: bool = True
    wandb: str = "off"
    top_k: int = 8

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        if self.wandb not in ("off", "offline", "online"):
            raise ValueError(f"wandb must be off, offline or online, got {self.wandb!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> SearchConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown SearchConfig field(s): {', '.join(sorted(unknown))}")
        return SearchConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def demo_config() -> SearchConfig:
    """The embedded default: a few minutes on two cores, on the synthetic set."""
    return SearchConfig(
        space=SearchSpace(archs=("mini_xception", "vgg_fer11")),
        num_samples=6,
        time_budget_s=300,
        max_epochs=6,
        grace_period=2,
        top_k=6,
    )


def quick_config() -> SearchConfig:
    """A laptop budget on real FER2013: about 20 minutes of search on two cores."""
    return SearchConfig(
        space=SearchSpace(archs=("mini_xception",), lr=(5e-4, 5e-3), dropout=(0.0, 0.3)),
        num_samples=6,
        time_budget_s=20 * 60,
        max_epochs=10,
        grace_period=2,
        top_k=6,
    )
