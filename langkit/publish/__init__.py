"""Stage 5, publish: a self-checking release folder, and a way to push it to the Hub and get it back.

The release is built from what the earlier stages left in the run directory::

    release/
      adapter_model.safetensors, adapter_config.json, ...   the PEFT adapter (train/adapter/)
      tokenizer/                                           the extended tokenizer (tokenizer/tokenizer/)
      new_tokens.json                                      the added tokens, with their ids
      eval_report.json                                     scores with their signatures (when evaluated)
      langkit_config.yaml                                  the resolved config of the run
      README.md                                            the model card (Hub metadata + text)
      manifest.json                                        SHA-256 and size of every file above

``manifest.json`` is what makes a release checkable anywhere: :func:`verify_release` recomputes every
checksum, and both :func:`push_release` (before uploading) and :func:`download_release` (after
downloading) refuse a folder that does not match its manifest. Pushing goes through the real
``huggingface_hub`` client, so ``HF_ENDPOINT`` and ``HF_TOKEN`` apply as usual.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from langkit.config import RunConfig, save_config
from langkit.languages import LANGUAGES, get_language
from langkit.rundir import RunDir
from langkit.utils import (
    atomic_write_text,
    get_logger,
    read_json,
    replace_dir,
    sha256_file,
    temp_dir,
    write_json,
)

log = get_logger("publish")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "langkit-manifest/1"
CARD_NAME = "README.md"
CONFIG_NAME = "langkit_config.yaml"
EVAL_REPORT_NAME = "eval_report.json"
NEW_TOKENS_NAME = "new_tokens.json"
TOKENIZER_DIR = "tokenizer"

TINY_MODEL = "tiny"
GPT_OSS_VOCAB_SIZE = 201_088  # rows of gpt-oss's embeddings; new tokens take ids from here on
DEFAULT_COMMIT_MESSAGE = "Upload langkit release"

# Files a release may hold that its manifest does not list: the Hub's own .gitattributes (every Hub
# repository has one) and the .cache/ folder snapshot_download(local_dir=...) keeps its metadata in.
_UNLISTED_FILES = (".gitattributes",)
_UNLISTED_DIRS = (".cache",)
_DOWNLOAD_NAME = "download"  # temp_dir's folder for it (.tmp-download) lies inside an existing empty out_dir
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RESTRICTED_TERMS = ("non-commercial", "no-redistribution")  # corpus sources' redistribution terms
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class PublishError(RuntimeError):
    """A release cannot be built, pushed or downloaded as asked."""


class ManifestError(PublishError):
    """A folder has no readable langkit manifest."""


class VerificationError(PublishError):
    """A release does not match its manifest; ``report`` says how."""

    def __init__(self, message: str, report: VerifyReport):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------
# Manifest and verification
# --------------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """The outcome of checking a release folder against its ``manifest.json``."""

    ok: bool
    missing: list[str] = field(default_factory=list)
    """Listed in the manifest, absent from the folder."""
    mismatched: list[str] = field(default_factory=list)
    """Present, but with another size or SHA-256 than the manifest says."""
    unexpected: list[str] = field(default_factory=list)
    """In the folder, not in the manifest (``.gitattributes`` and ``.cache/`` excepted)."""
    path: Path = Path(".")
    checked: int = 0
    """Number of files the manifest lists."""

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.checked} files match the manifest of {self.path}"
        problems = []
        for name, paths in (("missing", self.missing), ("mismatched", self.mismatched),
                            ("unexpected", self.unexpected)):
            if paths:
                shown = ", ".join(paths[:10]) + (f", ... ({len(paths) - 10} more)" if len(paths) > 10 else "")
                problems.append(f"{len(paths)} {name} ({shown})")
        return f"FAILED: {self.path} does not match its manifest: {'; '.join(problems)}"


def _is_unlisted(rel: PurePosixPath) -> bool:
    return rel.as_posix() in _UNLISTED_FILES or rel.parts[0] in _UNLISTED_DIRS


def _release_files(root: Path) -> list[str]:
    """Every file under ``root`` as a relative POSIX path, except the manifest and the Hub's extras."""
    files = []
    for path in root.rglob("*"):
        if path.is_file():
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if rel.as_posix() != MANIFEST_NAME and not _is_unlisted(rel):
                files.append(rel.as_posix())
    return sorted(files)


