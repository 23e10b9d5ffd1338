"""Typed search configuration: the Python API and the YAML spec load into the same frozen objects.

A value in the space is either a list of choices or a range ``{low, high, log, step}``; each architecture
brings its own sub-space (define-by-run, so parameters of one family never appear in another's trials).

Validation is complete before anything starts (no Ray, no data, no run folder): pydantic dataclasses with
strict scalars (an int field refuses ``2.5`` and ``"3"``; a float field takes ints), ranges, cross-field
rules and each architecture's kwargs checked against the model's signature. A bad spec raises
:class:`SpecError` whose message names the key path, e.g. ``space.lr.low: expected a number, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import inspect
import pkgutil
import sys
import typing
from dataclasses import asdict, field, fields
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

OPTIMIZERS = ("adam", "nadam", "sgd")
AUGMENT_KINDS = ("affine", "shift")
SCHEDULES = ("onecycle", "cosine", "plateau")
VARIANTS = ("original", "balanced", "filtered", "filtered-balanced")
OBJECTIVES = ("val_acc", "latency_ms", "params")


class SpecError(ValueError):
    """A search spec that cannot be used; the message names the key."""


# ---- strict scalar types: no silent coercion (a float field still takes an int) --------------------------

Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
NonNegative = Annotated[int, Strict(), Field(ge=0)]
Positive = Annotated[float, Strict(), Field(gt=0)]

_RANGE_TAG, _CHOICES_TAG = "<range>", "<choices>"  # union branches; dropped from error paths


def _fail(msg: str, sub: str | None = None) -> typing.NoReturn:
    """A validation error whose message is ``msg``, at ``sub`` below the current location."""
    raise PydanticCustomError("spec", "{msg}", {"msg": msg, "sub": sub})


def _spec(where: str):
    """Make ``cls`` a frozen, validating pydantic dataclass whose errors surface as one :class:`SpecError`.

    ``where`` prefixes the paths of errors raised when the class is built on its own (``SearchSpace(...)``
    fails as ``space.…``); nested in a ``SearchConfig`` the path comes from the nesting.
    """

    def wrap(cls):
        cls = dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
        init = cls.__init__
        names = [f.name for f in fields(cls)]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                root = {**dict(zip(names, args, strict=False)), **kwargs}
                raise SpecError(format_errors(e, where, root)) from None

        __init__.__wrapped__ = init  # type: ignore[attr-defined]
        cls.__init__ = __init__
        return cls

    return wrap


class _KnownKeys:
    """Unknown keys fail listing the allowed ones (pydantic alone names only the stray key)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        keys = (data.kwargs or {}) if isinstance(data, ArgsKwargs) else data
        if isinstance(keys, dict):
            allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
            unknown = sorted(str(k) for k in keys if k not in allowed)
            if unknown:
                _fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        return data


# ---- domains: a list of choices or a numeric range -------------------------------------------------------


