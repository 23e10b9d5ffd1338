"""Presets whose first trials are the papers' own recipes (``points_to_evaluate``), then TPE explores."""

from __future__ import annotations

from search.config import ArchSpace, Range, SearchConfig, SearchSpace

# (paper, arch, optimizer, lr, batch size, class-weighted loss, schedule, dropout)
PAPER_RECIPES: tuple[tuple[str, str, str, float, int, bool, str, float], ...] = (
    ("000 Model A", "mini_xception_a", "adam", 1e-3, 64, False, "plateau", 0.0),
    ("000 Model D", "vgg_fer11", "adam", 1e-3, 64, False, "plateau", 0.5),
    ("001 Model 2", "cnn_moderate", "adam", 1e-3, 64, False, "plateau", 0.25),
    ("002 Table 1", "resnet_fer", "nadam", 1e-3, 64, True, "plateau", 0.3),
    ("003", "convnet4", "adam", 1e-3, 64, False, "plateau", 0.25),
    ("004 Table 3", "cnn5", "adam", 1e-3, 32, False, "plateau", 0.25),
)


def _space(archs: tuple[str, ...]) -> SearchSpace:
    return SearchSpace(
        archs=tuple(ArchSpace(a) for a in archs),
        lr=Range(1e-4, 3e-3, log=True),
        dropout=Range(0.0, 0.5),
        optimizer=("adam", "nadam", "sgd"),
        batch_size=(32, 64),
        weight_decay=(0.0, 1e-4),
        label_smoothing=(0.0, 0.1),
        class_weighted=(False, True),
        augment=Range(0.5, 1.5),
        schedule=("onecycle", "cosine", "plateau"),
    )


def recipe_points(recipes=PAPER_RECIPES) -> tuple[dict, ...]:
    return tuple(
        {
            "arch": arch,
            "optimizer": opt,
            "lr": lr,
            "batch_size": bs,
            "class_weighted": cw,
            "schedule": sched,
            "dropout": dropout,
            "weight_decay": 0.0,
            "label_smoothing": 0.0,
            "augment": 1.0,
        }
        for _, arch, opt, lr, bs, cw, sched, dropout in recipes
    )


def papers_config() -> SearchConfig:
    """Start from the papers' recipes, then search around them (long: the paper nets are big for a CPU)."""
    archs = tuple(dict.fromkeys(r[1] for r in PAPER_RECIPES))
    return SearchConfig(
        name="papers",
        space=_space(archs),
        points_to_evaluate=recipe_points(),
        num_samples=12,
        max_epochs=30,
        grace_period=3,
        early_stop_patience=10,
    )


def full_config() -> SearchConfig:
    """Every knob open over the small and medium nets; for a cluster or a long night."""
    return SearchConfig(
        name="full",
        space=_space(tuple(dict.fromkeys(("mini_xception", "fer_net", *(r[1] for r in PAPER_RECIPES))))),
        points_to_evaluate=recipe_points(),
        num_samples=64,
        max_epochs=60,
        grace_period=4,
        early_stop_patience=15,
    )


PAPER_PRESETS = {"papers": papers_config, "full": full_config}
