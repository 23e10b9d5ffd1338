"""Every preset a spec can start from (``preset: demo|quick|papers|full``): the embedded default, the
budget-planned quick run, and presets whose first trials are the papers' own recipes (``points_to_evaluate``),
then TPE explores."""

from __future__ import annotations

from search.spec.config import ArchSpace, DistillConfig, MergeConfig, Range, SearchConfig, SearchSpace

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


def _from_recipes(
    name: str, archs: tuple[str, ...], *, samples: int, epochs: int, grace: int, patience: int
) -> SearchConfig:
    """The papers' recipes first (``points_to_evaluate``), then TPE around them over ``archs``."""
    return SearchConfig(
        name=name,
        space=_space(tuple(dict.fromkeys(archs))),
        points_to_evaluate=recipe_points(),
        num_samples=samples,
        max_epochs=epochs,
        grace_period=grace,
        early_stop_patience=patience,
    )


def papers_config() -> SearchConfig:
    """Start from the papers' recipes, then search around them (long: the paper nets are big for a CPU)."""
    return _from_recipes(
        "papers", tuple(r[1] for r in PAPER_RECIPES), samples=12, epochs=30, grace=3, patience=10
    )


def full_config() -> SearchConfig:
    """Every knob open over the small and medium nets; for a cluster or a long night."""
    archs = ("mini_xception", "fer_net", *(r[1] for r in PAPER_RECIPES))
    return _from_recipes("full", archs, samples=64, epochs=60, grace=4, patience=15)


def demo_config() -> SearchConfig:
    """The embedded default: a few minutes on two cores, on the synthetic set."""
    return SearchConfig(
        name="demo",
        space=SearchSpace(archs=(ArchSpace("mini_xception"), ArchSpace("vgg_fer11"))),
        num_samples=6,
        time_budget_s=300,
        max_epochs=6,
        grace_period=2,
        top_k=6,
        merge=MergeConfig(phase1_epochs=2, phase2_epochs=1),
        distill=DistillConfig(budget_s=60.0, temperatures=(2.0,)),
    )


def quick_config() -> SearchConfig:
    """Real FER2013 on a laptop: the whole run in 25 minutes, planned from this machine's throughput; the
    first trials are the portfolio's best recipes at the epochs they can afford (``portfolio.json``)."""
    return SearchConfig(
        name="quick",
        space=SearchSpace(
            # a second net for trials side by side (portfolio.points: one architecture per trial first)
            archs=(ArchSpace("mini_xception"), ArchSpace("vgg_fer11")),
            lr=Range(1e-3, 4e-3, log=True),
            dropout=(0.0,),
            schedule=("cosine",),
            augment=Range(0.2, 1.2),
            augment_kind=("shift", "affine"),
            label_smoothing=(0.0, 0.1),
        ),
        portfolio=True,
        run_budget_s=25 * 60,
        num_samples=2,
        time_budget_s=20 * 60,
        max_epochs=300,
        min_epochs_per_trial=50,
        top_k=8,
        precision="auto",
        merge=MergeConfig(bases=0),
    )


#: Every preset by its spec name.
PRESETS = {"demo": demo_config, "quick": quick_config, "papers": papers_config, "full": full_config}
