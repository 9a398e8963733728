"""The dataset card: ``corpus/dataset/README.md`` with Hugging Face metadata, counts, licences, rules
and plots, written from ``stats.json`` (and the splits, streamed, for the length plot) after a build.

The card reads only what the build wrote: per-source and per-language counts (read, kept, dropped by
reason, quarantined), the licence and redistribution terms of each source, and any per-language
report the normalization and filter steps add to ``stats.json`` (rendered generically, so a new
step's counts show up without changing this module). Plots are PNG files drawn with matplotlib's Agg
canvas (no pyplot, no global backend switch), with no timestamp in them, so a rebuild writes the
same bytes.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from langkit.corpus.licences import RESTRICTED, hf_license
from langkit.languages import LANGUAGES
from langkit.utils import atomic_write_bytes, atomic_write_text, get_logger

log = get_logger("corpus.card")

SPLIT_FILES = ("train", "dev", "test")
PLOTS = {
    "lengths": "Length of kept texts per language (characters)",
    "sources": "Records per source: kept, dropped, quarantined",
    "drops": "Dropped records per reason",
}
"""Plot files (``dataset/plots/<name>.png``) and their captions."""
LENGTH_BINS = 40
"""Log-spaced bins of the length histogram, from 1 to the longest text."""
_KNOWN_LANGUAGE_KEYS = {"read", "kept", "dropped", "quarantined", "pairs", "monolingual", "splits"}
_KNOWN_TOP_KEYS = {"languages", "sources", "splits", "encodings"}
_SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]  # fmt: skip


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` records."""
    for limit, name in _SIZE_CATEGORIES:
        if n < limit:
            return name
    return "n>1B"


def write_dataset_card(out_dir: str | Path, stats: dict[str, Any]) -> Path:
    """Write ``out_dir/dataset/README.md`` and ``out_dir/dataset/plots/*.png`` for a built corpus
    (``out_dir`` is the corpus folder, ``stats`` what the build wrote to ``stats.json``); return the
    README's path."""
    dataset = Path(out_dir) / "dataset"
    lengths = _length_histograms(dataset)
    plots = {
        "lengths": _plot_lengths(lengths),
        "sources": _plot_sources(stats.get("sources", [])),
        "drops": _plot_drops(stats.get("languages", {})),
    }
    for name, png in plots.items():
        atomic_write_bytes(dataset / "plots" / f"{name}.png", png)
    path = dataset / "README.md"
    atomic_write_text(path, render_card(stats, lengths))
    log.info("dataset card written to %s", path)
    return path


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _metadata(stats: dict[str, Any]) -> dict[str, Any]:
    sources = stats.get("sources", [])
    codes = [c for c in stats.get("languages", {}) if c in LANGUAGES]
    for source in sources:
        pivot = source.get("pivot_language", "")
        if pivot in LANGUAGES and pivot not in codes and source.get("kept", 0):
            codes.append(pivot)
    licenses = sorted({hf_license(s.get("license", "unknown")) for s in sources}) or ["unknown"]
    total = sum(stats.get("splits", {}).values())
    paired = any(lang.get("pairs", 0) for lang in stats.get("languages", {}).values())
    return {
        "language": [LANGUAGES[c].hub_code for c in codes],
        "license": licenses[0] if len(licenses) == 1 else licenses,
        "multilinguality": ["multilingual", "translation"] if paired else ["multilingual"],
        "task_categories": ["translation", "text-generation"],
        "size_categories": [size_category(total)],
        "pretty_name": "langkit corpus (" + ", ".join(LANGUAGES[c].english_name for c in codes) + ")",
        "tags": ["langkit", "african-languages"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"{s}.parquet"} for s in SPLIT_FILES],
            }
        ],
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items() if n) or "none"


