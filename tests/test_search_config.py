from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.spec import ArchSpace, Range, SearchConfig, SearchSpace, SpecError, config_from_dict, load_spec
from search.tuning import DefineSpace

EXAMPLE = Path(__file__).resolve().parents[1] / "search" / "spec" / "example.yaml"


def test_example_spec_loads_into_typed_config():
    cfg, extra = load_spec(EXAMPLE)
    assert extra["data"].endswith("fer2013.csv.gz")
    assert cfg.space.arch("mini_xception").kwargs == {"width": (0.75, 1.0, 1.5)}
    assert cfg.space.lr == Range(3e-4, 3e-3, log=True)
    assert cfg.resources.cpu == 1 and cfg.wandb == "offline"


def test_config_round_trips_through_its_spec_form():
    cfg, _ = load_spec(EXAMPLE)
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"num_samplez": 3}, r"unknown key\(s\) num_samplez"),
        ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, r"space\.lr.*low 0\.1 > high 0\.01"),
        ({"space": {"lr": {"low": 0, "high": 0.01, "log": True}}}, r"space\.lr.*log range needs low > 0"),
        (
            {"space": {"dropout": {"low": 0.0, "high": 1.5}}},
            r"space\.dropout\.high: expected a value <= 0\.95, got 1\.5",
        ),
        (
            {"space": {"optimizer": ["adam", "rmsprop"]}},
            r"space\.optimizer\[1\]: expected one of 'adam', 'nadam' or 'sgd', got 'rmsprop'",
        ),
        ({"space": {"lr": {"lo": 1}}}, r"space\.lr: unknown key\(s\) lo; allowed: high, log, low, step"),
        (
            {"space": {"archs": [{"mini_xception": [1, 2]}]}},
            r"space\.archs\[0\]\.mini_xception: expected a mapping",
        ),
        ({"space": {"archs": ["no_such_net"]}}, r"unknown model 'no_such_net'"),
        ({"resources": {"cpu": 0}}, r"resources\.cpu: expected a value > 0, got 0"),
        ({"objectives": ["latency_ms"]}, r"objectives: must start with val_acc"),
        ({"wandb": "yes"}, r"wandb: expected one of 'off', 'offline' or 'online', got 'yes'"),
        ({"preset": "huge"}, r"preset: unknown 'huge'"),
    ],
)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(SpecError, match=message):
        config_from_dict(spec)


def test_bad_yaml_names_the_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("space: [unclosed\n")
    with pytest.raises(SpecError, match=r"s\.yaml: cannot read YAML"):
        load_spec(p)
    p.write_text("max_epochs: 0\n")
    with pytest.raises(SpecError, match=r"s\.yaml: max_epochs: expected a value >= 1, got 0"):
        load_spec(p)


@pytest.mark.parametrize("preset", ["demo", "quick", "papers", "full"])
def test_presets_are_valid_and_overridable(preset):
    cfg = config_from_dict({"preset": preset, "num_samples": 3})
    assert cfg.num_samples == 3
    if preset in ("papers", "full"):
        archs = {a.name for a in cfg.space.archs}
        assert cfg.points_to_evaluate and {p["arch"] for p in cfg.points_to_evaluate} <= archs


def test_conditional_space_samples_valid_configs_only():
    """Each arch's own kwargs appear only in its trials, and every value lies in its domain."""
    space = SearchSpace(
        archs=(
            ArchSpace("mini_xception", {"width": (0.5, 1.0, 2.0)}),
            ArchSpace("vgg_fer11", {"pool_size": (1, 2)}),
        ),
        lr=Range(1e-4, 1e-2, log=True),
        dropout=Range(0.0, 0.5),
        optimizer=("adam", "sgd"),
        batch_size=(32, 64),
    )
    define = DefineSpace(SearchConfig(space=space, max_epochs=3))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = set()
    for i in range(40):
        trial = study.ask()
        constants = define(trial)
        params = {**trial.params, **constants}
        arch = params["arch"]
        seen.add(arch)
        own = {k for k in params if "." in k}
        assert all(k.startswith(f"{arch}.") for k in own), params
        if arch == "mini_xception":
            assert params["mini_xception.width"] in (0.5, 1.0, 2.0)
        else:
            assert params["vgg_fer11.pool_size"] in (1, 2)
        assert 1e-4 <= params["lr"] <= 1e-2 and 0 <= params["dropout"] <= 0.5
        assert params["optimizer"] in ("adam", "sgd") and params["batch_size"] in (32, 64)
        assert params["max_epochs"] == 3 and params["class_weighted"] is False
        study.tell(trial, float(i % 7) / 7)
    assert seen == {"mini_xception", "vgg_fer11"}


def test_optuna_storage_is_a_journal_file_by_default_and_an_rdb_url_when_given(tmp_path):
    from optuna.storages import JournalStorage, RDBStorage

    from search.tuning.tuner import _optuna_storage

    assert isinstance(_optuna_storage(SearchConfig(), tmp_path), JournalStorage)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = _optuna_storage(SearchConfig(optuna_storage=url), tmp_path)
    assert isinstance(storage, RDBStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
