"""What a search is asked to do: typed config objects (every default in one place), presets, YAML
loading, and the preflight checks that run before Ray starts."""

from search.spec.config import (
    HPARAMS,
    ArchSpace,
    DistillConfig,
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
from search.spec.portfolio import (
    PORTFOLIO_FILE,
    Portfolio,
    PortfolioError,
    Recipe,
    WidthValue,
    build_portfolio,
    narrow_is_better,
    width_value,
)
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
    "PORTFOLIO_FILE",
    "ArchSpace",
    "DistillConfig",
    "Domain",
    "MergeConfig",
    "Portfolio",
    "PortfolioError",
    "PreflightError",
    "Range",
    "Recipe",
    "Resources",
    "SearchConfig",
    "SearchSpace",
    "SpecError",
    "WidthValue",
    "build_portfolio",
    "check_data",
    "check_resources",
    "check_search_dir",
    "check_submit_address",
    "config_from_dict",
    "demo_config",
    "load_spec",
    "narrow_is_better",
    "quick_config",
    "trial_hparams",
    "width_value",
]
