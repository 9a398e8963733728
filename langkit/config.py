"""Run configuration: one documented dataclass per stage, gathered under :class:`RunConfig`.

A YAML file maps onto these dataclasses key for key. Unknown keys are an error naming the dotted key;
``key=value`` overrides from the command line use the same dotted names (``train.max_steps=2``). The
resolved configuration is written into the run directory so that every run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from langkit.languages import LANGUAGES, TARGET_LANGUAGES, get_language


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns in the message."""


# --------------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------------


@dataclass
class SourceConfig:
    """One input of the corpus stage: a local file, a local parquet file or a Hugging Face dataset."""

    path: str
    """File path (relative paths resolve against the config file's folder) or Hub dataset id."""
    format: str = "text"
    """One of ``text`` (one segment per line), ``jsonl``, ``tsv``, ``parquet`` or ``hf`` (Hub id)."""
    language: str = ""
    """FLORES-200 code of the target-language text in this source, e.g. ``wol_Latn``."""
    name: str = ""
    """Short name used in provenance columns and stats; defaults to the file name or Hub id."""
    license: str = "unknown"
    """SPDX-style licence of the source, carried into every record and the dataset card."""
    text_field: str = "text"
    """Column / JSON key (or TSV header) holding the target-language text."""
    pivot_field: str = ""
    """Column / JSON key holding the aligned pivot text; empty for monolingual sources."""
    pivot_language: str = ""
    """FLORES-200 code of the pivot text (``fra_Latn`` or ``eng_Latn``); required with pivot_field."""
    hf_config: str = ""
    """Dataset configuration name for ``format: hf``."""
    hf_split: str = "train"
    """Split to read for ``format: hf``."""

    def check(self, key: str) -> None:
        if self.format not in {"text", "jsonl", "tsv", "parquet", "hf"}:
            raise ConfigError(f"{key}.format must be one of text, jsonl, tsv, parquet, hf; got {self.format!r}")
        if self.language not in LANGUAGES:
            raise ConfigError(f"{key}.language must be a known language code, got {self.language!r}")
        if self.pivot_field and self.pivot_language not in LANGUAGES:
            raise ConfigError(f"{key}.pivot_language must be set to a known code when pivot_field is set")
        if self.format == "text" and self.pivot_field:
            raise ConfigError(f"{key}.pivot_field is not supported for format 'text' (one segment per line)")


@dataclass
class CorpusConfig:
    """Stage 1: read sources, normalize, drop empty lines and duplicates, split, write a dataset."""

    sources: list[SourceConfig] = field(default_factory=list)
    """The inputs, in order."""
    dev_size: int = 4
    """Aligned pairs held out per language for the dev split (used for validation loss)."""
    test_size: int = 6
    """Aligned pairs held out per language for the test split (translated by the eval stage)."""
    seed: int = 0
    """Seed of the train/dev/test shuffle."""

    def check(self, key: str) -> None:
        for i, source in enumerate(self.sources):
            source.check(f"{key}.sources[{i}]")
        if self.dev_size < 0 or self.test_size < 0:
            raise ConfigError(f"{key}.dev_size and {key}.test_size must be >= 0")


@dataclass
class TokenizerConfig:
    """Stage 2: measure the base tokenizer and extend it with BPE merges learned from the corpus."""

    base: str = "openai/gpt-oss-20b"
    """Local tokenizer/model folder or Hub id; with no network the o200k_harmony vocabulary is rebuilt
    offline from the quicktok-v1 package."""
    budget: int = 256
    """Number of new tokens (merges) to add, shared across the languages."""
    min_frequency: int = 2
    """A pair must occur at least this many times in the corpus to become a new token."""

    def check(self, key: str) -> None:
        if self.budget < 0:
            raise ConfigError(f"{key}.budget must be >= 0, got {self.budget}")
        if self.min_frequency < 1:
            raise ConfigError(f"{key}.min_frequency must be >= 1, got {self.min_frequency}")


