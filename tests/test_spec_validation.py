"""Bad search specs fail at the command line before anything starts: exit code 2, one stderr line naming the
key path and what was expected, no Ray instance, no run folder.

The table runs in one fresh interpreter (``fersearch search`` driven through ``search.cli.main``) so that
``ray.is_initialized()`` tells about these calls only, not about a Ray instance another test left running.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from search.spec import MergeConfig, Range, SearchConfig, SearchSpace, SpecError, config_from_dict
from tests.conftest import run_cli_calls

ROOT = Path(__file__).resolve().parents[1]

# (spec, extra command-line flags, the message on the one stderr line as a regex: after "<spec path>: ",
# or after "fersearch: error: " when the bad value comes from a flag)
BAD_SPECS: list[tuple[dict, list[str], str]] = [
    ({"num_samples": "ten"}, [], r"num_samples: expected an integer, got 'ten'"),
    ({"max_epochs": "ten"}, [], r"max_epochs: expected an integer, got 'ten'"),
    ({"time_budget_s": "1h"}, [], r"time_budget_s: expected a number, got '1h'"),
    ({"resources": {"cpu": "two"}}, [], r"resources\.cpu: expected a number, got 'two'"),
    ({"space": {"lr": {"low": "abc", "high": 0.01}}}, [], r"space\.lr\.low: expected a number, got 'abc'"),
    ({"grace_period": -1}, [], r"grace_period: expected a value >= 1, got -1"),
    ({"reduction_factor": 1}, [], r"reduction_factor: expected a value >= 2, got 1"),
    ({"num_samples": 2.5}, [], r"num_samples: expected an integer, got 2\.5"),
    (
        {"space": {"archs": [{"mini_xception": {"depth": [2, 3]}}]}},
        [],
        r"space\.archs\[0\]\.mini_xception\.depth: mini_xception takes no kwarg 'depth'; "
        r"accepted: dropout, input_size, width$",
    ),
    ({"space": {"lr": [0.001, "fast"]}}, [], r"space\.lr\[1\]: expected a number, got 'fast'"),
    ({"max_epochs": 2.5}, [], r"max_epochs: expected an integer, got 2\.5"),
    ({"space": {"batch_size": [3.5]}}, [], r"space\.batch_size\[0\]: expected an integer, got 3\.5"),
    ({"top_k": 0}, [], r"top_k: expected a value >= 1, got 0"),
    ({"max_concurrent_trials": 0}, [], r"max_concurrent_trials: expected a value >= 1, got 0"),
    ({"seed": "abc"}, [], r"seed: expected an integer, got 'abc'"),
    ({"seed": -1}, [], r"seed: expected a value >= 0, got -1"),
    ({"num_samples": "3"}, [], r"num_samples: expected an integer, got '3'"),
    ({"space": {"lr": {"low": 0, "high": 0.01}}}, [], r"space\.lr\.low: expected a value > 0, got 0\.0"),
    ({"space": {"lr": [-0.001]}}, [], r"space\.lr\[0\]: expected a value > 0, got -0\.001"),
    ({"space": {"batch_size": [32, 0]}}, [], r"space\.batch_size\[1\]: expected a value >= 1, got 0"),
    (
        {"space": {"batch_size": {"low": 16, "high": 128}}},
        [],
        r"space\.batch_size\.step: a range of integers needs an integer step, got None",
    ),
    (
        {"space": {"archs": [{"vgg_fer11": {"pool_size": [1.5, 2]}}]}},
        [],
        r"space\.archs\[0\]\.vgg_fer11\.pool_size\[0\]: expected an integer, got 1\.5 "
        r"\(vgg_fer11 takes pool_size: int\)",
    ),
    (
        {"space": {"archs": [{"mini_xception": {"width": {"low": "x", "high": 2}}}]}},
        [],
        r"space\.archs\[0\]\.mini_xception\.width\.low: expected a number, got 'x'",
    ),
    (
        {"space": {"archs": ["no_such_net"]}},
        [],
        r"space\.archs\[0\]: unknown model 'no_such_net'; registered: ",
    ),
    (
        {"space": {"optimizer": ["adam", "rmsprop"]}},
        [],
        r"space\.optimizer\[1\]: expected one of 'adam', 'nadam' or 'sgd', got 'rmsprop'",
    ),
    (
        {"space": {"class_weighted": ["yes"]}},
        [],
        r"space\.class_weighted\[0\]: expected true or false, got 'yes'",
    ),
    (
        {"space": {"schedule": {"low": 0, "high": 1}}},
        [],
        r"space\.schedule: expected a list of choices, not a range",
    ),
    (
        {"space": {"lr": {"low": 0.001, "high": 0.01, "log": True, "step": 0.001}}},
        [],
        r"space\.lr: a log range cannot have a step",
    ),
    (
        {"space": {"dropout": {"low": 0.0, "high": 1.5}}},
        [],
        r"space\.dropout\.high: expected a value <= 0\.95, got 1\.5",
    ),
    ({"space": {"archs": []}}, [], r"space\.archs: expected a non-empty list, got \[\]"),
    ({"objectives": ["latency_ms"]}, [], r"objectives: must start with val_acc"),
    ({"wandb": True}, [], r"wandb: expected one of 'off', 'offline' or 'online', got True"),
    ({"merge": {"bases": 1}}, [], r"merge\.bases: a merge net needs 0 \(off\) or >= 2 bases, got 1"),
    (
        {"top_k": 3, "merge": {"bases": 4}},
        [],
        r"merge\.bases: the merge net's bases come from the top_k=3 trials",
    ),
    ({"points_to_evaluate": [{"arch": "cnn5"}]}, [], r"points_to_evaluate\[0\]\.arch: arch 'cnn5' is not in"),
    ({"points_to_evaluate": [{"lrate": 0.1}]}, [], r"points_to_evaluate\[0\]: unknown parameter\(s\) lrate"),
    ({"num_samplez": 3}, [], r"spec: unknown key\(s\) num_samplez; allowed: "),
    (
        {"space": {"lr": {"lo": 0.1, "high": 1}}},
        [],
        r"space\.lr: unknown key\(s\) lo; allowed: high, log, low, step",
    ),
    ({"preset": "quick", "max_epochs": 0}, [], r"max_epochs: expected a value >= 1, got 0"),
    ({"early_stop_patience": 0}, [], r"early_stop_patience: expected a value >= 1, got 0"),
    ({"resources": {"gpu": -0.5}}, [], r"resources\.gpu: expected a value >= 0, got -0\.5"),
    ({"precision": "fp16"}, [], r"precision: expected one of 'fp32', 'bf16' or 'auto', got 'fp16'"),
    ({"name": "a/b"}, [], r"name: expected a name without slashes, got 'a/b'"),
    # budget flags go through SearchConfig.replace / dataclasses.replace: validated the same way
    ({}, ["--trials", "0"], r"num_samples: expected a value >= 1, got 0"),
    ({}, ["--archs", "mini_xception,no_such_net"], r"space\.archs: unknown model 'no_such_net'"),
    ({}, ["--cpus-per-trial", "0"], r"resources\.cpu: expected a value > 0, got 0\.0"),
]



@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[tuple[Path, dict]]:
    """Run every bad spec through ``fersearch search SPEC --data X --out DIR`` in one fresh interpreter."""
    tmp = tmp_path_factory.mktemp("specs")
    data = tmp / "fer2013.csv"
    data.write_text("emotion,pixels,Usage\n")
    calls, specs = [], []
    for i, (spec, flags, _) in enumerate(BAD_SPECS):
        path = tmp / f"spec_{i}.yaml"
        path.write_text(yaml.safe_dump({"name": f"bad{i}", **spec}))
        out = tmp / f"run_{i}"
        calls.append((["search", str(path), "--data", str(data), "--out", str(out), *flags], str(out)))
        specs.append(path)
    return list(zip(specs, run_cli_calls(calls, ROOT), strict=True))


@pytest.mark.parametrize("case", range(len(BAD_SPECS)), ids=lambda i: BAD_SPECS[i][2][:40])
def test_bad_spec_fails_before_anything_starts(outcomes, case):
    spec_path, got = outcomes[case]
    message = BAD_SPECS[case][2]
    lines = got["stderr"].splitlines()
    assert got["code"] == 2, got
    assert len(lines) == 1, lines
    from_flags = bool(BAD_SPECS[case][1])  # a flag's error names the key, not the spec file
    prefix = "fersearch: error: " + ("" if from_flags else f"{spec_path}: ")
    assert lines[0].startswith(prefix), lines[0]
    assert re.match(message, lines[0][len(prefix) :]), (message, lines[0])
    assert got["ray"] is False
    assert got["out_exists"] is False


def test_table_is_big_enough():
    assert len(BAD_SPECS) >= 25


def test_replace_validates_like_a_spec():
    cfg = SearchConfig()
    with pytest.raises(SpecError, match=r"^num_samples: expected an integer, got 2\.5$"):
        cfg.replace(num_samples=2.5)
    with pytest.raises(SpecError, match=r"^merge\.bases: a merge net needs 0 \(off\) or >= 2 bases, got 1$"):
        dataclasses.replace(cfg.merge, bases=1)
    with pytest.raises(SpecError, match=r"^space\.batch_size\[0\]: expected an integer, got '64'$"):
        dataclasses.replace(cfg.space, batch_size=("64",))
    assert cfg.replace(num_samples=3).num_samples == 3


def test_no_silent_coercion_but_floats_take_ints():
    space = SearchSpace(batch_size=[32, 64], lr=Range(1, 2))
    assert space.batch_size == (32, 64) and all(type(b) is int for b in space.batch_size)
    assert type(space.lr.low) is float and MergeConfig(lr=1).lr == 1.0
    with pytest.raises(SpecError, match=r"^merge\.phase1_epochs: expected an integer, got '3'$"):
        MergeConfig(phase1_epochs="3")


@pytest.mark.parametrize("preset", ["demo", "quick", "papers", "full"])
def test_presets_round_trip_through_the_spec_form(preset):
    cfg = config_from_dict({"preset": preset})
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
