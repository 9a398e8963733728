"""Run configuration: one documented dataclass per stage, gathered under :class:`RunConfig`.

A YAML file maps onto these dataclasses key for key. Unknown keys are an error naming the dotted key;
``key=value`` overrides from the command line use the same dotted names (``train.max_steps=2``). The
resolved configuration is written into the run directory so that every run can be reproduced.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
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
    """One of ``text`` (one segment per line), ``jsonl``, ``csv``, ``tsv``, ``aligned`` (two line-aligned
    files: ``path`` and ``pivot_path``), ``parquet``, ``xlsx`` or ``hf`` (Hub id or local dataset folder).
    See :mod:`langkit.corpus.readers`."""
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
    pivot_path: str = ""
    """``format: aligned`` only: the pivot-language file whose line N translates line N of ``path``
    (relative paths resolve like ``path``). Files of different lengths are refused."""
    encoding: str = "auto"
    """Text encoding of text / jsonl / csv / tsv / aligned files: ``auto`` (BOM, else UTF-8, else a
    detected legacy code page such as cp1252) or any Python codec name (``utf-8``, ``utf-16``,
    ``cp1252``, ``latin-1``), used as declared. Lines that do not decode are quarantined."""
    delimiter: str = ""
    """``format: csv`` only: the one-character cell separator; empty means ``,`` (``;`` for
    French-locale Excel exports, ``"\\t"`` for a quoted tab-separated file)."""
    sheet: str = ""
    """``format: xlsx`` only: the sheet to read; empty means the first sheet. Row 1 is the header."""
    card: str = ""
    """Id of this source's card in the catalogue (``corpora/sources/``, ``langkit corpus sources``);
    it fills ``license`` and ``redistribution`` when they are not set here."""
    redistribution: str = ""
    """What the licence allows: ``open``, ``share-alike``, ``non-commercial`` or ``no-redistribution``;
    empty means from ``card``, else inferred from ``license``. A build meant for release
    (``corpus.release``) refuses non-commercial and no-redistribution sources."""
    split: str = ""
    """``test``: every record of this source kept by the filters goes to the test split (an evaluation set
    such as FLORES-200 devtest), and its language's test split is this source alone (``corpus.test_size``
    no longer applies to it); ``dev`` likewise for the dev split. Empty: the source is split like the
    others. A source whose catalogue card marks it as an evaluation set must say ``test`` or ``dev``
    (unless ``corpus.allow_eval_sources``)."""

    def check(self, key: str) -> None:
        formats = ("text", "jsonl", "csv", "tsv", "aligned", "parquet", "xlsx", "hf")
        if self.format not in formats:
            raise ConfigError(f"{key}.format must be one of {', '.join(formats)}; got {self.format!r}")
        if self.format == "aligned":
            if not self.pivot_path or self.pivot_field:
                raise ConfigError(f"{key}: format 'aligned' needs pivot_path (the pivot file), not pivot_field")
            if self.pivot_language not in LANGUAGES:
                raise ConfigError(f"{key}.pivot_language must be set to a known code for format 'aligned'")
        elif self.pivot_path:
            raise ConfigError(f"{key}.pivot_path is only for format 'aligned'")
        if self.encoding != "auto":
            if self.format not in ("text", "jsonl", "csv", "tsv", "aligned"):
                raise ConfigError(f"{key}.encoding applies to text, jsonl, csv, tsv and aligned files only")
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(f"{key}.encoding: unknown encoding {self.encoding!r}") from None
        if self.delimiter and (self.format != "csv" or len(self.delimiter) != 1):
            raise ConfigError(f"{key}.delimiter must be one character, and only for format 'csv'")
        if self.sheet and self.format != "xlsx":
            raise ConfigError(f"{key}.sheet is only for format 'xlsx'")
        redistribution = ("open", "share-alike", "non-commercial", "no-redistribution")
        if self.redistribution and self.redistribution not in redistribution:
            raise ConfigError(
                f"{key}.redistribution must be one of {', '.join(redistribution)}; got {self.redistribution!r}"
            )
        if self.language not in LANGUAGES:
            raise ConfigError(f"{key}.language must be a known language code, got {self.language!r}")
        if self.pivot_field and self.pivot_language not in LANGUAGES:
            raise ConfigError(f"{key}.pivot_language must be set to a known code when pivot_field is set")
        if self.format == "text" and self.pivot_field:
            raise ConfigError(f"{key}.pivot_field is not supported for format 'text' (one segment per line)")
        if self.split not in ("", "dev", "test"):
            raise ConfigError(f"{key}.split must be test, dev or empty (split with the others), got {self.split!r}")


@dataclass
class NormalizeConfig:
    """Per-language text normalization (``langkit.corpus.normalize``), shared by the corpus, tokenizer and
    training stages. Each switch turns one rule on or off; the module documents every rule and its source."""

    nfc: bool = True
    """Unicode NFC: one code point for é, ë, ñ where one exists (rule ``nfc``)."""
    fold_lookalikes: bool = True
    """Fold look-alike letters into the language's own (Greek ε to ɛ in Baoulé and Lingala, ↄ to ɔ, Greek η
    to ŋ in Wolof); never applied to French, English or Swahili text (rule ``lookalike``)."""
    unify_apostrophes: bool = True
    """Write every apostrophe variant (’ ʼ ‘, and ´ ` between letters) as the ASCII apostrophe ' that
    gpt-oss's pre-tokenizer knows (rule ``apostrophe``)."""
    unify_spaces: bool = True
    """No-break, thin and other exotic spaces and tabs to a plain space, runs collapsed, ends trimmed
    (rule ``space``)."""
    strip_controls: bool = True
    """Remove control characters (C0/C1 except tab and newline) and invisible format characters
    (zero-width space, BOM, soft hyphen, bidi marks) (rule ``control``)."""
    lingala_tones: str = "keep"
    """Lingala tone marks (á, ɛ́, ǒ, ɔ̂): ``keep`` them, or ``strip`` them (rule ``tones_stripped``)."""
    swahili_ng_apostrophe: bool = True
    """Swahili: the apostrophe of ng' (ng'ombe) written as ASCII ' whatever variant was typed (rule
    ``ng_apostrophe``)."""
    flag_french_spelling: bool = True
    """Wolof and Baoulé: flag (never change) text in a French-style spelling (flag ``flag:french_spelling``)."""

    def check(self, key: str) -> None:
        if self.lingala_tones not in {"keep", "strip"}:
            raise ConfigError(f"{key}.lingala_tones must be keep or strip, got {self.lingala_tones!r}")


@dataclass
class FilterConfig:
    """Quality filters of the corpus stage (``langkit.corpus.filters``), applied to the normalized target
    text; a dropped record's reason is the name of the first filter it fails."""

    enabled: bool = True
    """Run the quality filters at all."""
    min_chars: int = 2
    """Fewer characters than this: ``too_short`` (greetings such as "Mo." must survive)."""
    min_words: int = 1
    """Fewer whitespace-separated words than this: ``too_short``."""
    max_chars: int = 10_000
    """More characters than this: ``too_long`` (a UDHR preamble is about 3,000)."""
    max_words: int = 2_000
    """More words than this: ``too_long``."""
    min_letter_ratio: float = 0.5
    """Share of letters among the non-space characters (placeholders such as <PHONE> count as symbols);
    below it: ``mostly_symbols`` (page numbers, tables of figures, lines of punctuation)."""
    ngram_size: int = 3
    """n of the word n-grams checked for repetition."""
    max_repeated_ngrams: float = 0.5
    """Share of the word n-grams that repeat an earlier one; above it: ``repeated_ngrams``."""
    min_script_ratio: float = 0.8
    """Share of the letters that are in the language's script (Latin); below it: ``wrong_script``."""

    def check(self, key: str) -> None:
        for name in ("min_chars", "min_words", "max_chars", "max_words"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key}.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_chars < self.min_chars or self.max_words < self.min_words:
            raise ConfigError(f"{key}.max_chars/max_words must be >= min_chars/min_words")
        if self.ngram_size < 1:
            raise ConfigError(f"{key}.ngram_size must be >= 1, got {self.ngram_size}")
        for name in ("min_letter_ratio", "max_repeated_ngrams", "min_script_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{key}.{name} must be between 0 and 1, got {getattr(self, name)}")


@dataclass
class PiiConfig:
    """Personal data scrubbing (``langkit.corpus.pii``): matches are replaced by typed placeholders."""

    enabled: bool = True
    """Scrub personal data at all (target and pivot text)."""
    emails: bool = True
    """E-mail addresses -> ``<EMAIL>``."""
    phones: bool = True
    """Phone numbers (Senegal, Côte d'Ivoire, both Congos, Kenya, Tanzania, international) -> ``<PHONE>``."""
    urls: bool = True
    """URLs that carry user data (user info, user/e-mail/token/id parameters) -> ``<URL>``; other URLs
    are kept."""
    id_numbers: bool = True
    """Runs of ``min_id_digits`` or more digits (and 4-4-4-4 card-like groups) -> ``<ID>``."""
    min_id_digits: int = 9
    """Shortest digit run taken for an identifier."""

    def check(self, key: str) -> None:
        if self.min_id_digits < 5:
            raise ConfigError(f"{key}.min_id_digits must be >= 5, got {self.min_id_digits}")


@dataclass
class LangIdConfig:
    """Language identification (``langkit.corpus.langid``): drop records that are not in their source's
    language, e.g. French lines in a Wolof file, with the reason ``langid:fra_Latn``."""

    enabled: bool = True
    """Identify the language of every target text."""
    backend: str = "builtin"
    """``builtin`` (common words of the six languages, no dependency) or ``glotlid`` (a fastText model
    file at ``model_path``; needs the optional ``fasttext`` package)."""
    model_path: str = ""
    """Path of the GlotLID ``model.bin`` for ``backend: glotlid``."""
    threshold: float = 0.4
    """Confidence at or above which another language's prediction drops the record. For the builtin
    identifier 0.4 means at least two words of the other language and a clear majority of the
    evidence: on the FLORES-200 dev and UDHR/mtBCI texts it dropped none of the 4,800 target-language
    lines and found 99% of French and 97% of English FLORES sentences put into a Wolof source."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Per source language, overriding ``threshold`` (``{bci_Latn: 0.7}``)."""
    min_words: int = 3
    """Texts with fewer words are never dropped by language identification (too little evidence)."""
    drop_languages: list[str] = field(default_factory=list)
    """Only these predicted languages drop a record; empty means any language other than the source's."""

    def check(self, key: str) -> None:
        if self.backend not in {"builtin", "glotlid"}:
            raise ConfigError(f"{key}.backend must be builtin or glotlid, got {self.backend!r}")
        if self.backend == "glotlid" and not self.model_path:
            raise ConfigError(f"{key}.model_path must be set for backend glotlid")
        for code, value in {"": self.threshold, **self.thresholds}.items():
            if code and code not in LANGUAGES:
                raise ConfigError(f"{key}.thresholds.{code}: unknown language code")
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}.threshold{'s.' + code if code else ''} must be between 0 and 1")
        if self.min_words < 0:
            raise ConfigError(f"{key}.min_words must be >= 0, got {self.min_words}")


@dataclass
class DedupConfig:
    """Near-duplicate removal and decontamination (``langkit.corpus.dedup``), after the exact
    ``duplicate`` step. Both compare texts case-folded, with punctuation and symbols ignored."""

    near_duplicates: bool = True
    """Drop a record whose MinHash-estimated Jaccard similarity to a record kept before it (same
    language, any source) is at least ``threshold`` (reason ``near_duplicate``). A pair is compared on
    its target and pivot text together, a monolingual record on its text."""
    threshold: float = 0.8
    """Estimated Jaccard similarity of the shingle sets at or above which a record is a near-duplicate."""
    num_perm: int = 128
    """MinHash values per record (precision of the estimate: std about 0.035 at 0.8 with 128)."""
    bands: int = 16
    """LSH bands (``num_perm`` must be a multiple): more bands find more candidates below the threshold."""
    shingle: int = 5
    """Shingle size, in characters (``shingle_unit: char``) or words (``word``)."""
    shingle_unit: str = "char"
    """``char`` (character n-grams: robust on sentence-length lines and to spelling variants) or ``word``."""
    min_words: int = 5
    """Texts of fewer words are near-duplicates only of a text with the same shingles (similarity 1.0):
    on a short line one character moves the similarity a lot ("Matie 1" / "Matie 10": 0.75)."""
    seed: int = 0
    """Seed of the MinHash functions."""
    samples: int = 10
    """(dropped, kept) near-duplicate pairs per language written to ``stats.json`` for review."""
    decontaminate: bool = True
    """Drop training records whose target or pivot text overlaps an evaluation text: the dev and test
    splits of this build (every language) and ``decontaminate_against`` (reason ``decontaminated``)."""
    decontaminate_against: list[str] = field(default_factory=list)
    """More evaluation texts: plain-text UTF-8 files, one segment per line (relative paths resolve
    against the config file's folder), e.g. a FLORES-200 devtest file of each language and pivot."""
    ngram: int = 8
    """Words in the n-grams a training text may not share with an evaluation text of this many words
    or more."""
    decontaminate_min_words: int = 3
    """Evaluation texts of this many words up to ``ngram - 1`` count when contained whole in a training
    text; shorter ones ("Bonjour.") only when the training text is exactly them."""

    def check(self, key: str) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"{key}.threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ConfigError(
                f"{key}.num_perm must be a positive multiple of {key}.bands, got {self.num_perm} and {self.bands}"
            )
        if self.shingle < 1:
            raise ConfigError(f"{key}.shingle must be >= 1, got {self.shingle}")
        if self.shingle_unit not in {"char", "word"}:
            raise ConfigError(f"{key}.shingle_unit must be char or word, got {self.shingle_unit!r}")
        if self.min_words < 0 or self.samples < 0:
            raise ConfigError(f"{key}.min_words and {key}.samples must be >= 0")
        if self.ngram < 1:
            raise ConfigError(f"{key}.ngram must be >= 1, got {self.ngram}")
        if not 1 <= self.decontaminate_min_words <= self.ngram:
            raise ConfigError(
                f"{key}.decontaminate_min_words must be between 1 and {key}.ngram, got {self.decontaminate_min_words}"
            )


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
    release: bool = True
    """The corpus is meant for a public release: sources whose redistribution is ``non-commercial`` or
    ``no-redistribution`` are refused before anything is read (unless ``allow_restricted``)."""
    allow_restricted: bool = False
    """Read non-commercial and no-redistribution sources even when ``release`` is true (a private
    build); the dataset card then says which sources restrict it."""
    allow_eval_sources: bool = False
    """Let a source whose catalogue card marks it as an evaluation set (``eval_only``: FLORES-200, NTREX,
    Belebele...) be split into train like any other. Off, such a source must be declared ``split: test`` (or
    ``dev``), so that no model is trained on a benchmark it will be scored on."""
    allow_empty: list[str] = field(default_factory=list)
    """Splits (``train``, ``dev``, ``test``) that may come out of the build empty. Any other split left empty
    (every record dropped or quarantined, no aligned pairs to hold out) fails the build with its counts.
    ``dev_size: 0`` / ``test_size: 0`` ask for an empty dev / test split as well."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Per-language normalization of every record (pivot text by the pivot's rules)."""
    pii: PiiConfig = field(default_factory=PiiConfig)
    """Personal data scrubbing (target and pivot text)."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Quality filters (target text)."""
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    """Language identification (target text)."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Near-duplicate removal and decontamination of the train split against evaluation texts."""
    workers: int = 0
    """Processes for the per-record steps, one source each at a time: 0 = one per core, 1 = in the
    main process. The output is the same whatever the number."""
    only_source: str = ""
    """Write only this source's shard (``langkit corpus build --only-source NAME``: one scheduler job
    per source); a build without it then merges the shards."""
    executor: str = "local"
    """Where the per-source steps run: ``local`` (this process, or a process pool of ``workers``) or
    ``datatrove`` (datatrove's LocalPipelineExecutor, one task per source; needs the optional datatrove
    package). The output is the same either way."""

    def check(self, key: str) -> None:
        if self.workers < 0:
            raise ConfigError(f"{key}.workers must be >= 0 (0: one per core)")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"{key}.executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for i, source in enumerate(self.sources):
            source.check(f"{key}.sources[{i}]")
        if self.dev_size < 0 or self.test_size < 0:
            raise ConfigError(f"{key}.dev_size and {key}.test_size must be >= 0")
        if unknown := [s for s in self.allow_empty if s not in ("train", "dev", "test")]:
            raise ConfigError(f"{key}.allow_empty: unknown split(s) {', '.join(unknown)}; splits are train, dev, test")
        self.normalize.check(f"{key}.normalize")
        self.pii.check(f"{key}.pii")
        self.filters.check(f"{key}.filters")
        self.langid.check(f"{key}.langid")
        self.dedup.check(f"{key}.dedup")


@dataclass
class TokenizerConfig:
    """Stage 2: measure the base tokenizer and extend it with BPE merges learned from the corpus."""

    base: str = "openai/gpt-oss-20b"
    """Local tokenizer/model folder or Hub id. gpt-oss's ids are never downloaded: found in the Hugging Face
    cache, or rebuilt offline (o200k_harmony, id for id) from the quicktok-v1 package; another Hub id is
    downloaded when the Hub answers."""
    budget: int = 256
    """Number of new tokens (merges) to add, shared across the languages."""
    min_frequency: int = 1
    """A pair must occur at least this many times in a language's text to become a new token. The
    budget is what limits a large corpus; on a small one a floor above 1 leaves budget unused."""
    balance: str = "equal"
    """How the budget is shared between languages: ``equal`` shares (the smallest corpus is not
    crowded out by the largest), ``proportional`` to each language's token count, ``relative`` (each
    merge goes to the language whose own token count it cuts by the largest fraction), or ``none``
    (all text pooled: plain continued BPE)."""
    language_budgets: dict[str, int] = field(default_factory=dict)
    """Fixed shares in tokens for some languages (``{bci_Latn: 3000}``); the others split the rest."""
    pivot_guard: bool = True
    """Refuse merges that would change how English or French words tokenize (checked against the
    most frequent words of each pivot, from the wordfreq package)."""
    pivot_guard_words: int = 50_000
    """How many of each pivot language's most frequent words the guard reads from the frequency lists."""
    pivot_guard_tolerance: float = 1e-6
    """Protect a token pair or word of the pivots only when the listed words holding it make up more than
    this share of running text (1e-6: once in a million words). 0 protects every listed word; the rare
    tail of the lists is mostly names and borrowings that the target languages share."""
    whole_words: bool = True
    """Also consider giving a word its own token in one step (a merge of two existing tokens that spell
    it; gpt-oss's BPE looks whole words up before merging), when that saves more tokens than the best
    pair merge: a rare long word then costs one new id instead of a chain of merges."""
    words_only: bool = True
    """Learn merges inside words only, never inside numbers, punctuation or whitespace runs."""
    normalize: bool = True
    """Apply the corpus stage's per-language normalization to the text before learning and measuring."""
    mode: str = "bpe"
    """``bpe``: continued BPE on whole words. ``sentencepiece``: a SentencePiece unigram model per
    language proposes the units (morpheme-like pieces) and BPE merges are learned inside them only."""

    def check(self, key: str) -> None:
        if self.budget < 0:
            raise ConfigError(f"{key}.budget must be >= 0, got {self.budget}")
        if self.pivot_guard_tolerance < 0:
            raise ConfigError(f"{key}.pivot_guard_tolerance must be >= 0, got {self.pivot_guard_tolerance}")
        if self.min_frequency < 1:
            raise ConfigError(f"{key}.min_frequency must be >= 1, got {self.min_frequency}")
        if self.mode not in {"bpe", "sentencepiece"}:
            raise ConfigError(f"{key}.mode must be bpe or sentencepiece, got {self.mode!r}")
        if self.balance not in {"equal", "proportional", "relative", "none"}:
            raise ConfigError(f"{key}.balance must be equal, proportional, relative or none, got {self.balance!r}")
        for code, n in self.language_budgets.items():
            if code not in LANGUAGES or n < 0:
                raise ConfigError(f"{key}.language_budgets.{code}: need a known language and a count >= 0")
        if sum(self.language_budgets.values()) > self.budget:
            raise ConfigError(f"{key}.language_budgets add up to more than {key}.budget ({self.budget})")


EXECUTORS = ("local", "datatrove")
"""Where the corpus stage's per-source phase runs: ``local`` (this process or its process pool) or
``datatrove`` (datatrove's LocalPipelineExecutor; its SlurmPipelineExecutor from Python, see the README)."""

MIX_KINDS = ("monolingual", "translation")
"""The kinds of training example that ``train.mix`` weighs."""


FREE_TRAIN_KEYS = ("resume", "resume_changed", "save_every", "keep_checkpoints", "merged_export",
                   "gradient_checkpointing")
"""Train keys a resumed run (or a release) may change freely: they decide when and where things are written,
or trade memory for compute, never what the steps compute. ``batch_size`` is compared as the global batch
(``batch_size`` x processes), so a run may resume on another number of processes."""

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
    lora_expert_r: int | None = None
    """LoRA rank of each expert's pair on gate_up_proj and down_proj (PEFT ``rank_pattern``); None means
    ``lora_r``. Every expert gets its own pair, so at equal rank the experts hold E times (32 in gpt-oss-20b,
    128 in 120b) the LoRA parameters of the attention projections of a layer; a smaller rank here keeps
    their budget comparable."""
    lora_expert_alpha: float | None = None
    """LoRA alpha of the expert pairs (PEFT ``alpha_pattern``); None means the attention's ratio:
    ``lora_alpha / lora_r x lora_expert_r``, so both updates are scaled alike."""
    train_new_embeddings: bool = True
    """Train the rows of the new tokens in the input embeddings and lm_head."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (linear warm-up, then linear decay to 0)."""
    embedding_learning_rate: float | None = None
    """Peak learning rate of the new tokens' rows in the input embeddings and lm_head (their own AdamW
    parameter group, same schedule); None means ``learning_rate``."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 20
    """Optimizer steps to train for."""
    batch_size: int = 4
    """Examples per optimizer step **per process**; with ``packing``, rows per step per process, each packed
    with whole examples. The global batch of a step is ``batch_size x processes`` (``accelerate launch
    --num_processes N`` or ``torchrun --nproc_per_node N``, times the machines): every process takes its
    slice of the same global step, and the loss is the mean over all its labelled tokens, so 2 processes at
    batch_size 2 train like 1 process at batch_size 4. Change ``batch_size`` with the number of processes to
    keep the global batch (and the meaning of ``learning_rate``) the same."""
    max_length: int = 256
    """Longest example in tokens; longer examples are truncated."""
    monolingual: bool = True
    """Also train on the plain target-language text (next-token loss on every token)."""
    save_every: int = 10
    """Write a checkpoint every this many optimizer steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many of the most recent checkpoints to keep."""
    resume: bool = True
    """Continue from the last checkpoint in the run directory when there is one, if it was trained with the
    same settings (every train key that shapes the result, the languages, the train split and the tokenizer);
    a rerun with other settings is refused, naming the keys. ``false`` starts over (the checkpoints and log
    are removed)."""
    resume_changed: bool = False
    """Resume on purpose even though settings differ from the checkpoint's: the later steps use the new ones,
    and ``metadata.json`` records which keys changed at which step (``settings_changed``)."""
    seed: int = 0
    """Seed of model initialisation (tiny), data order and LoRA initialisation."""
    attention: str = "eager"
    """Attention kernel: ``eager`` (transformers': [batch, heads, L, L] scores, memory grows with L²),
    ``langkit_sink`` (exact sink-aware blockwise attention, memory linear in L; ``langkit/attention.py``;
    CPU and GPU) or ``flex`` (torch's fused FlexAttention with the sinks applied exactly through its
    log-sum-exp, memory linear in L; ``langkit/flex.py``; trains on a CUDA GPU only)."""
    chunked_loss: bool = False
    """Compute the loss ``loss_chunk_size`` labelled tokens at a time instead of materialising the logits of
    the whole batch ([tokens, 201,088] floats); same loss and gradients (``langkit/loss.py``)."""
    loss_chunk_size: int = 1024
    """Tokens per chunk of the chunked loss: peak memory about 3 x chunk x vocabulary x 4 bytes."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass instead of keeping its activations: about a third
    more compute, activation memory of one layer instead of all (gpt-oss-20b at 16k tokens needs it)."""
    packing: bool = False
    """Pack whole examples into ``batch_size`` rows of up to ``max_length`` tokens (first fit, in data
    order), with position ids restarting per example and attention kept within each example (masks in
    ``langkit/attention.py``; works with both attention kernels). Padding efficiency is logged."""
    mix: dict[str, float] = field(default_factory=dict)
    """Proportions of the two kinds of example in the stream, e.g. ``{monolingual: 0.3, translation: 0.7}``
    (normalised to sum 1): ``monolingual`` is continued pre-training on plain text (loss on every token,
    needs ``monolingual: true``), ``translation`` the harmony-format pairs (loss on the final answer only).
    Each kind is shuffled on its own and the next example comes from the kind furthest behind its share,
    so every prefix of the stream follows the weights to within one example. Empty: both kinds in one
    shuffle, in the proportions the corpus gives."""
    merged_export: bool = False
    """Also write ``train/merged/``, the base with the adapter merged in (``merge_and_unload``) plus the
    tokenizer, ready for serving with vLLM, which does not serve LoRA on gpt-oss experts. It is a full
    model: as large as the base in ``dtype`` (about 42 GB for gpt-oss-20b in bfloat16)."""

    def check(self, key: str) -> None:
        if self.attention not in {"eager", "langkit_sink", "flex"}:
            raise ConfigError(f"{key}.attention must be eager, langkit_sink or flex, got {self.attention!r}")
        if self.loss_chunk_size <= 0:
            raise ConfigError(f"{key}.loss_chunk_size must be > 0, got {self.loss_chunk_size}")
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
        if self.embedding_learning_rate is not None and self.embedding_learning_rate <= 0:
            raise ConfigError(f"{key}.embedding_learning_rate must be > 0 (or null), got {self.embedding_learning_rate}")
        if self.lora_expert_r is not None and self.lora_expert_r <= 0:
            raise ConfigError(f"{key}.lora_expert_r must be > 0 (or null), got {self.lora_expert_r}")
        if self.lora_expert_alpha is not None and self.lora_expert_alpha <= 0:
            raise ConfigError(f"{key}.lora_expert_alpha must be > 0 (or null), got {self.lora_expert_alpha}")
        if (self.lora_expert_r is not None or self.lora_expert_alpha is not None) and not self.lora_experts:
            raise ConfigError(f"{key}.lora_expert_r/lora_expert_alpha need {key}.lora_experts: true")
        for kind, weight in self.mix.items():
            if kind not in MIX_KINDS:
                raise ConfigError(f"{key}.mix.{kind}: unknown kind; kinds are monolingual and translation")
            if weight < 0:
                raise ConfigError(f"{key}.mix.{kind} must be >= 0, got {weight}")
        if self.mix and sum(self.mix.values()) <= 0:
            raise ConfigError(f"{key}.mix: at least one weight must be > 0")
        if self.mix.get("monolingual", 0) > 0 and not self.monolingual:
            raise ConfigError(f"{key}.mix.monolingual > 0 needs {key}.monolingual: true")


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
    sign_key: str = ""
    """Private key (PEM, EC P-256/384/521; make one with ``langkit publish keygen``) that signs the release
    into ``model.sig``; relative paths resolve against the config file's folder; an encrypted key reads its
    passphrase from ``$LANGKIT_SIGN_PASSPHRASE``. ``throwaway``: a key pair made in ``RUN/signing/`` for this
    run only (demos, tests; the card says so). Empty: the release is not signed."""
    eval_results: str = ""
    """A ``langkit eval suite`` results.json (format ``langkit-eval-suite/1``) whose table of tasks, systems and
    scores the model card shows, and the release carries as ``eval_suite_results.json``; relative paths resolve
    against the config file's folder. Empty: the card shows the eval stage's report only."""

    def check(self, key: str) -> None:
        if self.repo_id and self.repo_id.count("/") != 1:
            raise ConfigError(f"{key}.repo_id must look like 'org/name', got {self.repo_id!r}")
        # The Hub reads the card's licence as one of its lower-case ids and refuses others.
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.license):
            raise ConfigError(f"{key}.license must be a Hub licence id in lower case (apache-2.0, mit, cc-by-4.0, "
                              f"cc-by-sa-4.0, other...), got {self.license!r}")


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
    if origin is dict:
        key_type, value_type = typing.get_args(cls)
        if not isinstance(data, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(data).__name__}")
        return {_build(key_type, k, f"{key}.{k}"): _build(value_type, v, f"{key}.{k}") for k, v in data.items()}
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
        if source.pivot_path and not Path(source.pivot_path).is_absolute():
            source.pivot_path = str((path.parent / source.pivot_path).resolve())
    if cfg.publish.sign_key and cfg.publish.sign_key != "throwaway" and not Path(cfg.publish.sign_key).is_absolute():
        cfg.publish.sign_key = str((path.parent / cfg.publish.sign_key).resolve())
    if cfg.publish.eval_results and not Path(cfg.publish.eval_results).is_absolute():
        cfg.publish.eval_results = str((path.parent / cfg.publish.eval_results).resolve())
    cfg.corpus.dedup.decontaminate_against = [
        p if Path(p).is_absolute() else str((path.parent / p).resolve())
        for p in cfg.corpus.dedup.decontaminate_against
    ]
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run really used, overrides included)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
