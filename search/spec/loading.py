"""YAML specs and plain mappings → a validated :class:`~search.spec.config.SearchConfig`, optionally starting
from a preset (:mod:`search.spec.presets`)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from search.spec.config import SearchConfig, SpecError, shown
from search.spec.presets import PRESETS

# ---- YAML / dict → typed config --------------------------------------------------------------------------


def config_from_dict(data: dict, *, base: SearchConfig | None = None) -> SearchConfig:
    """Validate a plain mapping into a SearchConfig; ``preset: quick`` starts from a preset, whose top-level
    keys the mapping's replace (a ``space:`` block is a whole space). The merged config is validated once,
    so cross-field rules see the values that will run."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping, got {shown(data)}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SpecError(f"spec: keys must be strings, got {shown(bad[0])}")
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise SpecError(f"preset: unknown {preset!r}; allowed: {', '.join(PRESETS)}")
    if preset is not None:
        base = PRESETS[preset]()
    if base is None:
        return SearchConfig(**data)
    return SearchConfig(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **data})


def load_spec(path: str | Path) -> tuple[SearchConfig, dict]:
    """Read a YAML spec → (SearchConfig, extra top-level keys like ``data``)."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"{p}: cannot read YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: expected a mapping at the top level")
    extra = {k: raw.pop(k) for k in ("data", "out") if k in raw}
    try:
        for key, value in extra.items():
            if not isinstance(value, str) or not value:
                raise SpecError(f"{key}: expected a path, got {shown(value)}")
        return config_from_dict(raw), extra
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
