"""The systems a suite compares, each named by the user as ``NAME=KIND:WHAT``:

==========================================  ==========================================================
``adapted=run:runs/wol``                    a langkit run: its base model, extended tokenizer and adapter
``base=hf:openai/gpt-oss-20b``              a Hugging Face causal LM, folder or Hub id (``tiny``: the
                                            built-in random model), generated here with ``model.generate``
``ft=hf:MODEL,adapter=DIR,tokenizer=DIR``   the same with a PEFT adapter and/or another tokenizer
``served=openai:http://host:8000/v1@MODEL`` an OpenAI-compatible endpoint (vLLM, llama.cpp, Ollama,
                                            ``transformers serve``) through the official ``openai`` client
``nllb=file:nllb-outputs/``                 outputs made elsewhere: ``DIR/{task}/{src}-{tgt}.txt`` or
                                            ``DIR/{src}-{tgt}.txt``, one segment per line
==========================================  ==========================================================

Every system answers ``translate(source_language, target_language, items, emit)``: ``items`` are
``(segment index, source text)`` pairs still to translate, and ``emit(index, output)`` is called as each
output is ready (the suite caches it at once). ``info()`` is what results.json records of the system.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from langkit.utils import get_logger

log = get_logger("evaluate")

KINDS = ("run", "hf", "openai", "file")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")

Emit = Callable[[int, str], None]


class SystemSpecError(ValueError):
    """A ``--system`` argument that does not parse; the message shows the expected shapes."""


class System(Protocol):
    name: str
    kind: str

    def info(self) -> dict[str, Any]: ...

    def translate(self, source_language: str, target_language: str, items: Sequence[tuple[int, str]],
                  emit: Emit) -> None: ...

    def close(self) -> None: ...


@dataclass
class GenerationSettings:
    """How the systems that generate are asked; recorded in results.json and part of each cache's key."""

    max_new_tokens: int = 256
    """Longest output, in tokens (greedy decoding everywhere)."""
    batch_size: int = 8
    """Prompts generated together by a local model."""
    concurrency: int = 4
    """Requests in flight to an endpoint."""
    retries: int = 4
    """Retries of a failed endpoint request (exponential back-off) before the run stops."""
    timeout: float = 120.0
    """Seconds an endpoint request may take."""
    dtype: str = "float32"
    """Weights of a local model (float32 or bfloat16)."""


@dataclass
class SystemSpec:
    name: str
    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        opts = "".join(f",{k}={v}" for k, v in self.options.items())
        return f"{self.name}={self.kind}:{self.target}{opts}"


USAGE = ("NAME=run:RUN_DIR | NAME=hf:MODEL[,adapter=DIR][,tokenizer=DIR] | NAME=openai:URL@MODEL | "
         "NAME=file:DIR_OR_FILE")


def parse_system(text: str) -> SystemSpec:
    """``NAME=KIND:WHAT[,key=value...]`` -> :class:`SystemSpec`; anything else is refused with the shapes."""
    name, eq, rest = text.partition("=")
    kind, colon, target = rest.partition(":")
    if not eq or not colon or not target:
        raise SystemSpecError(f"--system {text!r} does not parse; expected {USAGE}")
    if not _NAME.fullmatch(name):
        raise SystemSpecError(f"--system {text!r}: the name {name!r} must be letters, digits, '_', '.', '+' or '-' "
                              "(it names output files)")
    if kind not in KINDS:
        raise SystemSpecError(f"--system {text!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)} ({USAGE})")
    options: dict[str, str] = {}
    if kind == "hf":
        target, *extra = target.split(",")
        for item in extra:
            key, eq, value = item.partition("=")
            if key not in ("adapter", "tokenizer") or not eq or not value:
                raise SystemSpecError(f"--system {text!r}: unknown option {item!r}; hf takes adapter=DIR and tokenizer=DIR")
            options[key] = value
    if kind == "openai":
        url, at, model = target.rpartition("@")
        if not at or not url.startswith(("http://", "https://")) or not model:
            raise SystemSpecError(f"--system {text!r}: an endpoint is openai:http(s)://HOST:PORT/v1@MODEL")
    return SystemSpec(name, kind, target, options)


