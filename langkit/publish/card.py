"""The model card (README.md of a release): Hub metadata and a readable description, from the files the
earlier stages left in the run directory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from langkit.config import RunConfig
from langkit.languages import LANGUAGES, get_language
from langkit.publish.manifest import (
    CONFIG_NAME,
    EVAL_REPORT_NAME,
    EVAL_SUITE_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    TOKENIZER_DIR,
    PublishError,
)
from langkit.rundir import RunDir
from langkit.utils import get_logger, read_json

log = get_logger("publish")

TINY_MODEL = "tiny"
GPT_OSS_VOCAB_SIZE = 201_088  # rows of gpt-oss's embeddings; new tokens take ids from here on
_RESTRICTED_TERMS = ("non-commercial", "no-redistribution")  # corpus sources' redistribution terms
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


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
    signer: str = ""
    """Fingerprint of the public key whose private key signs the release ("" when unsigned)."""
    throwaway_key: bool = False
    """The signing key was made for this run only (publish.sign_key: throwaway)."""
    suite: dict[str, Any] | None = None
    """A ``langkit eval suite`` results.json to show (publish.eval_results)."""
    adapter_sha256: str = ""
    """SHA-256 of the released adapter's weights: which suite system is this adapter."""


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


def _chrf2(result: dict[str, Any]) -> dict[str, Any] | None:
    """chrF with word order 0 (chrF2: what AfroBench and lm-evaluation-harness report)."""
    return _metric(result, "chrf", "chrF")


def _flag_note(result: dict[str, Any]) -> str:
    """'⚠ outputs empty (3/4)...' when the evaluation flagged this system's outputs for the direction: its
    scores then measure that behaviour, not translation."""
    flags = result.get("flags")
    if not isinstance(flags, dict) or not flags.get("flags"):
        return ""
    from langkit.evaluate.metrics import describe_flags

    try:
        return "⚠ " + describe_flags(flags, int(result.get("n") or 0))
    except (KeyError, TypeError, ValueError):
        return "⚠ " + ", ".join(str(f) for f in flags["flags"])