@_spec("range")
class Range(_KnownKeys):
    """A numeric range; ``log`` samples on a log scale, ``step`` makes it discrete."""

    low: Float
    high: Float
    log: Bool = False
    step: Positive | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            _fail(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            _fail(f"log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            _fail("a log range cannot have a step (Optuna samples either on a log scale or on a grid)")
        return self


Domain = Range | tuple


def _domain_input(value: Any) -> Any:
    """Spec shorthand: a list is the choices, a mapping a range, a scalar the only choice."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict | tuple | Range):
        return value
    return (value,)


def _non_empty(value: tuple) -> tuple:
    """After the items (so an empty list is not reported again when an item fails)."""
    if not value:
        _fail("expected a non-empty list, got []")
    return value


def _domain_kind(value: Any) -> str:
    return _RANGE_TAG if isinstance(value, dict | Range) else _CHOICES_TAG


def _range_within(elem: Any, integer: bool):
    """Check a range's ends against the element type of the choices (e.g. ``lr`` > 0)."""
    adapter = TypeAdapter(elem)

    def check(r: Range) -> Range:
        for end in ("low", "high"):
            value = getattr(r, end)
            if integer and not float(value).is_integer():
                _fail(f"expected an integer, got {value!r}", end)
            try:
                adapter.validate_python(int(value) if integer else value)
            except ValidationError as e:
                _fail(error_message(e.errors()[0]), end)
        if integer and (r.step is None or not float(r.step).is_integer()):
            _fail(f"a range of integers needs an integer step, got {r.step!r}", "step")
        return r

    return check


def _numbers(elem: Any, integer: bool = False) -> Any:
    """A domain of numbers: choices of ``elem`` or a range whose ends are ``elem``s."""
    return Annotated[
        Annotated[Range, AfterValidator(_range_within(elem, integer)), Tag(_RANGE_TAG)]
        | Annotated[tuple[elem, ...], AfterValidator(_non_empty), Tag(_CHOICES_TAG)],
        Discriminator(_domain_kind),
        BeforeValidator(_domain_input),
    ]


def _no_range(value: Any) -> Any:
    if isinstance(value, dict | Range):
        _fail("expected a list of choices, not a range")
    return _domain_input(value)


def _choices(elem: Any) -> Any:
    return Annotated[tuple[elem, ...], AfterValidator(_non_empty), BeforeValidator(_no_range)]


def _unit(lo: float, hi: float) -> Any:
    return Annotated[float, Strict(), Field(ge=lo, le=hi)]


AnyDomain = Annotated[
    Annotated[Range, Tag(_RANGE_TAG)]
    | Annotated[tuple[Any, ...], AfterValidator(_non_empty), Tag(_CHOICES_TAG)],
    Discriminator(_domain_kind),
    BeforeValidator(_domain_input),
]


# ---- architectures: each kwarg checked against the model's signature -------------------------------------


def model_kwargs(name: str) -> dict[str, Any] | None:
    """The keyword arguments registered model ``name`` takes, each with its type annotation (``Any`` when
    unannotated), or None when it cannot be told (``**kwargs`` all the way down, or a model registered
    outside the ``models`` package). ``num_classes`` and ``in_chans`` are left out: the trainable sets them.
    """
    import models

    factory = None
    for info in pkgutil.iter_modules(models.__path__):
        candidate = getattr(sys.modules.get(f"models.{info.name}"), name, None)
        if inspect.isfunction(candidate) and candidate.__name__ == name:
            factory = candidate
            break
    if factory is None:
        return None
    accepted: dict[str, Any] = {}
    for fn in (factory, _returned_class(factory)):
        if fn is None:
            return None
        try:
            hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
        except Exception:  # unresolvable annotations: names only
            hints = {}
        params = inspect.signature(fn).parameters.values()
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                accepted.setdefault(p.name, hints.get(p.name, Any))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    accepted.pop("num_classes", None)
    accepted.pop("in_chans", None)
    return accepted


def _returned_class(factory: Any) -> type | None:
    """The model class a ``**kwargs`` factory forwards to (its return annotation)."""
    try:
        ret = typing.get_type_hints(factory).get("return")
    except Exception:
        return None
    return ret if inspect.isclass(ret) else None


def _check_value(name: str, kwarg: str, annotation: Any, dom: Domain) -> None:
    """Each choice (or the range's ends) must fit the model's annotation of ``kwarg``."""
    sub = f"{name}.{kwarg}"
    if isinstance(dom, tuple) and len(dom) > 1:
        for i, v in enumerate(dom):
            if v is not None and not isinstance(v, bool | int | float | str):
                _fail(f"choices must be null, booleans, numbers or strings, got {v!r}", f"{sub}[{i}]")
    if annotation is Any:
        return
    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(strict=True))
    except Exception:  # an annotation pydantic cannot build a validator for: no value check
        return
    values = [(f"{sub}.low", dom.low), (f"{sub}.high", dom.high)] if isinstance(dom, Range) else []
    values += [(f"{sub}[{i}]", v) for i, v in enumerate(dom)] if isinstance(dom, tuple) else []
    for where, v in values:
        candidates = [v, int(v)] if isinstance(dom, Range) and float(v).is_integer() else [v]
        errors = []
        for c in candidates:
            try:
                adapter.validate_python(c)
                break
            except ValidationError as e:
                errors.append(e)
        else:
            expected = f"{name} takes {kwarg}: {_type_name(annotation)}"
            _fail(f"{error_message(errors[0].errors()[0])} ({expected})", where)
    integer_step = isinstance(dom, Range) and dom.step is not None and float(dom.step).is_integer()
    if isinstance(dom, Range) and _refuses_floats(adapter) and not integer_step:
        _fail(f"{name} takes an integer {kwarg}: a range of integers needs an integer step", sub)


def _refuses_floats(adapter: TypeAdapter) -> bool:
    try:
        adapter.validate_python(0.5)
    except ValidationError:
        return True
    return False


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _arch_input(value: Any) -> Any:
    """Spec form: ``name`` or ``{name: {kwarg: choices or range}}``."""
    if isinstance(value, str):
        return {"name": value, "kwargs": {}}
    if isinstance(value, dict) and "name" not in value:
        if len(value) != 1:
            _fail(f"an arch is a name or {{name: {{kwarg: choices}}}}, got {value!r}")
        ((name, sub),) = value.items()
        return {"name": name, "kwargs": {} if sub is None else sub}
    return value


@_spec("space.archs")
class ArchSpace(_KnownKeys):
    """One architecture and its own sub-space, e.g. ``mini_xception`` with ``width: [0.5, 1.0, 2.0]``."""

    name: Str
    kwargs: dict[Str, AnyDomain] = field(default_factory=dict)

    @model_validator(mode="after")
    def _registered(self) -> ArchSpace:
        from models import list_models

        known = list_models()
        if self.name not in known:
            _fail(f"unknown model {self.name!r}; registered: {', '.join(known)}")
        accepted = model_kwargs(self.name)
        if accepted is None:
            return self
        for kwarg, dom in self.kwargs.items():
            if kwarg not in accepted:
                _fail(
                    f"{self.name} takes no kwarg {kwarg!r}; accepted: {', '.join(sorted(accepted))}",
                    f"{self.name}.{kwarg}",
                )
            _check_value(self.name, kwarg, accepted[kwarg], dom)
        return self


def _as_tuple(value: Any) -> Any:
    """A scalar where a list is expected is a list of one."""
    return tuple(value) if isinstance(value, list) else value if isinstance(value, tuple) else (value,)


LrDomain = _numbers(Annotated[float, Strict(), Field(gt=0, le=10)])
BatchDomain = _numbers(Annotated[int, Strict(), Field(ge=1, le=4096)], integer=True)
DropoutDomain = _numbers(_unit(0.0, 0.95))
WeightDecayDomain = _numbers(_unit(0.0, 1.0))
SmoothingDomain = _numbers(_unit(0.0, 0.5))
AugmentDomain = _numbers(_unit(0.0, 2.0))
Rate = _unit(0.0, 0.95)
Strength = _unit(0.0, 2.0)
OptimizerDomain = _choices(Literal[OPTIMIZERS])
ScheduleDomain = _choices(Literal[SCHEDULES])
AugmentKindDomain = _choices(Literal[AUGMENT_KINDS])
VariantDomain = _choices(Literal[VARIANTS])
FlagDomain = _choices(Bool)
ArchInput = Annotated[ArchSpace, BeforeValidator(_arch_input)]
Archs = Annotated[tuple[ArchInput, ...], AfterValidator(_non_empty), BeforeValidator(_as_tuple)]


def _default_archs() -> tuple[ArchSpace, ...]:
    return (ArchSpace("mini_xception"), ArchSpace("vgg_fer11"))


@_spec("space")
class SearchSpace(_KnownKeys):
    """The trial parameters: each a list of choices or a range (``lr`` > 0, ``batch_size`` integers)."""

    archs: Archs = field(default_factory=_default_archs)  # built on use: checking an arch imports torch
    lr: LrDomain = Range(3e-4, 3e-3, log=True)
    dropout: DropoutDomain = Range(0.0, 0.5)
    optimizer: OptimizerDomain = ("adam",)
    batch_size: BatchDomain = (64,)
    weight_decay: WeightDecayDomain = (0.0,)
    label_smoothing: SmoothingDomain = (0.0,)
    class_weighted: FlagDomain = (False,)
    variant: VariantDomain = ("original",)
    augment: AugmentDomain = (1.0,)
    augment_kind: AugmentKindDomain = ("affine",)
    schedule: ScheduleDomain = ("onecycle",)

    def arch(self, name: str) -> ArchSpace:
        return next(a for a in self.archs if a.name == name)


#: A trial's searchable hyperparameters: the architecture, then one per :class:`SearchSpace` field, so a new
#: knob is added there and nowhere else (the searcher, the trainables and the trial tables read this).
HPARAMS: tuple[str, ...] = ("arch", *(f.name for f in fields(SearchSpace) if f.name != "archs"))


def trial_hparams(config: dict) -> dict[str, Any]:
    """``config``'s hyperparameters, each one it leaves out at the default space's value (its first
    choice, or a range's low end): the one place a trial's defaults come from."""
    out = {}
    for f in fields(SearchSpace):
        if f.name == "archs":
            continue
        dom = f.default
        out[f.name] = config[f.name] if f.name in config else (dom.low if isinstance(dom, Range) else dom[0])
    return {"arch": config.get("arch"), **out}


@_spec("resources")
class Resources(_KnownKeys):
    """Per-trial resources; fractional GPUs let several small FER nets share one device."""

    cpu: Positive = 1.0
    gpu: Annotated[float, Strict(), Field(ge=0)] = 0.0


@_spec("merge")
class MergeConfig(_KnownKeys):
    """The parallel-merge net built from the top trials after the search (search/ensemble/merge.py);
    ``bases: 0`` turns it off. ``time_budget_s`` bounds its training (checked after each epoch)."""

    bases: NonNegative = 3
    phase1_epochs: NonNegative = 3
    phase2_epochs: NonNegative = 2
    lr: Positive = 1e-3
    phase2_lr: Positive = 1e-4
    batch_size: Count = 128
    dropout: Rate = 0.25
    augment: Strength = 1.0
    time_budget_s: Positive | None = None
    seed: NonNegative = 0

    @model_validator(mode="after")
    def _trainable(self) -> MergeConfig:
        if self.bases == 1:
            _fail("a merge net needs 0 (off) or >= 2 bases, got 1", "bases")
        if self.bases and self.phase1_epochs + self.phase2_epochs == 0:
            _fail("needs at least one epoch in phase 1 or 2", "phase1_epochs")
        return self


@_spec("distill")
class DistillConfig(_KnownKeys):
    """The student ``fersearch run`` trains at its end (``fersearch distill``, search/serving/distill.py)
    when ``enabled``: under a run budget it gets ``share`` of the budget (the teacher's soft labels, its
    training, its export), taken from the search; without one, ``budget_s`` of training. ``arch``: the
    student's net (default: the export's best member's)."""

    enabled: Bool = False
    share: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.25
    budget_s: Positive = 600.0
    arch: Annotated[str, Strict(), Field(min_length=1)] | None = None
    temperatures: Annotated[tuple[Positive, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = (
        2.0,
        4.0,
    )


Name = Annotated[str, Strict(), Field(min_length=1, pattern=r"^[^/\\]+$")]


@_spec("")
class SearchConfig(_KnownKeys):
    """One search: space, objectives, budget, resources, storage and logging.

    ``run_budget_s`` turns on the budget planner (search/trial/plan.py): the whole ``fersearch run`` (data,
    search, selection, export) fits in it, and the planner sets the number of trials, their time and the
    search's time budget from the throughput measured on this machine (``num_samples`` and
    ``time_budget_s`` are then ignored; ``max_epochs`` only caps a trial). ``cycles``: cosine cycles per
    trial, their ends on ASHA's rungs (ratio ``reduction_factor``), each end an annealed snapshot that
    joins the ensemble library. ``min_epochs_per_trial``: the planner adds rounds of trials only while each
    still gets this many epochs. ``precision: bf16``: training forward passes under bfloat16 autocast;
    ``auto``: whichever of fp32 and bf16 trains faster on this machine, measured before the search (bf16
    pays only on CPUs with bfloat16 instructions). ``portfolio``: the first trials are the recipes that
    scored best at the epochs each trial can afford (``true``: ``search/spec/portfolio.json``, learned from
    recorded runs; or a path to a portfolio file of your own), in place of ``points_to_evaluate``; TPE
    searches around them.
    """

    name: Name = "search"
    space: SearchSpace = field(default_factory=SearchSpace)
    objectives: Annotated[tuple[Literal[OBJECTIVES], ...], BeforeValidator(_as_tuple)] = ("val_acc",)
    num_samples: Count = 8
    time_budget_s: Positive | None = None
    max_epochs: Count = 10
    grace_period: Count = 2
    reduction_factor: Annotated[int, Strict(), Field(ge=2)] = 3
    early_stop_patience: Count | None = None
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: Count | None = None
    seed: NonNegative = 0
    points_to_evaluate: Annotated[tuple[dict[Str, Any], ...], BeforeValidator(_as_tuple)] = ()
    wandb: Literal["off", "offline", "online"] = "off"
    wandb_project: Name = "fersearch"
    top_k: Count = 8
    checkpoints_to_keep: Count = 2
    max_failures: NonNegative = 0
    workers_per_trial: Count = 1
    optuna_storage: Annotated[str, Strict(), Field(min_length=1)] | None = None
    merge: MergeConfig = field(default_factory=MergeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    balanced_per_class: Count = 8000
    ensemble_bags: NonNegative = 0  # 0: plain greedy selection
    storage_uri: Str | None = None
    run_budget_s: Positive | None = None
    cycles: Count = 1
    min_epochs_per_trial: Count = 30
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    portfolio: Bool | Annotated[str, Strict(), Field(min_length=1)] = False

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        if self.objectives[:1] != ("val_acc",) or len(set(self.objectives)) != len(self.objectives):
            _fail(f"must start with val_acc, each at most once, got {list(self.objectives)}", "objectives")
        if self.storage_uri is not None and "://" not in self.storage_uri:
            _fail(
                "must be a pyarrow filesystem URI (s3://, gs://, hdfs://, file://), "
                f"got {self.storage_uri!r}; for a shared mount give the search directory instead",
                "storage_uri",
            )
        if self.merge.bases > self.top_k:
            _fail(f"the merge net's bases come from the top_k={self.top_k} trials, got {self.merge.bases}",
                  "merge.bases")  # fmt: skip
        params = {"arch", *(f.name for f in fields(SearchSpace) if f.name != "archs")}
        params |= {f"{a.name}.{k}" for a in self.space.archs for k in a.kwargs}
        archs = [a.name for a in self.space.archs]
        for i, point in enumerate(self.points_to_evaluate):
            unknown = sorted(set(point) - params)
            if unknown:
                _fail(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(params))}",
                      f"points_to_evaluate[{i}]")  # fmt: skip
            if point.get("arch", archs[0]) not in archs:
                _fail(f"arch {point['arch']!r} is not in space.archs ({', '.join(archs)})",
                      f"points_to_evaluate[{i}].arch")  # fmt: skip
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict:
        """The spec form (what ``config_from_dict`` reads back), JSON-serialisable."""
        d = asdict(self)
        d["space"]["archs"] = [{a["name"]: a["kwargs"]} for a in d["space"]["archs"]]
        return d

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with ``changes``, validated like a spec (a bad value raises :class:`SpecError`)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise SpecError(f"unknown SearchConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


# ---- errors: one line naming each bad key ----------------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "none_required": "null",
}


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def error_message(err: dict) -> str:
    """One pydantic error as ``expected …, got …`` (the path is added by :func:`format_errors`)."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, f", got {shown(err.get('input'))}"
    if kind == "spec":
        return ctx["msg"]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}{got}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        value = next(iter(ctx.values()))
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        return f"expected a value {bounds[kind]} {value}{got}"
    if kind == "literal_error":
        return f"expected one of {ctx['expected']}{got}"
    if kind == "too_short":
        return f"expected at least {ctx['min_length']} item(s){got}"
    if kind == "string_too_short":
        return f"expected a non-empty string{got}"
    if kind == "string_pattern_mismatch":
        return f"expected a name without slashes{got}"
    if kind in ("missing", "missing_argument"):
        return "missing"
    return f"{err['msg']}{got}"


def _walk(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list | tuple):
        return node[key] if isinstance(key, int) and -len(node) <= key < len(node) else None
    return getattr(node, key, None) if isinstance(key, str) else None


def _arch_name(node: Any) -> str | None:
    """The name of an arch given as ``name``, ``{name: kwargs}``, ``{name:, kwargs:}`` or an ArchSpace."""
    if isinstance(node, str):
        return node
    if isinstance(node, ArchSpace):
        return node.name
    if isinstance(node, dict):
        if isinstance(node.get("name"), str):
            return node["name"]
        if len(node) == 1:
            return str(next(iter(node)))
    return None


def error_path(loc: tuple, root: Any = None, prefix: str = "") -> str:
    """``("space", "archs", 0, "kwargs", "width")`` → ``space.archs[0].mini_xception.width``."""
    path, node = prefix, root
    for part in loc:
        if part in (_RANGE_TAG, _CHOICES_TAG):
            continue
        if part == "kwargs" and (name := _arch_name(node)) is not None:
            part = name  # the spec writes an arch's kwargs under its name
        else:
            node = _walk(node, part)
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def format_errors(e: ValidationError, prefix: str = "", root: Any = None) -> str:
    """Every error of ``e`` as ``path: expected …, got …``, on one line."""
    out = []
    for err in e.errors(include_url=False):
        sub = (err.get("ctx") or {}).get("sub") if err["type"] == "spec" else None
        path = error_path(err["loc"], root, prefix)
        if sub:
            path = f"{path}.{sub}" if path and not sub.startswith("[") else path + sub
        line = f"{path or 'spec'}: {error_message(err)}"
        if line not in out:
            out.append(line)
    return "; ".join(out)