def write_manifest(release_dir: Path) -> dict[str, Any]:
    """Write ``manifest.json``: SHA-256 and size of every other file of the release, sorted by path."""
    release_dir = Path(release_dir)
    files = {}
    for rel in _release_files(release_dir):
        path = release_dir / rel
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    write_json(release_dir / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(release_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``files`` table of a release's manifest, checked; :class:`ManifestError` if absent or malformed."""
    path = Path(release_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} not found: {release_dir} is not a langkit release "
                            "(build one with `langkit publish build`)")
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None

    def bad(why: str) -> ManifestError:
        return ManifestError(f"{path} is malformed: {why}")

    if not isinstance(manifest, dict):
        raise bad("expected a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if manifest.get("algorithm") != "sha256":
        raise bad(f"algorithm is {manifest.get('algorithm')!r}, expected 'sha256'")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("'files' must map relative paths to {sha256, size}")
    for rel, entry in files.items():
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or rel == MANIFEST_NAME:
            raise bad(f"file path {rel!r} must be relative, inside the release, and not the manifest")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256.fullmatch(entry["sha256"])
                or not isinstance(entry.get("size"), int) or isinstance(entry["size"], bool) or entry["size"] < 0):
            raise bad(f"entry of {rel!r} must be {{'sha256': 64 lowercase hex digits, 'size': bytes >= 0}}")
    return files


def verify_release(path: Path) -> VerifyReport:
    """Recompute every checksum of a release folder and compare with its manifest.

    Raises :class:`ManifestError` when there is no readable manifest; otherwise returns a report
    (``report.ok`` is False when any file is missing, altered, or not listed).
    """
    root = Path(path)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder")
    listed = read_manifest(root)
    report = VerifyReport(ok=False, path=root, checked=len(listed))
    for rel in sorted(listed):
        file = root / rel
        if not file.is_file():
            report.missing.append(rel)
        elif file.stat().st_size != listed[rel]["size"] or sha256_file(file) != listed[rel]["sha256"]:
            report.mismatched.append(rel)
    report.unexpected = [rel for rel in _release_files(root) if rel not in listed]
    report.ok = not (report.missing or report.mismatched or report.unexpected)
    log.debug(report.summary())
    return report


# --------------------------------------------------------------------------------------------------
# Reading the earlier stages' outputs
# --------------------------------------------------------------------------------------------------


def _optional_json(path: Path, made_by: str) -> Any:
    if not path.is_file():
        log.warning("%s not found (written by the %s stage): the model card will say less", path, made_by)
        return None
    try:
        return read_json(path)
    except ValueError as err:
        raise PublishError(f"{path} is not valid JSON ({err}); rerun the {made_by} stage") from None


@dataclass
class _RunFacts:
    """What the model card says, gathered once from the run directory."""

    report: dict[str, Any] | None
    train_meta: dict[str, Any]
    sources: list[dict[str, Any]]
    new_token_ids: list[int]
    n_new_tokens: int | None


def _new_token_ids(data: Any) -> tuple[list[int], int | None]:
    """Ids (and count) of the added tokens, from ``new_tokens.json`` (a list, or {"tokens": [...]})."""
    items: Any = data.get("tokens", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = list(items.values())
    if not isinstance(items, list):
        return [], None
    ids = [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), int)]
    return ids, len(items)


def _gather(run_dir: RunDir) -> _RunFacts:
    report = _optional_json(run_dir.report, "eval")
    train_meta = _optional_json(run_dir.train / "metadata.json", "train") or {}
    stats = _optional_json(run_dir.corpus / "stats.json", "corpus") or {}
    new_tokens = _optional_json(run_dir.new_tokens, "tokenizer")
    for path, data in ((run_dir.report, report), (run_dir.train / "metadata.json", train_meta),
                       (run_dir.corpus / "stats.json", stats)):
        if data is not None and not isinstance(data, dict):
            raise PublishError(f"{path} should hold a JSON object, found {type(data).__name__}")
    ids, count = _new_token_ids(new_tokens)
    sources = [s for s in stats.get("sources", []) if isinstance(s, dict) and s.get("name")]
    return _RunFacts(report=report, train_meta=train_meta, sources=sources, new_token_ids=ids, n_new_tokens=count)


def _results(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (report or {}).get("results", []) if isinstance(r, dict)]


