"""Stage 1, corpus: read the configured sources, normalize, drop, split, write a Hugging Face dataset.

    sources ──read_source──▶ Record ──normalize──▶ scrub PII ──▶ drop empty / quality / langid / (near_)duplicate ──▶ kept
                               │ malformed  (per language)  (<PHONE>…)       │ dropped (reason)
                               ▼                                             ▼
                     corpus/quarantine.jsonl                         corpus/dropped.jsonl

Kept records are split per language (seeded: ``test_size`` then ``dev_size`` aligned pairs held out,
everything else in train), the train split is decontaminated against every dev and test text (and the
files of ``corpus.dedup.decontaminate_against``; reason ``decontaminated``), and the splits are written to ``corpus/dataset/{train,dev,test}.parquet`` with the columns
``id, language, text, pivot_language, pivot_text, source, license, file, line, normalization``. The
counts (read, kept, dropped by reason, quarantined; per source, per language, per split; per language
also the normalization rules with before/after samples and the PII replaced by type) go to
``corpus/stats.json``. Load the splits with
``datasets.load_dataset("parquet", data_files={"train": ".../train.parquet", ...})``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langkit.config import RunConfig
from langkit.corpus.build import COLUMNS, SPLITS, build_corpus
from langkit.corpus.normalize import Normalizer, normalize_text
from langkit.corpus.readers import Record, read_source
from langkit.rundir import RunDir

__all__ = ["COLUMNS", "SPLITS", "Normalizer", "Record", "build_corpus", "build_from_config", "normalize_text",
           "read_source", "run"]


def build_from_config(cfg: RunConfig, out_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """:func:`build_corpus` with everything ``cfg.corpus`` says; ``overrides`` replace single keyword
    arguments (the Slurm merge task runs with ``workers=1``). Returns the build's stats."""
    c = cfg.corpus
    options: dict[str, Any] = dict(
        release=c.release, allow_restricted=c.allow_restricted,
        normalization=c.normalize, pii=c.pii, filters=c.filters, langid=c.langid, dedup=c.dedup,
        workers=c.workers, only_source=c.only_source, executor=c.executor,
        allow_eval_sources=c.allow_eval_sources, allow_empty=c.allow_empty,
    )  # fmt: skip
    options.update(overrides)
    return build_corpus(c.sources, cfg.languages, Path(out_dir), c.dev_size, c.test_size, c.seed, **options)


def run(cfg: RunConfig, run_dir: RunDir) -> Path:
    """The corpus stage's front door: build ``run_dir.corpus`` from ``cfg.corpus`` and return it."""
    build_from_config(cfg, run_dir.corpus)
    return run_dir.corpus
