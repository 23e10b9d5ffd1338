"""What a search is asked to do: typed config objects (every default in one place), presets, YAML
loading, and the preflight checks that run before Ray starts."""

from search.spec.config import (
    HPARAMS,
    ArchSpace,
    Domain,
    MergeConfig,
    Range,
    Resources,
    SearchConfig,
    SearchSpace,
    SpecError,
    trial_hparams,
)
from search.spec.loading import config_from_dict, load_spec
from search.spec.preflight import (
    PreflightError,
    check_data,
    check_resources,
    check_search_dir,
    check_submit_address,
)
from search.spec.presets import demo_config, quick_config

__all__ = [
    "HPARAMS",
    "ArchSpace",
    "Domain",
    "MergeConfig",
    "PreflightError",
    "Range",
    "Resources",
    "SearchConfig",
    "SearchSpace",
    "SpecError",
    "check_data",
    "check_resources",
    "check_search_dir",
    "check_submit_address",
    "config_from_dict",
    "demo_config",
    "load_spec",
    "quick_config",
    "trial_hparams",
]