def _descriptions() -> dict[str, str]:
    """One-line descriptions of rule, flag and drop-reason ids, from the modules that define them
    (``RULES`` / ``FLAGS`` in normalize, ``REASONS`` in filters and dedup) where those exist."""
    found = {
        "empty": "no text left after normalization",
        "duplicate": "same language, text and pivot as a record kept before it",
        "too_short": "too few characters or words",
        "too_long": "too many characters or words",
        "mostly_symbols": "too few letters among the characters",
        "repeated_ngrams": "too many repeated word n-grams",
        "wrong_script": "too few Latin-script letters",
    }
    modules = (("normalize", ("RULES", "FLAGS")), ("filters", ("REASONS",)), ("dedup", ("REASONS",)))
    for module, names in modules:
        try:
            mod = importlib.import_module(f"langkit.corpus.{module}")
        except ImportError:
            continue
        for name in names:
            table = getattr(mod, name, None)
            if isinstance(table, dict):
                found.update({str(k): str(v) for k, v in table.items()})
    return found


def _describe(reason: str, descriptions: dict[str, str]) -> str:
    if reason in descriptions:
        return descriptions[reason]
    if reason.startswith("langid:"):
        return f"language identification says {reason.split(':', 1)[1]}"
    return ""


def _is_counts(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
    )


def _render_report(title: str, report: Any, descriptions: dict[str, str]) -> list[str]:
    """A per-language report from another step (normalization, filters, language id...), whatever its
    shape: counts become tables, before/after samples a short table, nested sections recurse."""
    if not isinstance(report, dict) or not report:
        return []
    lines: list[str] = []
    nested: list[str] = []
    scalars = [[k, v] for k, v in report.items() if isinstance(v, (int, float, str, bool))]
    if scalars:
        lines += _table(["", "value"], scalars)
    for key, value in report.items():
        if _is_counts(value):
            rows = [[k, v, descriptions.get(k, "")] for k, v in value.items()]
            lines += [f"*{key}*", ""] + _table(["id", "count", "what it does"], rows)
        elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            rows = [
                [k, s.get("before", ""), s.get("after", "")]
                for k, samples in value.items()
                for s in samples[:2]
                if isinstance(s, dict)
            ]
            if rows:
                lines += [f"*{key}* (first examples)", ""] + _table(["id", "before", "after"], rows)
        elif isinstance(value, dict):
            nested += _render_report(f"{title} / {key}", value, descriptions)
    return ([f"**{title}**", ""] + lines if lines else []) + nested


