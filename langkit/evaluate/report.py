"""Reports: the stage's report.md, and the suite's results.md, results.csv and results.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from langkit.evaluate.metrics import METRICS, describe_flags
from langkit.utils import atomic_write_text, get_logger

log = get_logger("evaluate")

METRIC_LABELS = {"chrf++": "chrF++", "chrf": "chrF", "bleu": "BLEU"}

# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def report_markdown(report: dict[str, Any]) -> str:
    """report.json as a readable table, signatures listed under it."""
    lines = [
        "# Evaluation",
        "",
        f"Model `{report['model']}`, adapter `{report['adapter']}`, test set `{report['test_set']}`; "
        f"greedy decoding, at most {report['generation']['max_new_tokens']} new tokens.",
        "",
        "| system | direction | n | chrF++ | chrF | BLEU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    signatures: dict[str, str] = {}
    flagged_systems = {(r["system"], r["direction"]): describe_flags(r["flags"], r["n"])
                       for r in report["results"] if r.get("flags", {}).get("flags")}
    for r in report["results"]:
        m = r["metrics"]
        chrfpp = _fmt(m.get("chrf++", {}).get("score"))
        if ci := m.get("chrf++", {}).get("ci95"):
            chrfpp += f" ± {ci['half_width']:.2f}"
        if (r["system"], r["direction"]) in flagged_systems:
            chrfpp += " ⚠"
        lines.append(f"| {r['system']} | {r['direction']} | {r['n']} | {chrfpp} | "
                     f"{_fmt(m.get('chrf', {}).get('score'))} | {_fmt(m.get('bleu', {}).get('score'))} |")
        for name, label in METRIC_LABELS.items():
            if name in m:
                signatures.setdefault(label, m[name]["signature"])
                if ci := m[name].get("ci95"):
                    signatures.setdefault(f"{label} 95% CI (bootstrap)", ci["signature"])
    if flagged_systems:
        lines += ["", "⚠ **Flagged outputs: these scores measure this behaviour, not translation** "
                  "(whatever a significance test says):", ""]
        lines += [f"- {system} {direction}: {text}" for (system, direction), text in flagged_systems.items()]
    lines += ["", "chrF++ is the primary metric (as FLORES-200 and NLLB report it). "
              "± is half the width of sacrebleu's 95% bootstrap interval."]
    if paired := report.get("paired"):
        lines += ["", "Paired bootstrap resampling, chrF++ of langkit against base on the same segments (p < 0.05: "
                  "a difference unlikely to be chance):", "", "| direction | base | langkit | p |", "|---|---:|---:|---:|"]
        for p in paired:
            flagged = flagged_systems.get((p["compared_system"], p["direction"]), "")
            lines.append(f"| {p['direction']} | {_fmt(p['baseline'])} | {_fmt(p['system'])}"
                         f"{' ⚠' if flagged else ''} | {p['p_value']:.4f} |")
            signatures.setdefault("chrF++ paired bootstrap", p["signature"])
    lines += ["", "Signatures (sacrebleu):", ""]
    lines += [f"- {label}: `{sig}`" for label, sig in signatures.items()]
    if report["model"] == "tiny":
        lines += ["", "**These scores come from `tiny`, a randomly initialised 2-layer model: they are meaningless "
                  "and only show that the pipeline runs end to end.**"]
    lines += ["", "Every hypothesis, reference and source is in `outputs/` (one segment per line), e.g. "
              "`sacrebleu outputs/langkit.SRC-TGT.ref -i outputs/langkit.SRC-TGT.hyp -m chrf --chrf-word-order 2`.",
              ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The suite's results: results.md, results.csv, results.png
# --------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("task", "system", "direction", "n", "chrf++", "chrf++_ci95", "chrf", "bleu", "p_vs_baseline",
               "flags", "chrf++_signature", "chrf_signature", "bleu_signature")


def _cell(row: dict[str, Any] | None, metric: str) -> str:
    if row is None:
        return "–"
    m = row["metrics"].get(metric)
    if m is None:
        return "–"
    text = f"{m['score']:.2f}"
    if metric == "chrf++" and (ci := m.get("ci95")):
        text += f" ± {ci['half_width']:.2f}"
    if row["flags"]["flags"]:
        text += " ⚠"
    return text


def results_markdown(report: dict[str, Any]) -> str:
    """results.json as tables: per task, systems x directions for chrF++ (primary), chrF and BLEU; the
    paired tests; published scores apart; every signature; flagged outputs."""
    systems = list(report["systems"])
    lines = ["# Evaluation results", ""]
    gen = report["generation"]
    lines += [f"Greedy decoding, at most {gen['max_new_tokens']} new tokens; baseline for the paired tests: "
              f"`{report['baseline']}`." + (f" **Only the first {report['limit']} segments of each direction were "
                                            "scored (--limit): not comparable with published scores.**"
                                            if report["limit"] else ""), ""]
    signatures: dict[str, str] = {}
    for task in report["tasks"]:
        rows = [r for r in report["results"] if r["task"] == task["name"]]
        directions = list(dict.fromkeys(r["direction"] for r in rows))
        lines += [f"## {task['title'] or task['name']} (`{task['name']}`)", ""]
        if not rows:
            lines += ["Nothing scored.", ""]
            continue
        n = {d: next(r["n"] for r in rows if r["direction"] == d) for d in directions}
        for metric in METRICS:
            label = METRIC_LABELS[metric]
            note = {"chrf++": " (primary; ± half the 95% bootstrap interval)",
                    "chrf": " (word order 0: the figure AfroBench and lm-evaluation-harness report)", "bleu": ""}[metric]
            lines += [f"**{label}**{note}", "", "| system | " + " | ".join(f"{d} (n={n[d]})" for d in directions) + " |",
                      "|---|" + "---:|" * len(directions)]
            for system in systems:
                cells = []
                for d in directions:
                    row = next((r for r in rows if r["system"] == system and r["direction"] == d), None)
                    cells.append(_cell(row, metric))
                    if row and metric in row["metrics"]:
                        signatures.setdefault(label, row["metrics"][metric]["signature"])
                        if ci := row["metrics"][metric].get("ci95"):
                            signatures.setdefault(f"{label} 95% CI (bootstrap)", ci["signature"])
                lines.append(f"| {system} | " + " | ".join(cells) + " |")
            lines.append("")
        paired = [p for p in report["paired"] if p["task"] == task["name"]]
        if paired:
            lines += [f"Paired bootstrap resampling against `{report['baseline']}`, chrF++ on the same segments "
                      "(p < 0.05: a difference unlikely to be chance):", "",
                      "| system | direction | baseline | system | p |", "|---|---|---:|---:|---:|"]
            for p in paired:
                lines.append(f"| {p['compared_system']} | {p['direction']} | {p['baseline']:.2f} | {p['system']:.2f} | "
                             f"{p['p_value']:.4f} |")
                signatures.setdefault("chrF++ paired bootstrap", p["signature"])
            lines.append("")
        for pub in report.get("published") or []:
            if pub["task"] != task["name"]:
                continue
            label = METRIC_LABELS[pub["metric"]]
            lines += [f"**Published {label}, not measured here**: {pub['source']}" +
                      (f" ({pub['url']})" if pub.get("url") else ""), "",
                      "| published system | direction | " + label + " |", "|---|---|---:|"]
            lines += [f"| {s['system']} (published) | {s['direction']} | {s['score']:.1f}" +
                      (f" ({s['note']})" if s.get("note") else "") + " |" for s in pub["scores"]]
            lines.append("")
        flagged = [r for r in rows if r["flags"]["flags"]]
        if flagged:
            lines += ["⚠ Flagged outputs (their scores measure this, not translation):", ""]
            lines += [f"- {r['system']} {r['direction']}: {describe_flags(r['flags'], r['n'])}" for r in flagged]
            lines.append("")
    if report["skipped"]:
        lines += ["Not scored:", ""]
        lines += [f"- {s['system']} on {s['task']} {s['direction']}: {s['reason']}" for s in report["skipped"]]
        lines.append("")
    lines += ["## Systems", ""]
    for name, info in report["systems"].items():
        lines.append(f"- `{name}`: `{info['spec']}`")
    lines += ["", "## Signatures (sacrebleu)", ""]
    lines += [f"- {label}: `{sig}`" for label, sig in signatures.items()]
    lines += ["", "Every score can be checked with sacrebleu's own command line on `outputs/`, e.g. "
              "`sacrebleu outputs/TASK/SRC-TGT.ref -i outputs/TASK/SYSTEM.SRC-TGT.hyp -m chrf --chrf-word-order 2`.", ""]
    return "\n".join(lines)


def results_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """results.csv: one row per task, system and direction."""
    p_values = {(p["task"], p["compared_system"], p["direction"]): p["p_value"] for p in report["paired"]}
    rows = []
    for r in report["results"]:
        m = r["metrics"]
        ci = m["chrf++"].get("ci95")
        p = p_values.get((r["task"], r["system"], r["direction"]))
        rows.append({"task": r["task"], "system": r["system"], "direction": r["direction"], "n": str(r["n"]),
                     "chrf++": f"{m['chrf++']['score']:.4f}", "chrf++_ci95": f"{ci['half_width']:.4f}" if ci else "",
                     "chrf": f"{m['chrf']['score']:.4f}", "bleu": f"{m['bleu']['score']:.4f}",
                     "p_vs_baseline": "" if p is None else f"{p:.4f}", "flags": " ".join(r["flags"]["flags"]),
                     "chrf++_signature": m["chrf++"]["signature"], "chrf_signature": m["chrf"]["signature"],
                     "bleu_signature": m["bleu"]["signature"]})
    return rows


def plot_results(report: dict[str, Any], path: Path) -> None:
    """results.png: chrF++ per direction, one bar per system, the 95% interval drawn; one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t["name"] for t in report["tasks"] if any(r["task"] == t["name"] for r in report["results"])]
    systems = list(report["systems"])
    fig, axes = plt.subplots(len(tasks), 1, figsize=(max(6.0, 1.6 * 6), 3.6 * len(tasks)), squeeze=False)
    width = 0.8 / max(1, len(systems))
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        rows = [r for r in report["results"] if r["task"] == task]
        directions = list(dict.fromkeys(r["direction"] for r in rows))
        for k, system in enumerate(systems):
            xs, heights, below, above = [], [], [], []
            for j, d in enumerate(directions):
                row = next((r for r in rows if r["system"] == system and r["direction"] == d), None)
                if row is None:
                    continue
                value = row["metrics"]["chrf++"]["score"]
                xs.append(j + (k - (len(systems) - 1) / 2) * width)
                heights.append(value)
                # sacrebleu's interval is around the bootstrap mean, which need not be the score itself
                ci = row["metrics"]["chrf++"].get("ci95") or {"mean": value, "half_width": 0.0}
                below.append(max(0.0, value - (ci["mean"] - ci["half_width"])))
                above.append(max(0.0, ci["mean"] + ci["half_width"] - value))
            ax.bar(xs, heights, width, yerr=[below, above], capsize=3, label=system)
        ax.set_xticks(range(len(directions)), [d.replace("_Latn", "") for d in directions], rotation=20)
        ax.set_ylabel("chrF++")
        ax.set_title(f"{task}: chrF++ with 95% bootstrap intervals")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(report: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "results.md", results_markdown(report))
    buffer = io.StringIO(newline="")  # plain UTF-8, \n: for pandas and R more than for spreadsheets
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(results_rows(report))
    atomic_write_text(out / "results.csv", buffer.getvalue())
    if report["results"]:
        plot_results(report, out / "results.png")