def parse_systems(texts: Sequence[str]) -> list[SystemSpec]:
    specs = [parse_system(t) for t in texts]
    names = [s.name for s in specs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise SystemSpecError(f"--system names must differ: {', '.join(twice)} given twice")
    if not specs:
        raise SystemSpecError(f"give at least one --system ({USAGE})")
    return specs


# --------------------------------------------------------------------------------------------------
# Local models: a langkit run, or any Hugging Face causal LM
# --------------------------------------------------------------------------------------------------


class LocalSystem:
    """A model generated with here (``run:`` and ``hf:``), loaded on first use and freed by :meth:`close`."""

    def __init__(self, spec: SystemSpec, settings: GenerationSettings) -> None:
        self.name, self.kind, self.spec, self.settings = spec.name, spec.kind, spec, settings
        self._loaded: tuple[Any, Any] | None = None
        if spec.kind == "run":
            root = Path(spec.target)
            if not (root / "config.yaml").is_file():
                raise SystemSpecError(f"--system {spec}: {root} is not a langkit run directory (no config.yaml)")

    def info(self) -> dict[str, Any]:
        from langkit.utils import sha256_file

        if self.kind == "run":
            from langkit.config import load_config
            from langkit.rundir import RunDir

            run_dir = RunDir(Path(self.spec.target))
            cfg = load_config(run_dir.config)
            return {"kind": "run", "run": str(run_dir.root), "model": cfg.train.model,
                    "adapter_sha256": sha256_file(run_dir.adapter_weights) if run_dir.adapter_weights.is_file() else None,
                    "tokenizer_sha256": sha256_file(run_dir.tokenizer_file) if run_dir.tokenizer_file.is_file() else None,
                    "prompt": "harmony", "dtype": cfg.train.dtype}
        adapter = self.spec.options.get("adapter")
        weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
        return {"kind": "hf", "model": self.spec.target, "adapter": adapter,
                "adapter_sha256": sha256_file(weights) if weights and weights.is_file() else None,
                "tokenizer": self.spec.options.get("tokenizer") or self.spec.target, "dtype": self.settings.dtype}

    def open(self) -> None:
        """Load the model now (the suite calls it before its progress bar starts)."""
        self._load()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            log.info("loading system %s (%s)", self.name, self.spec)
            model, tokenizer = self._load_run() if self.kind == "run" else self._load_hf()
            from langkit.evaluate.generation import to_device

            self._loaded = (to_device(model), tokenizer)
        return self._loaded

    def _load_run(self) -> tuple[Any, Any]:
        from langkit.config import load_config
        from langkit.rundir import RunDir
        from langkit.train import load_adapted_model

        run_dir = RunDir(Path(self.spec.target))
        return load_adapted_model(run_dir, load_config(run_dir.config))  # type: ignore[no-any-return]

    def _load_hf(self) -> tuple[Any, Any]:
        from langkit.models import load_base_model
        from langkit.tokenizer import GPT_OSS_HUB_IDS, load_base_tokenizer

        name = self.spec.target
        tokenizer_name = self.spec.options.get("tokenizer", name)
        if tokenizer_name == "tiny":
            tokenizer_name = "openai/gpt-oss-20b"  # the tiny model has gpt-oss's vocabulary
        if tokenizer_name in GPT_OSS_HUB_IDS or Path(tokenizer_name).is_dir():
            tokenizer = load_base_tokenizer(tokenizer_name)  # offline rebuild for gpt-oss ids
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        model = load_base_model(name, self.settings.dtype)  # tiny, a folder, or a Hub id (cache, then Hub)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            # an extended tokenizer: the adapter saved the new rows whole, the resize only makes room for them
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        if adapter := self.spec.options.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        return model, tokenizer

    def translate(self, source_language: str, target_language: str, items: Sequence[tuple[int, str]],
                  emit: Emit) -> None:
        from langkit.evaluate.generation import translate

        model, tokenizer = self._load()
        indices = [i for i, _ in items]

        def on_batch(done: list[tuple[int, str]]) -> None:
            for position, output in done:
                emit(indices[position], output)

        translate(model, tokenizer, source_language, target_language, [t for _, t in items],
                  max_new_tokens=self.settings.max_new_tokens, batch_size=self.settings.batch_size, on_batch=on_batch,
                  show_progress=False)  # the suite shows one bar per direction

    def close(self) -> None:
        self._loaded = None  # one model in memory at a time
        gc.collect()


# --------------------------------------------------------------------------------------------------
# Outputs made elsewhere
# --------------------------------------------------------------------------------------------------


class FileSystem:
    """Outputs produced elsewhere (NLLB-200's, a published system's): read, never generated."""

    kind = "file"

    def __init__(self, spec: SystemSpec) -> None:
        self.name, self.spec, self.root = spec.name, spec, Path(spec.target)
        if not self.root.exists():
            raise SystemSpecError(f"--system {spec}: {self.root} does not exist")

    def info(self) -> dict[str, Any]:
        return {"kind": "file", "path": str(self.root)}

    def candidates(self, task: str, source_language: str, target_language: str) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        pair = f"{source_language}-{target_language}"
        return [self.root / task / f"{pair}.{ext}" for ext in ("txt", "hyp")] + \
               [self.root / f"{task}.{pair}.{ext}" for ext in ("txt", "hyp")] + \
               [self.root / f"{pair}.{ext}" for ext in ("txt", "hyp")]

    def outputs(self, task: str, source_language: str, target_language: str, total: int, n: int) -> list[str] | None:
        """The first ``n`` outputs for one direction, or None when the folder has no file for it. A file
        whose line count is not the test set's (``total``) is refused, naming it and both counts."""
        found = next((p for p in self.candidates(task, source_language, target_language) if p.is_file()), None)
        if found is None:
            return None
        from langkit.evaluate.benchmarks import read_segments

        lines = read_segments(found)
        if len(lines) != total:
            raise ValueError(f"system {self.name}: {found} has {len(lines)} lines but {task} {source_language}-"
                             f"{target_language} has {total} references: one output per reference, in order")
        return lines[:n]

    def translate(self, source_language: str, target_language: str, items: Sequence[tuple[int, str]],
                  emit: Emit) -> None:
        raise RuntimeError("a file system is read with outputs(), not translated with")

    def close(self) -> None:
        pass


def make_system(spec: SystemSpec, settings: GenerationSettings) -> Any:
    if spec.kind in ("run", "hf"):
        return LocalSystem(spec, settings)
    if spec.kind == "file":
        return FileSystem(spec)
    from langkit.evaluate.endpoint import EndpointSystem

    return EndpointSystem.from_spec(spec.name, spec.target, concurrency=settings.concurrency, retries=settings.retries,
                                    timeout=settings.timeout, max_tokens=settings.max_new_tokens)
