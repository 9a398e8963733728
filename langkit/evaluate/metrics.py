"""sacrebleu scores with their signatures, bootstrap intervals and the paired bootstrap test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from langkit.utils import (
    get_logger,
)

log = get_logger("evaluate")


METRICS = ("chrf++", "chrf", "bleu")
"""Metric names in report.json: chrF++ = ``CHRF(word_order=2)``, chrF = ``CHRF()`` (chrF2), BLEU = ``BLEU()``."""

# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _metric(name: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "chrf":
        return CHRF()
    if name == "bleu":
        return BLEU()
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    metrics: Sequence[str] = METRICS,
    bootstrap: int = 0,
) -> dict[str, dict[str, Any]]:
    """Corpus-level sacrebleu scores, one reference per segment: ``{name: {"score", "signature"}}``.

    With ``bootstrap`` > 1 (and more than one segment), ``chrf++`` also gets ``ci95``: sacrebleu's bootstrap estimate (mean and
    half-width of the 95% interval, resampling seed ``SACREBLEU_SEED``, default 12345) and its own
    signature (which names ``bs`` and ``rs``). The plain ``signature`` stays the one sacrebleu's CLI prints."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("nothing to score: no hypotheses")
    hyps, refs = list(hypotheses), [list(references)]
    result: dict[str, dict[str, Any]] = {}
    for name in metrics:
        metric = _metric(name)
        value = metric.corpus_score(hyps, refs)
        result[name] = {"score": round(float(value.score), 4), "signature": str(metric.get_signature())}
    if bootstrap > 1 and "chrf++" in result and len(hyps) > 1:  # one segment: every resample is the same
        metric = _metric("chrf++")
        value = metric.corpus_score(hyps, refs, n_bootstrap=bootstrap)
        result["chrf++"]["ci95"] = {
            "mean": round(float(value._mean), 4),  # sacrebleu keeps the bootstrap estimate in these two
            "half_width": round(float(value._ci), 4),
            "n_bootstrap": bootstrap,
            "signature": str(metric.get_signature()),
        }
    return result


def paired_test(baseline: Sequence[str], system: Sequence[str], references: Sequence[str], *,
                n_samples: int = 1000) -> dict[str, Any]:
    """Is ``system``'s chrF++ different from ``baseline``'s on the same segments beyond chance? sacrebleu's
    paired bootstrap resampling (its CLI's ``--paired-bs``; resampling seed ``SACREBLEU_SEED``, default
    12345): ``{"metric", "baseline", "system", "p_value", "n_samples", "signature"}``. Two intervals that
    overlap are no such test: the resamples here take the same segments for both systems."""
    from sacrebleu.significance import PairedTest

    if not len(baseline) == len(system) == len(references):
        raise ValueError(f"{len(baseline)} baseline and {len(system)} system outputs for {len(references)} references")
    test = PairedTest([("baseline", list(baseline)), ("system", list(system))], {"chrf++": _metric("chrf++")},
                      [list(references)], test_type="bs", n_samples=n_samples)
    signatures, scores = test()
    (name,) = signatures  # sacrebleu names the metric itself ("chrF2++")
    base_result, system_result = scores[name]
    assert not isinstance(base_result, str) and not isinstance(system_result, str)  # the name column is apart
    return {"metric": "chrf++", "baseline": round(float(base_result.score), 4),
            "system": round(float(system_result.score), 4), "p_value": round(float(system_result.p_value or 0.0), 4),
            "n_samples": n_samples, "signature": str(signatures[name])}


FLAG_SHARE = 0.2
"""Share of segments at which empty or copied outputs flag a system's direction."""
CONSTANT_SHARE = 0.5
"""Share of segments one repeated output must cover to flag the direction as constant."""


def plain_text(text: str) -> str:
    """A text as output comparisons see it: case and spacing ignored."""
    return " ".join(text.casefold().split())


def output_flags(sources: Sequence[str], outputs: Sequence[str]) -> dict[str, Any]:
    """What a score alone hides: how many outputs are empty, copy their source, or repeat one text.

    Returns ``{"empty", "copied_source", "most_common": {"text", "count"}, "flags": [...]}``; ``flags`` names
    each problem found: ``empty`` (>= 20% of outputs empty), ``copied_source`` (>= 20% equal to their source,
    ignoring case and spacing) and ``constant`` (one non-empty output is >= 50% of them, over 3+
    segments). A flagged system's scores measure that behaviour, not translation."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    n = len(outputs)
    empty = sum(1 for o in outputs if not o.strip())
    copied = sum(1 for s, o in zip(sources, outputs, strict=True) if o.strip() and plain_text(s) == plain_text(o))
    counts = Counter(o.strip() for o in outputs if o.strip())
    text, count = counts.most_common(1)[0] if counts else ("", 0)
    flags = []
    if n and empty / n >= FLAG_SHARE:
        flags.append("empty")
    if n and copied / n >= FLAG_SHARE:
        flags.append("copied_source")
    if n >= 3 and count / n >= CONSTANT_SHARE and count > 1:
        flags.append("constant")
    return {"empty": empty, "copied_source": copied, "most_common": {"text": text, "count": count}, "flags": flags}


FLAG_TEXT = {
    "empty": "outputs empty",
    "copied_source": "outputs copy the source",
    "constant": "one output repeated",
}


def describe_flags(flags: dict[str, Any], n: int) -> str:
    """One line for a report: 'constant: "." for 8/8 segments; empty: 2/8'."""
    parts = []
    for flag in flags.get("flags", []):
        if flag == "constant":
            mc = flags["most_common"]
            parts.append(f"{FLAG_TEXT[flag]} ({mc['text'][:30]!r} for {mc['count']}/{n})")
        elif flag == "empty":
            parts.append(f"{FLAG_TEXT[flag]} ({flags['empty']}/{n})")
        else:
            parts.append(f"{FLAG_TEXT[flag]} ({flags['copied_source']}/{n})")
    return "; ".join(parts)
