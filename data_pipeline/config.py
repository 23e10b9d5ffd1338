"""Typed options of ``prepare``: what to read, how to preprocess, which variant to build."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_pipeline.dataset import DataError

SOURCES: tuple[str, ...] = ("fer2013", "ferplus", "ckplus", "jaffe", "folder")
VARIANTS: tuple[str, ...] = ("original", "balanced", "filtered", "filtered-balanced", "one-vs-rest")
LABEL_MODES: tuple[str, ...] = ("majority", "probability")
EQUALIZE: tuple[str, ...] = ("none", "hist", "clahe")
ROI_MODES: tuple[str, ...] = ("auto", "face", "none")
FILTER_BY: tuple[str, ...] = ("auto", "votes", "faces", "both")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise DataError(f"{name} {value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class SourceConfig:
    """A benchmark on disk.

    ``path``: the Kaggle CSV (fer2013, ferplus), or a folder / ``.tar`` of images (ckplus, jaffe, folder).
    ``ferplus``: FER+ votes (``fer2013new.csv``, row-aligned with the CSV); found next to the CSV if unset.
    ``contempt``: ``keep`` (8 classes) or ``disgust`` (7 classes, as paper 001 does for CK+).
    ``split_fractions``: train/validation/test shares where the source has no split of its own (by
    subject for CK+ and JAFFE).
    ``class_names`` (``folder`` only): the classes in label order; index-named class folders (``0``, ``1``,
    …) take the name at their index, named folders the label of their name, and any other folder's images
    are quarantined.
    """

    kind: str
    path: Path
    ferplus: Path | None = None
    label_mode: str = "majority"
    contempt: str = "keep"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _choice("source", self.kind, SOURCES)
        _choice("label mode", self.label_mode, LABEL_MODES)
        _choice("contempt", self.contempt, ("keep", "disgust"))
        object.__setattr__(self, "path", Path(self.path))
        if self.ferplus is not None:
            object.__setattr__(self, "ferplus", Path(self.ferplus))
        fr = tuple(float(f) for f in self.split_fractions)
        if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise DataError(f"split fractions {self.split_fractions} must be 3 shares ≥ 0 summing to 1")
        object.__setattr__(self, "split_fractions", fr)
        if self.class_names is not None:
            names = tuple(str(c).strip() for c in self.class_names)
            if self.kind != "folder":
                raise DataError(f"--class-names applies to --source folder, not {self.kind}")
            if not names or any(not c or "," in c for c in names):
                raise DataError(f"--class-names {','.join(names)!r}: expected names like Angry,Happy,Neutral")
            twice = sorted({c for c in names if [x.lower() for x in names].count(c.lower()) > 1})
            if twice:
                raise DataError(f"--class-names names {', '.join(twice)} more than once")
            object.__setattr__(self, "class_names", names)

    def votes_path(self) -> Path | None:
        """The FER+ votes file to use, if any."""
        if self.ferplus is not None:
            return self.ferplus
        beside = self.path.parent / "fer2013new.csv"
        return beside if self.kind in ("fer2013", "ferplus") and beside.is_file() else None


@dataclass(frozen=True)
class PreprocessConfig:
    """Grayscale → optional Viola–Jones face ROI (paper 000) → resize to ``size`` → optional equalisation.

    ``roi="auto"`` crops only images larger than twice ``size`` (photos, not pre-cropped 48×48 faces).
    """

    size: int = 48
    equalize: str = "none"
    roi: str = "auto"
    roi_margin: float = 0.1

    def __post_init__(self) -> None:
        _choice("equalize", self.equalize, EQUALIZE)
        _choice("roi", self.roi, ROI_MODES)
        if not 8 <= self.size <= 512:
            raise DataError(f"size {self.size} must be in 8..512")

    def identity_for(self, height: int, width: int) -> bool:
        """True when images of this size pass through unchanged."""
        return (height, width) == (self.size, self.size) and self.equalize == "none" and self.roi != "face"


@dataclass(frozen=True)
class AugmentConfig:
    """Paper 004 §3.2: rotation ±``rotation``°, horizontal mirror, zoom in ``zoom``."""

    rotation: float = 10.0
    mirror: bool = True
    zoom: tuple[float, float] = (1.1, 1.2)


@dataclass(frozen=True)
class VariantConfig:
    """Which dataset to build from the source.

    ``per_class``: training images per class of the balanced variants (paper 004: 8000).
    ``filter_by``: how *filtered* finds non-faces: FER+ ``votes`` (NF majority; also relabels clear
    mislabels: another class has ≥ ``relabel_min_share`` of the 10 votes and the original label at most
    ``relabel_max_original_votes``), Haar ``faces``, ``both``; ``auto`` = votes when FER+ votes are
    available, else faces.
    ``positive`` / ``ovr_size`` / ``ovr_base``: one-vs-rest (paper 004 §3.5): the positive class, images
    per binary label in training, and whether it starts from the filtered or the original set.
    """

    name: str = "original"
    per_class: int = 8000
    filter_by: str = "auto"
    relabel: bool = True
    relabel_min_share: float = 0.7
    relabel_max_original_votes: int = 1
    positive: str | None = None
    ovr_size: int = 6000
    ovr_base: str = "filtered"
    leftover_to_validation: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _choice("variant", self.name, VARIANTS)
        _choice("filter-by", self.filter_by, FILTER_BY)
        _choice("one-vs-rest base", self.ovr_base, ("filtered", "original"))
        if self.per_class < 1 or self.ovr_size < 2:
            raise DataError("per_class and ovr_size must be positive")


@dataclass(frozen=True)
class PrepareConfig:
    source: SourceConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    variant: VariantConfig = field(default_factory=VariantConfig)
    seed: int = 0
    max_bad_fraction: float = 0.01
    parallelism: int | None = None


def as_dict(obj: object) -> dict:
    """A JSON-able dict of a config dataclass (paths as strings)."""

    def conv(v: object) -> object:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v

    return conv(asdict(obj))  # type: ignore[arg-type]