def _metric(result: dict[str, Any], *names: str) -> dict[str, Any] | None:
    metrics = result.get("metrics") or {}
    for name in names:
        if isinstance(metrics.get(name), dict) and metrics[name].get("score") is not None:
            return metrics[name]
    return None


def _chrf(result: dict[str, Any]) -> dict[str, Any] | None:
    return _metric(result, "chrf++", "chrF++", "chrfpp")


def _bleu(result: dict[str, Any]) -> dict[str, Any] | None:
    return _metric(result, "bleu", "BLEU")


def release_languages(cfg: RunConfig, facts: _RunFacts | None = None) -> list[str]:
    """FLORES codes the release covers: the run's target languages, then the pivots it was trained or
    evaluated with (the targets' usual pivots when the run directory does not say)."""
    codes = list(cfg.languages)
    pivots: list[str] = []
    seen_in_run = [s.get("pivot_language", "") for s in (facts.sources if facts else [])]
    seen_in_run += [src.pivot_language for src in cfg.corpus.sources if src.pivot_field or src.pivot_path]
    for result in _results(facts.report if facts else None):
        seen_in_run += [result.get("source_language", ""), result.get("target_language", "")]
    candidates = [c for c in seen_in_run if c in LANGUAGES and LANGUAGES[c].is_pivot]
    if not candidates:
        candidates = [p for c in codes if (p := get_language(c).default_pivot)]
    for code in candidates:
        if code not in pivots:
            pivots.append(code)
    return codes + pivots


def _base_model(cfg: RunConfig, facts: _RunFacts) -> str:
    return str(facts.train_meta.get("base_model") or cfg.train.model)


def _is_tiny(cfg: RunConfig, base: str) -> bool:
    return cfg.train.model == TINY_MODEL or base == TINY_MODEL


def _public_base_model(base: str) -> str:
    """A Hub id as is; a local folder by its name only (its full path says nothing to others)."""
    if _HUB_ID.fullmatch(base) and not Path(base).exists():
        return base
    return Path(base).name or base


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------


def _lang_name(code: str) -> str:
    lang = LANGUAGES.get(code)
    return lang.english_name if lang else code


def _join(words: list[str]) -> str:
    return " and ".join(words) if len(words) <= 2 else ", ".join(words[:-1]) + " and " + words[-1]


def _direction_label(result: dict[str, Any]) -> str:
    src, tgt = result.get("source_language", ""), result.get("target_language", "")
    if src and tgt:
        return f"{_lang_name(src)} → {_lang_name(tgt)}"
    return str(result.get("direction", "?"))


def _split(report: dict[str, Any] | None) -> str:
    """The corpus split the eval stage translated (its task may say ``dev``), ``test`` by default."""
    task = (report or {}).get("task")
    split = task.get("split") if isinstance(task, dict) else None
    return str(split) if split else "test"


def _eval_results(cfg: RunConfig, report: dict[str, Any] | None) -> list[EvalResult]:
    """One model-index entry per direction (the ``langkit`` system only), chrF++ first, then BLEU."""
    split = _split(report)
    test_set = str((report or {}).get("test_set", f"{split} split"))
    out = []
    for result in _results(report):
        if result.get("system", "langkit") != "langkit":
            continue
        direction = str(result.get("direction", ""))
        shared: dict[str, Any] = {
            "task_type": "translation",
            "task_name": f"Translation {_direction_label(result)}",
            "dataset_type": "langkit-test-split",
            "dataset_name": f"{cfg.name} {split} split ({test_set})",
            "dataset_config": direction,  # one entry per direction: the Hub groups results by dataset config
            "dataset_split": split,
        }
        for metric, metric_type, metric_name in ((_chrf(result), "chrf", "chrF++"), (_bleu(result), "bleu", "BLEU")):
            if metric is not None:
                out.append(EvalResult(**shared, metric_type=metric_type, metric_name=metric_name,
                                      metric_value=metric["score"],
                                      metric_args={"signature": metric["signature"]} if metric.get("signature") else None))
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _energy_line(energy: Any) -> str:
    """The training energy, saying whether it was measured (NVML, RAPL) or estimated (train/metadata.json)."""
    if not isinstance(energy, dict) or energy.get("kwh") is None:
        return "- Training energy: not recorded"
    method = str(energy.get("method", ""))
    how = {"measured-nvml": "measured with the GPUs' NVML energy counters",
           "measured-rapl": "measured with the CPUs' RAPL energy counters"}.get(method)
    if how is None:
        how = f"estimated, not measured: {energy.get('note') or method}"
    return f"- Training energy: {float(energy['kwh']):.6g} kWh ({how})"