@dataclass
class TrainConfig:
    """Stage 3: LoRA fine-tuning of gpt-oss on the corpus with the extended tokenizer."""

    model: str = "tiny"
    """``tiny`` (random 2-layer GptOss with the real vocabulary), ``openai/gpt-oss-20b``,
    ``openai/gpt-oss-120b`` or a local model folder."""
    dtype: str = "float32"
    """Training dtype of the base weights: ``float32`` or ``bfloat16``."""
    lora_r: int = 8
    """LoRA rank (per attention projection, and per expert)."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the update is scaled by lora_alpha / lora_r."""
    lora_experts: bool = True
    """Also put LoRA on the mixture-of-experts weights (gate_up_proj, down_proj)."""
    train_new_embeddings: bool = True
    """Train the rows of the new tokens in the input embeddings and lm_head."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (linear warm-up, then linear decay to 0)."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 20
    """Optimizer steps to train for."""
    batch_size: int = 4
    """Examples per optimizer step."""
    max_length: int = 256
    """Longest example in tokens; longer examples are truncated."""
    monolingual: bool = True
    """Also train on the plain target-language text (next-token loss on every token)."""
    save_every: int = 10
    """Write a checkpoint every this many optimizer steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many of the most recent checkpoints to keep."""
    resume: bool = True
    """Continue from the last checkpoint in the run directory when there is one."""
    seed: int = 0
    """Seed of model initialisation (tiny), data order and LoRA initialisation."""

    def check(self, key: str) -> None:
        if self.lora_r <= 0:
            raise ConfigError(f"{key}.lora_r must be > 0, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"{key}.lora_alpha must be > 0, got {self.lora_alpha}")
        if self.dtype not in {"float32", "bfloat16"}:
            raise ConfigError(f"{key}.dtype must be float32 or bfloat16, got {self.dtype!r}")
        for name in ("max_steps", "batch_size", "max_length", "save_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{key}.{name} must be > 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"{key}.learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class EvalConfig:
    """Stage 4: translate the held-back test split both ways, score, export a blinded sheet."""

    max_items: int = 0
    """Test pairs per language to translate; 0 means all of the test split."""
    max_new_tokens: int = 64
    """Longest translation generated, in tokens (greedy decoding)."""
    batch_size: int = 8
    """Prompts generated together."""
    compare_base: bool = True
    """Also translate with the base model (no adapter, base tokenizer) as a second system."""
    seed: int = 0
    """Seed of the human-evaluation sheet's shuffle."""

    def check(self, key: str) -> None:
        if self.max_items < 0:
            raise ConfigError(f"{key}.max_items must be >= 0, got {self.max_items}")
        if self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ConfigError(f"{key}.max_new_tokens and {key}.batch_size must be > 0")


@dataclass
class PublishConfig:
    """Stage 5: a release folder (adapter, tokenizer, model card, manifest), optionally pushed."""

    repo_id: str = ""
    """Hub repository to push to (``org/name``); empty means build the release folder only."""
    private: bool = False
    """Create the Hub repository as private."""
    license: str = "apache-2.0"
    """Licence of the released adapter; gpt-oss itself is Apache-2.0."""
    tag: str = ""
    """Optional tag to put on the pushed commit (e.g. ``v0.1.0``)."""

    def check(self, key: str) -> None:
        if self.repo_id and self.repo_id.count("/") != 1:
            raise ConfigError(f"{key}.repo_id must look like 'org/name', got {self.repo_id!r}")


@dataclass
class RunConfig:
    """A whole pipeline run: which languages, and the settings of each of the five stages."""

    name: str = "run"
    """Name of the run; used for the run directory and the released model's name."""
    languages: list[str] = field(default_factory=lambda: list(TARGET_LANGUAGES))
    """Target languages (FLORES-200 codes) the run adapts the model to."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)

    def check(self) -> None:
        for code in self.languages:
            try:
                lang = get_language(code)
            except ValueError as err:
                raise ConfigError(f"languages: {err}") from None
            if lang.is_pivot:
                raise ConfigError(f"languages: {code} is a pivot language, not a target")
        for name in ("corpus", "tokenizer", "train", "eval", "publish"):
            getattr(self, name).check(name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Loading: YAML -> dataclasses, with dotted overrides
# --------------------------------------------------------------------------------------------------


def _build(cls: Any, data: Any, key: str) -> Any:
    """Turn plain YAML data into an instance of the annotated type ``cls``, checking every key."""
    origin = typing.get_origin(cls)
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise ConfigError(f"{key or 'config'} must be a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for k, v in data.items():
            dotted = f"{key}.{k}" if key else str(k)
            if k not in names:
                raise ConfigError(f"unknown config key {dotted!r}; known keys here: {', '.join(sorted(names))}")
            kwargs[k] = _build(hints[k], v, dotted)
        return typing.cast(Any, cls)(**kwargs)
    if origin is list:
        (item_type,) = typing.get_args(cls)
        if not isinstance(data, list):
            raise ConfigError(f"{key} must be a list, got {type(data).__name__}")
        return [_build(item_type, v, f"{key}[{i}]") for i, v in enumerate(data)]
    if origin in (typing.Union, types.UnionType):  # only ``X | None`` is used
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        return None if data is None else _build(args[0], data, key)
    if cls is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if cls is str and isinstance(data, (int, float)) and not isinstance(data, bool):
        return str(data)
    if cls in (int, float, str, bool):
        if not isinstance(data, cls) or (cls is int and isinstance(data, bool)):
            raise ConfigError(f"{key} must be of type {cls.__name__}, got {data!r}")
        return data
    raise ConfigError(f"{key}: unsupported config type {cls!r}")  # pragma: no cover - a bug in langkit


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML scalars (``2`` -> int, ``true`` -> bool)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.max_steps=2)")
        k, v = item.split("=", 1)
        parsed.append((k.strip(), yaml.safe_load(v) if v.strip() else ""))
    return parsed


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    data = dict(data or {})
    for dotted, value in parse_overrides(overrides or []):
        _set_dotted(data, dotted, value)
    cfg = _build(RunConfig, data, "")
    cfg.check()
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply dotted overrides, check it, and resolve relative source paths."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        cfg = config_from_dict(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for source in cfg.corpus.sources:
        if source.format != "hf" and not Path(source.path).is_absolute():
            source.path = str((path.parent / source.path).resolve())
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run really used, overrides included)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