class _Signatures:
    """The sacrebleu signatures of the numbers in one table, each listed once under its metric."""

    def __init__(self) -> None:
        self.by_metric: dict[str, list[str]] = {}

    def note(self, name: str, signature: Any) -> None:
        if signature and str(signature) not in self.by_metric.setdefault(name, []):
            self.by_metric[name].append(str(signature))

    def cell(self, metric: dict[str, Any] | None, name: str) -> str:
        if metric is None:
            return "–"
        self.note(name, metric.get("signature"))
        ci = metric.get("ci95")
        if isinstance(ci, dict) and isinstance(ci.get("half_width"), (int, float)):
            self.note(f"{name} 95% bootstrap interval (±)", ci.get("signature"))
            return f"{_fmt(float(metric['score']))} ± {_fmt(float(ci['half_width']))}"
        return _fmt(metric["score"])

    def lines(self) -> list[str]:
        out = ["sacrebleu signatures (they say exactly how each number was computed):", ""]
        for name, sigs in self.by_metric.items():
            out += [f"- {name}: `{sig}`" for sig in sigs if sigs]
        return out


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
            "| Direction | System | Segments | chrF++ | chrF | BLEU | Note |",
            "|---|---|---|---|---|---|---|",
        ]
        signatures = _Signatures()
        # grouped by direction, this adapter's row first
        for result in sorted(results, key=lambda r: (str(r.get("direction", "")), r.get("system", "langkit") != "langkit")):
            lines.append(
                f"| {_direction_label(result)} (`{result.get('direction', '')}`) | {result.get('system', 'langkit')} "
                f"| {_fmt(result.get('n'))} | {signatures.cell(_chrf(result), 'chrF++')} "
                f"| {signatures.cell(_chrf2(result), 'chrF')} | {signatures.cell(_bleu(result), 'BLEU')} "
                f"| {_flag_note(result)} |"
            )
        if any(_flag_note(r) for r in results):
            lines += ["", "⚠: the evaluation flagged these outputs (empty, copying the source, or one text "
                      "repeated): their scores measure that, not translation."]
        lines += ["", *signatures.lines()]
        lines += ["", f"The per-direction details are in `{EVAL_REPORT_NAME}`.", ""]
    if facts.suite is not None:
        lines += _suite_section(facts.suite, facts.adapter_sha256)

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
        "To serve it behind an OpenAI-compatible chat endpoint, `langkit serve` checks the release, merges the "
        "adapter into the base and serves the merged folder (vLLM on a GPU, `transformers serve` otherwise); "
        "the merged folder, written beside the release, is also what `vllm serve` takes (vLLM does not serve "
        "LoRA on gpt-oss's expert weights):",
        "",
        "```bash",
        f"langkit serve {title}{' --public-key publisher.pub.pem' if facts.signer else ''} --port 8000",
        f"vllm serve {title}{MERGED_SUFFIX}    # or, once merged, vLLM directly",
        "```",
        "",
    ]
    if tiny:
        lines += ["(The `tiny` base model is built by langkit in code and is not on the Hub.)", ""]

    lines += _checking_section(facts, repo, title)
    lines += [
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


MERGED_SUFFIX = "-merged"  # langkit serve writes RELEASE-merged/ beside a release (langkit.publish.serve)
SUITE_FORMAT = "langkit-eval-suite/1"  # langkit.evaluate.suite.RESULTS_FORMAT


def read_suite_results(path: Path) -> dict[str, Any]:
    """A ``langkit eval suite`` results.json, checked enough to make a table of it."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise PublishError(f"publish.eval_results: {path} not found (a results.json written by langkit eval "
                           "suite)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise PublishError(f"publish.eval_results: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != SUITE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PublishError(f"publish.eval_results: {path} is not a langkit eval suite results.json (format "
                           f"{found!r}, expected {SUITE_FORMAT!r})")
    if not isinstance(data.get("results"), list) or not isinstance(data.get("systems"), dict):
        raise PublishError(f"publish.eval_results: {path} has no results list and systems table")
    return data


def _suite_system(name: str, info: Any, adapter_sha256: str) -> str:
    """One system of a suite, told without local paths or endpoint addresses (they mean nothing to readers)."""
    info = info if isinstance(info, dict) else {}
    kind = str(info.get("kind", "?"))
    if kind == "run":
        what = f"a langkit run on `{_public_base_model(str(info.get('model', '?')))}`"
        if adapter_sha256 and info.get("adapter_sha256") == adapter_sha256:
            what = f"this release's adapter on `{_public_base_model(str(info.get('model', '?')))}`"
    elif kind == "hf":
        what = f"`{_public_base_model(str(info.get('model', '?')))}`" + (" with an adapter" if info.get("adapter") else "")
    elif kind == "openai":
        what = f"an OpenAI-compatible endpoint serving `{Path(str(info.get('model', '?'))).name}`"
    elif kind == "file":
        what = "outputs read from files"
    else:
        what = kind
    return f"- `{name}`: {what}"


def _suite_section(suite: dict[str, Any], adapter_sha256: str) -> list[str]:
    """The card's table of a ``langkit eval suite`` run: its tasks, systems, scores, flags and paired tests."""
    tasks = [t for t in suite.get("tasks", []) if isinstance(t, dict)]
    results = [r for r in suite.get("results", []) if isinstance(r, dict)]
    lines = ["### Benchmarks", "",
             f"Scored with `langkit eval suite` (greedy decoding, outputs scored as produced); the whole results "
             f"file is `{EVAL_SUITE_NAME}`.", ""]
    if tasks:
        lines += ["Tasks:", ""]
        for t in tasks:
            licence = f", licence {t['license']}" if t.get("license") else ""
            lines.append(f"- `{t.get('name', '?')}`: {t.get('title') or t.get('name', '?')}{licence}")
        lines.append("")
    lines += ["Systems:", ""]
    lines += [_suite_system(str(name), info, adapter_sha256) for name, info in suite["systems"].items()]
    lines.append("")
    if isinstance(suite.get("limit"), int) and suite["limit"] > 0:
        lines += [f"Only the first {suite['limit']} segments of each direction were scored: these numbers are not "
                  "comparable with published ones.", ""]
    signatures = _Signatures()
    lines += ["| Task | Direction | System | Segments | chrF++ | chrF | BLEU | Note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.get('task', '?')} | {_direction_label(r)} | {r.get('system', '?')} | {_fmt(r.get('n'))} "
                     f"| {signatures.cell(_chrf(r), 'chrF++')} | {signatures.cell(_chrf2(r), 'chrF')} "
                     f"| {signatures.cell(_bleu(r), 'BLEU')} | {_flag_note(r)} |")
    paired = [p for p in suite.get("paired", []) if isinstance(p, dict) and p.get("p_value") is not None]
    if paired:
        lines += ["", f"Paired bootstrap tests of chrF++ against `{suite.get('baseline', '?')}` (same segments "
                  "resampled for both systems; p < 0.05: a difference beyond chance):", ""]
        for p in paired:
            signatures.note("paired test", p.get("signature"))
            lines.append(f"- {p.get('task', '?')} `{p.get('direction', '?')}`: `{p.get('compared_system', '?')}` "
                         f"{_fmt(p.get('system'))} vs {_fmt(p.get('baseline'))}, p = {p['p_value']}")
    lines += ["", *signatures.lines(), ""]
    return lines


def _checking_section(facts: _RunFacts, repo: str, title: str) -> list[str]:
    """How to check a download: the manifest always; the signature and the key's fingerprint when signed."""
    lines = ["## Checking the files", ""]
    if not facts.signer:
        return lines + [
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
            "This release is **not signed**: the manifest travels with the files, so it shows that they arrived "
            "intact, not who published them.",
            "",
        ]
    lines += [
        f"`{MANIFEST_NAME}` lists the SHA-256 and size of every file of this release, and `{SIGNATURE_NAME}` "
        "signs them all, the manifest and this card included, with the publisher's private key (OpenSSF model "
        "signing: a Sigstore bundle, made offline). The manifest shows that the files arrived intact; the "
        "signature shows who published them, which the manifest alone cannot, since it travels with the files.",
        "",
        f"- Publisher's public key, SHA-256 fingerprint: `{facts.signer}`",
        "",
    ]
    if facts.throwaway_key:
        lines += [
            "> **Throwaway key.** This release was signed with a key pair made for this one run (a demo or a "
            "test). Its signature shows that the files have not changed since, not who published them.",
            "",
        ]
    lines += [
        "Get the publisher's public key (a PEM file) from the publisher through a channel you trust, not from "
        "where you got this release, and check that its fingerprint is the one above (`langkit publish verify` "
        "prints it; for a key file written by `langkit publish keygen` it is also what `sha256sum` prints). "
        "Then download and check the signature and the manifest in one step (nothing is kept unless both pass):",
        "",
        "```bash",
        f"langkit publish download {repo} --out {title} --public-key publisher.pub.pem",
        "```",
        "",
        "or check a copy you already have, with langkit or with the model-signing package's own command, so "
        "that you need not trust langkit to check langkit:",
        "",
        "```bash",
        f"langkit publish verify {title} --public-key publisher.pub.pem",
        f"model_signing verify key {title} --signature {title}/{SIGNATURE_NAME} --public_key publisher.pub.pem",
        "```",
        "",
    ]
    return lines


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