def _card_body(cfg: RunConfig, facts: _RunFacts, base: str, languages: list[str], repo_id: str) -> str:
    tiny = _is_tiny(cfg, base)
    meta = facts.train_meta
    targets = [c for c in languages if not LANGUAGES[c].is_pivot]
    pivots = [c for c in languages if LANGUAGES[c].is_pivot]
    title = repo_id.split("/")[-1] if repo_id else cfg.name
    target_names = _join([_lang_name(c) for c in targets])
    lines: list[str] = [f"# {title}", ""]

    pivot_text = (f", with {_join([_lang_name(c) for c in pivots])} as pivot "
                  f"language{'s' if len(pivots) > 1 else ''}" if pivots else "")
    model_text = "a tiny random gpt-oss test model" if tiny else f"OpenAI's gpt-oss (`{_public_base_model(base)}`)"
    lines += [
        f"A LoRA adapter that teaches {model_text} to read, write and translate {target_names}{pivot_text}. "
        "It ships with an extended tokenizer: new vocabulary entries learned from the training text, so that "
        "these languages cost fewer tokens per word. It was made with langkit, which builds the corpus, "
        "extends the tokenizer, fine-tunes, evaluates and writes this release in one pipeline.",
        "",
    ]
    if tiny:
        lines += [
            "> **Test model.** This release was trained on langkit's `tiny` preset: a randomly initialised "
            "two-layer gpt-oss built in code to exercise the pipeline. Its outputs are meaningless, its scores "
            "say nothing about any language, and it must not be used for anything but testing langkit.",
            "",
        ]

    lines += ["## Languages", "", "| Language | Native name | FLORES-200 | Hub code | Role |", "|---|---|---|---|---|"]
    for code in languages:
        lang = get_language(code)
        role = "pivot" if lang.is_pivot else "target"
        lines.append(f"| {lang.english_name} | {lang.native_name} | `{code}` | `{lang.hub_code}` | {role} |")
    lines.append("")

    lines += ["## Training", ""]
    # what train/metadata.json recorded wins over the config (it is what really ran)
    r, alpha = meta.get("lora_r", cfg.train.lora_r), meta.get("lora_alpha", cfg.train.lora_alpha)
    experts = meta.get("lora_experts", cfg.train.lora_experts)
    new_rows = meta.get("train_new_embeddings", cfg.train.train_new_embeddings)
    n_new = facts.n_new_tokens if facts.n_new_tokens is not None else meta.get("new_tokens")
    where = "attention projections and mixture-of-experts weights" if experts else "attention projections"
    lines += [
        f"- Base model: `{_public_base_model(base)}`" + (" (random test model)" if tiny else ""),
        f"- Method: LoRA on the {where}, rank r = {r}, alpha = {alpha} (updates scaled by alpha / r = "
        f"{float(alpha) / float(r):g})" if r else f"- Method: LoRA, alpha = {alpha}",
        "- New tokens: " + (f"{_fmt(n_new)} added to the vocabulary" if n_new is not None else "see `new_tokens.json`")
        + ("; their embedding and output rows were trained" if new_rows else ""),
        f"- Optimizer steps: {_fmt(meta.get('steps'))}; tokens seen: {_fmt(meta.get('tokens_seen'))}; "
        f"wall time: {_fmt(meta.get('wall_time_s'), ' s')}",
        f"- Learning rate {meta.get('learning_rate', cfg.train.learning_rate):g}, "
        f"batch size {meta.get('batch_size', cfg.train.batch_size)}, "
        f"examples up to {meta.get('max_length', cfg.train.max_length)} tokens, "
        f"dtype {meta.get('dtype', cfg.train.dtype)}",
        _energy_line(meta.get("energy")),
        f"- The full configuration is in `{CONFIG_NAME}`.",
        "",
    ]

    lines += ["## Evaluation", ""]
    results = _results(facts.report)
    if not results:
        lines += ["No evaluation report was found in the run directory (run `langkit eval` before publishing).", ""]
    else:
        split = _split(facts.report)
        test_set = (facts.report or {}).get("test_set", "file not recorded")
        lines += [
            f"Translations of the held-out {split} split (`{test_set}`), greedy decoding, scored with sacrebleu. "
            "`langkit` is this adapter; `base`, when present, is the base model with its original tokenizer.",
            "",
            "| Direction | System | Segments | chrF++ | BLEU |",
            "|---|---|---|---|---|",
        ]
        signatures: dict[str, list[str]] = {}

        def note(name: str, signature: Any) -> None:
            if signature and signature not in signatures.setdefault(name, []):
                signatures[name].append(str(signature))

        def cell(metric: dict[str, Any] | None, name: str) -> str:
            if metric is None:
                return "–"
            note(name, metric.get("signature"))
            ci = metric.get("ci95")
            if isinstance(ci, dict) and isinstance(ci.get("half_width"), (int, float)):
                note(f"{name} 95% bootstrap interval (±)", ci.get("signature"))
                return f"{_fmt(float(metric['score']))} ± {_fmt(float(ci['half_width']))}"
            return _fmt(metric["score"])

        # grouped by direction, this adapter's row first
        for result in sorted(results, key=lambda r: (str(r.get("direction", "")), r.get("system", "langkit") != "langkit")):
            lines.append(
                f"| {_direction_label(result)} (`{result.get('direction', '')}`) | {result.get('system', 'langkit')} "
                f"| {_fmt(result.get('n'))} | {cell(_chrf(result), 'chrF++')} | {cell(_bleu(result), 'BLEU')} |"
            )
        lines += ["", "sacrebleu signatures (they say exactly how each number was computed):", ""]
        for name, sigs in signatures.items():
            lines += [f"- {name}: `{sig}`" for sig in sigs]
        lines += ["", f"The per-direction details are in `{EVAL_REPORT_NAME}`.", ""]

    repo = repo_id or "<org>/<name>"
    vocab = max([GPT_OSS_VOCAB_SIZE] + [i + 1 for i in facts.new_token_ids])
    resize = f"{vocab}" if facts.new_token_ids else "len(tokenizer)"
    lines += [
        "## How to use",
        "",
        "Load the base model, make room for the new tokens, then put the adapter on it:",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, Mxfp4Config",
        "",
        f'local = snapshot_download("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained(f"{{local}}/{TOKENIZER_DIR}")',
        "base = AutoModelForCausalLM.from_pretrained(",
        f'    "{_public_base_model(base)}", dtype="auto",',
        "    quantization_config=Mxfp4Config(dequantize=True),  # the adapter acts on bf16 experts",
        ")",
        f"base.resize_token_embeddings({resize})  # rows for the new token ids",
        "model = PeftModel.from_pretrained(base, local)",
        "```",
        "",
        "For serving, merge the adapter into the weights (`model.merge_and_unload()`) and serve the merged "
        "model: LoRA on gpt-oss's expert weights is not supported by every inference server.",
        "",
    ]
    if tiny:
        lines += ["(The `tiny` base model is built by langkit in code and is not on the Hub.)", ""]

    lines += [
        "## Checking the files",
        "",
        f"`{MANIFEST_NAME}` lists the SHA-256 and size of every file of this release. After downloading, check "
        "that nothing was altered or lost on the way:",
        "",
        "```bash",
        f"hf download {repo} --local-dir {title}",
        f"langkit publish verify {title}",
        "```",
        "",
        "or in Python, `langkit.publish.download_release(repo_id, folder)`, which downloads and verifies.",
        "",
        "## Limitations",
        "",
        f"- The scores come from a small {_split(facts.report)} split held out from the same sources as the "
        "training data, "
        "not from a public benchmark such as FLORES-200: they compare systems within this run and are not "
        "comparable with published numbers.",
        "- The training corpus is small; expect mistakes in grammar, vocabulary and meaning, especially on "
        "topics the sources do not cover. Have a fluent speaker check any output before it is relied on.",
        "- Spelling varies in practice (Baoulé's French-style spellings, Lingala's optional tone marks); the "
        "model follows whatever its sources used.",
        "- It is not meant for medical, legal or other high-stakes translation.",
        "",
        "## Licence",
        "",
        f"The adapter and tokenizer files are released under `{cfg.publish.license}`. The gpt-oss base models are "
        "Apache-2.0. The training data keeps its own licences, listed below; check them before reusing the data.",
        "",
        "## Training data",
        "",
    ]
    if facts.sources:
        lines += ["| Source | Language | Licence | Terms | Segments kept |", "|---|---|---|---|---|"]
        for s in facts.sources:
            language = str(s.get("language", ""))
            pivot = s.get("pivot_language")
            lang_cell = _lang_name(language) + (f" (aligned with {_lang_name(pivot)})" if pivot else "")
            lines.append(f"| {s['name']} | {lang_cell} | {s.get('license', 'unknown')} "
                         f"| {s.get('redistribution') or 'unknown'} | {_fmt(s.get('kept'))} |")
        # the adapter's own licence does not lift the data's terms: say so where it matters
        restricted = [str(s["name"]) for s in facts.sources if s.get("redistribution") in _RESTRICTED_TERMS]
        if restricted:
            lines += ["", f"**Restricted data.** {_join(restricted)} may not be used commercially or redistributed "
                      "(see Terms above). This adapter learned from them: check their terms before any use "
                      f"beyond research, whatever the `{cfg.publish.license}` licence of these files says."]
    else:
        lines.append("The corpus statistics were not found in the run directory.")
    lines.append("")
    return "\n".join(lines)