def render_card(stats: dict[str, Any], lengths: dict[str, Counter[int]] | None = None) -> str:
    """The README.md text: YAML metadata header, then counts, licences, rules and plots."""
    languages: dict[str, Any] = stats.get("languages", {})
    sources: list[dict[str, Any]] = stats.get("sources", [])
    splits: dict[str, int] = stats.get("splits", {})
    descriptions = _descriptions()
    meta = yaml.safe_dump(_metadata(stats), sort_keys=False, allow_unicode=True)
    names = ", ".join(f"{LANGUAGES[c].english_name} (`{c}`)" if c in LANGUAGES else c for c in languages)
    out = ["---", meta.rstrip(), "---", "", "# langkit corpus", ""]
    out += [
        f"Text in {names or 'no language'}, built with langkit from {len(sources)} source(s). Each record "
        "carries its language, source, licence, original file and line; `dropped.jsonl` and "
        "`quarantine.jsonl` beside this folder say why every other record was set aside, and for every "
        "source `read = kept + dropped + quarantined`.",
        "",
        "Splits: " + ", ".join(f"{name} {n}" for name, n in splits.items()) + ".",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("parquet", data_files={s: f"{s}.parquet" for s in ("train", "dev", "test")})',
        "```",
        "",
        "## Languages",
        "",
    ]
    rows = []
    for code, lang in languages.items():
        split_counts = lang.get("splits", {})
        hub = LANGUAGES[code].hub_code if code in LANGUAGES else ""
        rows.append(
            [code, hub, lang.get("read", 0), lang.get("kept", 0), _reasons(lang.get("dropped", {})),
             lang.get("quarantined", 0), lang.get("pairs", 0), lang.get("monolingual", 0),
             " / ".join(str(split_counts.get(s, 0)) for s in SPLIT_FILES)]
        )  # fmt: skip
    out += _table(
        ["language", "hub code", "read", "kept", "dropped (reason)", "quarantined", "pairs", "monolingual",
         "train / dev / test"],
        rows,
    )  # fmt: skip
    if lengths:
        rows = []
        for code, hist in lengths.items():
            n = sum(hist.values())
            total = sum(length * count for length, count in hist.items())
            rows.append([code, n, f"{total / n:.0f}" if n else "-", max(hist) if hist else "-"])
        out += ["Lengths of kept texts, in characters:", ""]
        out += _table(["language", "texts", "mean", "longest"], rows)

    out += ["## Sources", ""]
    rows = [
        [s.get("name", ""), s.get("language", ""), s.get("pivot_language", "") or "-",
         ", ".join(x for x in (s.get("format", ""), s.get("encoding", "")) if x),
         s.get("license", "unknown"), s.get("redistribution", "") or "unknown", s.get("read", 0),
         s.get("kept", 0), _reasons(s.get("dropped", {})), s.get("quarantined", 0)]
        for s in sources
    ]  # fmt: skip
    out += _table(
        ["source", "language", "pivot", "format, encoding", "licence", "redistribution", "read", "kept",
         "dropped (reason)", "quarantined"],
        rows,
    )  # fmt: skip
    if encodings := stats.get("encodings"):
        out += [
            "Encodings the files were read in (detected, or as declared): "
            + ", ".join(f"{name} {n} source{'s' * (n != 1)}" for name, n in encodings.items())
            + ". A line that did not decode is in `quarantine.jsonl`.",
            "",
        ]

    out += ["## Licences", ""]
    by_licence: dict[tuple[str, str], list[str]] = {}
    for s in sources:
        key = (s.get("license", "unknown"), s.get("redistribution", "") or "unknown")
        by_licence.setdefault(key, []).append(s.get("name", ""))
    out += _table(
        ["licence", "redistribution", "sources"],
        [[lic, red, ", ".join(names)] for (lic, red), names in sorted(by_licence.items())],
    )
    restricted = [s.get("name", "") for s in sources if s.get("redistribution") in RESTRICTED]
    unknown = [s.get("name", "") for s in sources if not s.get("redistribution")]
    if restricted:
        out += [
            f"**Restricted:** {', '.join(restricted)} may not be redistributed freely (non-commercial or "
            "no redistribution). This corpus was built with `corpus.allow_restricted` or for a private "
            "use; do not publish it as is.",
            "",
        ]
    if unknown:
        out += [f"**Unknown terms:** the licence of {', '.join(unknown)} does not say what it allows.", ""]
    out += [
        "Each source keeps its own licence: a record's `license` column says which applies to it. "
        "Share-alike sources require derived data to keep their licence.",
        "",
    ]
    citations = _citations(sources)
    if citations:
        out += ["### Citations", ""]
        for card_id, citation in citations:
            out += [f"`{card_id}`:", "", "```", citation.rstrip(), "```", ""]

    out += ["## Drops and quarantine", ""]
    reasons: list[str] = []
    for lang in languages.values():
        reasons += [r for r in lang.get("dropped", {}) if r not in reasons]
    out += _table(
        ["reason", "what it means", *languages],
        [[r, _describe(r, descriptions), *(lang.get("dropped", {}).get(r, 0) for lang in languages.values())]
         for r in reasons]
        + [["quarantined", "malformed input (bad encoding, JSON, column count)",
            *(lang.get("quarantined", 0) for lang in languages.values())]],
    )  # fmt: skip

    out += ["## Normalization and filters", ""]
    reports = []
    for code, lang in languages.items():
        for key, value in lang.items():
            if key not in _KNOWN_LANGUAGE_KEYS:
                reports += _render_report(f"{code}: {key}", value, descriptions)
    extra = {k: v for k, v in stats.items() if k not in _KNOWN_TOP_KEYS}
    if extra:
        reports += ["**Build settings**", "", "```yaml"]
        reports += [yaml.safe_dump(extra, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    out += reports or [
        "Unicode NFC and surrounding whitespace removed; empty and duplicate records dropped. "
        "(`stats.json` records no other rules for this build.)",
        "",
    ]

    out += ["## Plots", ""]
    for name, caption in PLOTS.items():
        out += [f"![{caption}](plots/{name}.png)", "", f"*{caption}.*", ""]
    return "\n".join(out).rstrip() + "\n"


def _citations(sources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ids = sorted({s["card"] for s in sources if s.get("card")})
    if not ids:
        return []
    from langkit.corpus.catalog import load_catalog

    try:
        cards = {c.id: c for c in load_catalog()}
    except ValueError as err:
        log.warning("citations left out of the dataset card: %s", err)
        return []
    return [(i, cards[i].citation) for i in ids if i in cards]


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _length_histograms(dataset: Path) -> dict[str, Counter[int]]:
    """Exact counts of kept-text lengths (characters) per language, streamed from the split files;
    memory grows with the number of distinct lengths, not of texts."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    hist: dict[str, Counter[int]] = {}
    for split in SPLIT_FILES:
        path = dataset / f"{split}.parquet"
        if not path.is_file():
            continue
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=["language", "text"]):
            lengths = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
            languages = batch.column("language").dictionary_encode()
            codes = languages.indices.to_numpy(zero_copy_only=False)
            for k, language in enumerate(languages.dictionary.to_pylist()):
                values, counts = np.unique(lengths[codes == k], return_counts=True)
                hist.setdefault(language, Counter()).update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    return hist


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version string: same bytes
    return buffer.getvalue()


def _empty(ax: Any, text: str = "no records") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_lengths(lengths: dict[str, Counter[int]]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    longest = max((max(h) for h in lengths.values() if h), default=0)
    if longest <= 0:
        _empty(ax)
    else:
        # Log-spaced bins from the shortest text (at least 1 character) to just past the longest.
        low = math.log(max(1, min(min(h) for h in lengths.values() if h)))
        high = math.log(longest + 1)
        edges = [math.exp(low + i * (high - low) / LENGTH_BINS) for i in range(LENGTH_BINS + 1)]
        for code, hist in lengths.items():
            values = list(hist)
            ax.hist(values, bins=edges, weights=[hist[v] for v in values], histtype="step", linewidth=1.5,
                    label=code)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("characters")
        ax.set_ylabel("texts")
        ax.legend()
    ax.set_title(PLOTS["lengths"])
    return _png(fig)


def _plot_sources(sources: list[dict[str, Any]]) -> bytes:
    fig = _figure(7.0, max(2.5, 0.45 * len(sources) + 1.5))
    ax = fig.add_subplot()
    if not sources:
        _empty(ax)
    else:
        names = [s.get("name", "") for s in sources]
        kept = [s.get("kept", 0) for s in sources]
        dropped = [sum(s.get("dropped", {}).values()) for s in sources]
        quarantined = [s.get("quarantined", 0) for s in sources]
        ax.barh(names, kept, label="kept", color="tab:green")
        ax.barh(names, dropped, left=kept, label="dropped", color="tab:orange")
        ax.barh(names, quarantined, left=[k + d for k, d in zip(kept, dropped, strict=True)],
                label="quarantined", color="tab:red")  # fmt: skip
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("records")
        ax.legend()
    ax.set_title(PLOTS["sources"])
    return _png(fig)


def _plot_drops(languages: dict[str, Any]) -> bytes:
    reasons: list[str] = []
    for lang in languages.values():
        reasons += [r for r in lang.get("dropped", {}) if r not in reasons]
    reasons.append("quarantined")
    fig = _figure(7.0, max(2.5, 0.4 * len(reasons) + 1.5))
    ax = fig.add_subplot()
    counts = {
        code: [lang.get("dropped", {}).get(r, 0) for r in reasons[:-1]] + [lang.get("quarantined", 0)]
        for code, lang in languages.items()
    }
    if not any(any(c) for c in counts.values()):
        _empty(ax, "nothing dropped or quarantined")
    else:
        left = [0] * len(reasons)
        for code, values in counts.items():
            ax.barh(reasons, values, left=left, label=code)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("records")
        ax.legend()
    ax.set_title(PLOTS["drops"])
    return _png(fig)
