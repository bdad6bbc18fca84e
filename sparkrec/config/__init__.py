"""One typed config for every job.

YAML in ``conf/`` loads into frozen pydantic models; the field docstrings in this package are the
single place each key is documented (``python -m sparkrec.config`` prints them all). Any key can be
overridden on the command line as ``dotted.key=value`` (the value is parsed as YAML, so
``train.epochs=5`` is an int, ``train.lr=1e-3`` a float and ``input.columns.rating=null`` None;
a key that holds text takes the text as written: ``name=0123`` and ``train.amp=off`` stay strings;
one value for a list key is a list of one: ``evaluate.k=10``).
"""
from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Literal, Sequence, Union, get_args, get_origin

import yaml
from pydantic import Field, ValidationError

from sparkrec.config.autoencoder import AutoencoderConfig
from sparkrec.config.base import Section
from sparkrec.config.content import ContentConfig
from sparkrec.config.evaluate import EvaluateConfig
from sparkrec.config.explain import ExplainConfig
from sparkrec.config.generate import GenerateConfig
from sparkrec.config.input import InputConfig
from sparkrec.config.pipeline import PipelineConfig
from sparkrec.config.prepare import PrepareConfig
from sparkrec.config.score import ScoreConfig
from sparkrec.config.sequence import SequenceConfig
from sparkrec.config.spark import SparkConfig
from sparkrec.config.train import TrainConfig
from sparkrec.config.tune import TuneConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


class Config(Section):
    lake: str = "lake"
    """Root folder or URI under which every job writes: prepared/, models/, reports/, scores/, runs/."""

    lake_shared: bool = False
    """A `file://` (or absolute) lake is a shared mount (NFS, Lustre) at the same path on every
    node. Without it such a lake is refused when the master is not local: it would be the
    driver's own disk, which executors on other hosts do not see."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    """Name of this model/run: artifacts go to models/<name>, reports/<name>, scores/<name>."""

    seed: int = 42
    """Global seed (splits, sampling, initialisation); same seed and data give the same result."""

    spark: SparkConfig = SparkConfig()
    input: InputConfig = InputConfig()
    generate: GenerateConfig = GenerateConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    sequence: SequenceConfig = SequenceConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    score: ScoreConfig = ScoreConfig()
    pipeline: PipelineConfig = PipelineConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    content: ContentConfig = ContentConfig()
    explain: ExplainConfig = ExplainConfig()
    tune: TuneConfig = TuneConfig()


def _resolve_key(dotted: str) -> tuple[list[str], Any]:
    """Split ``a.b.c`` along the model, and the key's type (None: an unknown key, or one inside a
    dict-typed field, whose rest is one key: ``spark.conf.spark.executor.memory`` -> ``spark``,
    ``conf``, ``spark.executor.memory``)."""
    parts = dotted.split(".")
    model: type[Section] | None = Config
    ann = None
    for i, part in enumerate(parts):
        field = model.model_fields.get(part) if model else None
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, Section):
            model = ann
            continue
        if getattr(ann, "__origin__", None) is dict and i + 1 < len(parts):
            return parts[: i + 1] + [".".join(parts[i + 1:])], None
        model = None
    return parts, ann


def _without_none(ann: Any) -> Any:
    """``X`` for ``Optional[X]``; ``ann`` otherwise."""
    if get_origin(ann) in (Union, types.UnionType):
        others = [a for a in get_args(ann) if a is not type(None)]
        return others[0] if len(others) == 1 else ann
    return ann


def _holds_text(ann: Any) -> bool:
    """str, a Literal of words, or either of them or None."""
    ann = _without_none(ann)
    return ann is str or (get_origin(ann) is Literal and all(isinstance(c, str) for c in get_args(ann)))


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float as YAML 1.2 does (1.1 wants ``1.0e-3``, and
    ``train.lr: 1e-3`` came out as the string '1e-3')."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


_YAML_NULLS = ("null", "Null", "NULL", "~")


def _override_value(ann: Any, raw: str) -> Any:
    """An override's value for a key of type ``ann``: YAML, except that a key holding text takes the text as written (YAML
    turns name=2024 into an int, name=0123 into 83, train.amp=off into false), and a single value
    for a list key is a list of one (evaluate.k=10). Quoted values, lists and null are YAML."""
    text = raw.strip()
    if not text:
        return ""
    if text in _YAML_NULLS or text[0] in "\"'[{":
        return _load_yaml(raw)
    ann = _without_none(ann)
    if get_origin(ann) is list:
        element = get_args(ann)[0]
        return [raw if _holds_text(element) else _load_yaml(raw)]
    return raw if _holds_text(ann) else _load_yaml(raw)


def _set_dotted(tree: dict, dotted: str, parts: list[str], value: Any) -> None:
    node = tree
    *parents, leaf = parts
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict (values: see ``_override_value``)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        parts, ann = _resolve_key(key.strip())
        try:
            value = _override_value(ann, raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e.__class__.__name__})") from None
        _set_dotted(tree, key.strip(), parts, value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _describe(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key!r}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config {source}: " + "; ".join(problems)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load ``path`` (YAML; None = all defaults), apply ``dotted.key=value`` overrides, validate.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or unreadable file; the message names the key and the file.
    """
    data: dict = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        try:
            data = _load_yaml(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {source} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {source} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {source} must hold a mapping, not {type(data).__name__}")
    if overrides:
        data = _merge(data, parse_overrides(overrides))
        source += " + command-line overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``dotted.key=value`` overrides applied (validated like the command line's).

    Raises
    ------
    ConfigError
        An override names an unknown key or a value of the wrong type.
    """
    try:
        return Config.model_validate(_merge(dump_config(cfg), parse_overrides(overrides)))
    except ValidationError as e:
        raise ConfigError(_describe(e, "overrides " + " ".join(overrides))) from None


def dump_config(cfg: Config) -> dict:
    """The resolved config as plain data, saved beside every artifact."""
    return cfg.model_dump(mode="json")


def config_reference() -> str:
    """Every key with its type, default and documentation, generated from the models."""
    lines: list[str] = []

    def walk(model: type[Section], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Section):
                lines.append(f"\n## {key}")
                walk(ann, key + ".")
                continue
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            doc = " ".join((field.description or "").split())
            lines.append(f"- `{key}` ({type_name}, default `{field.default!r}`): {doc}")

    walk(Config, "")
    return "\n".join(lines).strip() + "\n"