def build_model_card(run_dir: RunDir, cfg: RunConfig) -> ModelCard:
    """The model card of a run: Hub metadata (languages, licence, base model, datasets, model-index)
    and a readable description, from the files the earlier stages wrote."""
    facts = _gather(run_dir)
    return _model_card(cfg, facts)


def _model_card(cfg: RunConfig, facts: _RunFacts) -> ModelCard:
    base = _base_model(cfg, facts)
    languages = release_languages(cfg, facts)
    repo_id = cfg.publish.repo_id
    # Hub metadata links datasets by Hub id: only `hf` sources have one (local files are named in the text)
    datasets = list(dict.fromkeys(str(s["path"]) for s in facts.sources if s.get("format") == "hf"
                                  and _HUB_ID.fullmatch(str(s.get("path", "")))))
    eval_results = _eval_results(cfg, facts.report)
    tags = ["lora", "peft", "gpt-oss", "translation", "langkit", "african-languages"]
    if _is_tiny(cfg, base):
        tags.append("test-model")
    data = ModelCardData(
        language=[get_language(c).hub_code for c in languages],
        license=cfg.publish.license,
        base_model=_public_base_model(base),
        library_name="peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=datasets or None,
        model_name=(repo_id.split("/")[-1] if repo_id else cfg.name) if eval_results else None,
        eval_results=eval_results or None,
    )
    body = _card_body(cfg, facts, base, languages, repo_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# --------------------------------------------------------------------------------------------------
# Building the release folder
# --------------------------------------------------------------------------------------------------


def _shareable_config(cfg: RunConfig) -> RunConfig:
    """The resolved config with local source files named by file name only: their absolute paths
    (home folders, user names) mean nothing to others and are not for publishing."""
    shared = copy.deepcopy(cfg)
    for source in shared.corpus.sources:
        if source.format != "hf":
            source.path = Path(source.path).name
            if source.pivot_path:
                source.pivot_path = Path(source.pivot_path).name
    return shared


def _check_report_is_current(run_dir: RunDir, report: dict[str, Any] | None) -> None:
    """Refuse to publish scores that another adapter or tokenizer earned (train or tokenizer rerun after
    eval): the card would show them as this adapter's. The report records what it scored by SHA-256."""
    if report is None:
        return
    for key, path, stage in (("adapter_sha256", run_dir.adapter_weights, "train"),
                             ("tokenizer_sha256", run_dir.tokenizer_file, "tokenizer")):
        scored = report.get(key)
        if scored is None:
            log.warning("%s does not record %s (made by an older langkit): cannot check that it scored %s",
                        run_dir.report, key, path)
        elif scored != sha256_file(path):
            raise PublishError(f"{run_dir.report} scored another {path.name} than {path} holds now (the {stage} "
                               "stage ran again after eval): rerun the eval stage before publishing")


def build_release(run_dir: RunDir, cfg: RunConfig) -> Path:
    """Assemble ``run_dir.release`` (adapter, tokenizer, new tokens, eval report, config, model card,
    manifest). It is built beside the old one and swapped in, so a rebuild replaces it cleanly."""
    adapter = run_dir.require(run_dir.adapter, "train")
    tokenizer = run_dir.require(run_dir.tokenizer, "tokenizer")
    new_tokens = run_dir.require(run_dir.new_tokens, "tokenizer")
    if not (adapter / "adapter_config.json").is_file():
        raise PublishError(f"{adapter} has no adapter_config.json: it is not a PEFT adapter folder "
                           "(rerun the train stage)")
    # without its weights the release would build and verify, and be useless: refuse it here
    if not run_dir.adapter_weights.is_file():
        raise PublishError(f"{adapter} has no {run_dir.adapter_weights.name}: the adapter's weights are missing "
                           "(rerun the train stage)")
    if not run_dir.tokenizer_file.is_file():
        raise PublishError(f"{tokenizer} has no {run_dir.tokenizer_file.name}: the extended tokenizer is missing "
                           "(rerun the tokenizer stage)")
    facts = _gather(run_dir)
    _check_report_is_current(run_dir, facts.report)

    run_dir.root.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(run_dir.release)
    try:
        for item in sorted(adapter.iterdir()):
            if item.name == CARD_NAME:
                continue  # PEFT writes a placeholder card there; ours replaces it
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copyfile(item, tmp / item.name)
        shutil.copytree(tokenizer, tmp / TOKENIZER_DIR)
        shutil.copyfile(new_tokens, tmp / NEW_TOKENS_NAME)
        if facts.report is not None:
            shutil.copyfile(run_dir.report, tmp / EVAL_REPORT_NAME)
        save_config(_shareable_config(cfg), tmp / CONFIG_NAME)
        atomic_write_text(tmp / CARD_NAME, str(_model_card(cfg, facts)))
        manifest = write_manifest(tmp)
        replace_dir(tmp, run_dir.release)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(entry["size"] for entry in manifest["files"].values())
    log.info("release: %d files, %.1f MB in %s", len(manifest["files"]), size / 1e6, run_dir.release)
    return run_dir.release


# --------------------------------------------------------------------------------------------------
# Hub: push and download
# --------------------------------------------------------------------------------------------------


def _refuse_offline(action: str) -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PublishError(f"cannot {action}: HF_HUB_OFFLINE is set, so huggingface_hub makes no requests. "
                           "Unset it (HF_HUB_OFFLINE=0) to talk to the Hub or to the server HF_ENDPOINT names.")


def _git_blob_id(path: Path) -> str:
    """The id git (and the Hub's tree listing) gives a regular file's content."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_tag(api: Any, repo_id: str, tag: str, manifest: Path) -> str | None:
    """The commit ``tag`` names on ``repo_id`` (None if there is no such tag); :class:`PublishError` if that
    commit holds another release than ``manifest`` describes (the manifest lists every file, so an
    identical manifest means identical files)."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        tagged = api.model_info(repo_id, revision=tag).sha
        remote = [f for f in api.list_repo_tree(repo_id, revision=tag, repo_type="model")
                  if f.path == MANIFEST_NAME]
    except RevisionNotFoundError:
        return None
    lfs = getattr(remote[0], "lfs", None) if remote else None
    same = bool(remote) and (lfs.sha256 == sha256_file(manifest) if lfs else remote[0].blob_id == _git_blob_id(manifest))
    if not same:
        raise PublishError(f"tag {tag!r} already exists on {repo_id} at commit {tagged}, which holds another "
                           "release; a published tag should never move: choose a new tag")
    return str(tagged)


def push_release(
    release_dir: Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    tag: str = "",
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Verify a release, then make the Hub repository ``repo_id`` hold exactly its files, in one commit on
    top of the branch as it was when the push began (a push made meanwhile by someone else is not overwritten).

    Creates the repository if needed (``private`` applies only then; a private push into an existing
    public repository is refused), uploads the folder, deletes remote files the release no longer has
    (except ``.gitattributes``), and tags the commit when ``tag`` is given. A tag that already names
    other files is refused before anything is uploaded; one that names these same files is left as it
    is, so pushing a release again is harmless. ``endpoint`` and ``token`` default to huggingface_hub's
    own (``HF_ENDPOINT``, ``HF_TOKEN`` or the saved login). Returns the commit id.
    """
    from huggingface_hub import CommitInfo, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    release_dir = Path(release_dir)
    report = verify_release(release_dir)
    if not report.ok:
        raise VerificationError(f"refusing to push {release_dir}: {report.summary()}", report)
    _refuse_offline(f"push {release_dir} to {repo_id}")

    api = HfApi(endpoint=endpoint, token=token)
    url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
    # The branch as it is now: the commit must land on it, so that if someone else pushes meanwhile the Hub
    # refuses it (412) instead of this push deleting their files from a stale listing.
    repo = api.model_info(repo_id)
    # create_repo(exist_ok=True) leaves an existing repository as it is: never upload a release meant to
    # stay private into a public one
    if private and repo.private is not True:
        raise PublishError(f"{repo_id} already exists and is public, but a private push was asked for: nothing "
                           "was uploaded (make the repository private on the Hub, or push without private)")
    # check the tag before uploading, so that a refused tag leaves the branch as it was
    if tag:
        _check_tag(api, repo_id, tag, release_dir / MANIFEST_NAME)
    head = repo.sha
    try:
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=release_dir,
            commit_message=commit_message,
            delete_patterns="*",  # the repository mirrors the release: stale files would fail verification
            ignore_patterns=[".cache", ".cache/*"],
            parent_commit=head,
        )
    except HfHubHTTPError as err:
        if err.response is None or err.response.status_code != 412:
            raise
        raise PublishError(f"{repo_id} changed while this release was being pushed (another push since commit "
                           f"{head}): nothing was committed; check what is there, then push again") from None
    if not isinstance(info, CommitInfo):  # pragma: no cover - only with run_as_future=True
        raise PublishError(f"unexpected answer from upload_folder: {info!r}")
    commit = str(info.oid)
    log.info("pushed %s to %s (commit %s)", release_dir, url, commit)

    if tag:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit, repo_type="model",
                           tag_message=f"langkit release {tag}")
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 409:
                raise
            # the tag was there already (checked above: with these very files), or came since (checked again)
            tagged = _check_tag(api, repo_id, tag, release_dir / MANIFEST_NAME)
            if tagged != commit:
                log.info("tag %r of %s already names commit %s, which holds this same release", tag, repo_id, tagged)
                return commit
        log.info("tagged %s of %s as %r", commit, repo_id, tag)
    return commit


def download_release(
    repo_id: str,
    out_dir: Path,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> VerifyReport:
    """Download a release (a branch, tag or commit of ``repo_id``) into a new or empty ``out_dir`` and
    verify it against its manifest; :class:`VerificationError` if it does not match.

    The files land in a hidden folder and are moved into ``out_dir`` only once verified: a download that
    fails, does not verify or is interrupted (an error, Ctrl-C) keeps nothing, so it can simply be run
    again. (A killed process leaves the hidden folder, ``.tmp-NAME`` beside a new ``out_dir`` or
    ``.tmp-download`` inside an existing empty one; the next download there clears it.)"""
    from huggingface_hub import snapshot_download

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != f".tmp-{_DOWNLOAD_NAME}" for p in out_dir.iterdir())):
        raise PublishError(f"{out_dir} exists and is not an empty folder: download a release into a new "
                           "folder (files left from another release would fail verification)")
    _refuse_offline(f"download {repo_id}")
    where = f"{repo_id}@{revision or 'main'}"
    # An existing empty folder (maybe a mount point, or ".") is filled in place; a new one is renamed in whole.
    existing = out_dir.is_dir()
    tmp = temp_dir(out_dir / _DOWNLOAD_NAME if existing else out_dir)
    try:
        snapshot_download(repo_id, repo_type="model", revision=revision, local_dir=tmp,
                          endpoint=endpoint, token=token)
        report = verify_release(tmp)
        report.path = out_dir  # what the summary names: the folder the user asked for
        if not report.ok:
            raise VerificationError(f"downloaded {where}, but {report.summary()}; nothing was kept", report)
        if existing:
            for entry in sorted(tmp.iterdir()):
                os.replace(entry, out_dir / entry.name)
            tmp.rmdir()
        else:
            replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("downloaded %s into %s: %s", where, out_dir, report.summary())
    return report


# --------------------------------------------------------------------------------------------------
# Front door
# --------------------------------------------------------------------------------------------------


def run(cfg: RunConfig, run_dir: RunDir) -> Path:
    """Stage 5: build ``run_dir.release``; push it when ``publish.repo_id`` is set. Returns the release."""
    release = build_release(run_dir, cfg)
    if cfg.publish.repo_id:
        push_release(
            release,
            cfg.publish.repo_id,
            private=cfg.publish.private,
            tag=cfg.publish.tag,
            commit_message=f"langkit release of run {cfg.name}" + (f" ({cfg.publish.tag})" if cfg.publish.tag else ""),
        )
    return release
