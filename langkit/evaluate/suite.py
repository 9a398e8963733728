"""``langkit eval suite``: several systems on standard test sets, one table a researcher can publish.

For each benchmark (:mod:`langkit.evaluate.benchmarks`), system (:mod:`langkit.evaluate.systems`) and
direction, the outputs are produced (or read, for a file of outputs), cached segment by segment
(:mod:`langkit.evaluate.cache`), written one per line and scored with sacrebleu: chrF++ (primary, with a
95% bootstrap interval), chrF (word order 0: what AfroBench and lm-evaluation-harness report) and BLEU,
each with its signature; then every system is tested against the baseline by paired bootstrap
resampling. Outputs in ``OUT/``::

    outputs/{task}/{src}-{tgt}.src, .ref          the test set as scored, one segment per line
    outputs/{task}/{system}.{src}-{tgt}.hyp       each system's outputs: rescore with sacrebleu's CLI
    results.json / results.md / results.csv       every score with its signature, the paired tests
    results.png                                   chrF++ per direction and system, intervals drawn
    cache/{system}/{key}/{task}/{src}-{tgt}.jsonl outputs as produced (a rerun resumes from them)

Scores are computed on the outputs as produced (made one line), against the references as published:
no normalization on either side, as sacrebleu and AfroBench score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from langkit.evaluate.benchmarks import (
    Benchmark,
    TaskError,
    describe,
    load_benchmark,
    load_benchmark_directions,
)
from langkit.evaluate.cache import OutputCache, system_key
from langkit.evaluate.metrics import METRICS, output_flags, paired_test, score
from langkit.evaluate.systems import (
    FileSystem,
    GenerationSettings,
    SystemSpecError,
    make_system,
    parse_systems,
)
from langkit.evaluate.tasks import Direction, one_line, write_lines
from langkit.utils import get_logger, progress_bar, write_json

log = get_logger("evaluate")

RESULTS_FORMAT = "langkit-eval-suite/1"


@dataclass
class SuiteConfig:
    """One ``langkit eval suite`` command."""

    tasks: list[str]
    """Benchmark names (``eval/*.yaml``) or task file paths."""
    systems: list[str]
    """``NAME=KIND:WHAT`` specs (:func:`langkit.evaluate.systems.parse_system`)."""
    out: Path
    data: str | None = None
    """The benchmark's folder in its published layout; None: its Hub copy."""
    baseline: str = ""
    """System every other is tested against (paired bootstrap); empty: the first system."""
    directions: list[str] = field(default_factory=list)
    """``src-tgt`` to score instead of each task's defaults (those a task lacks are skipped for it)."""
    limit: int = 0
    """Score the first N segments only (0: all): for trying a set-up, not for publishing."""
    bootstrap: int = 1000
    """Resamples of the chrF++ interval and the paired tests (0: none)."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    published: list[str] = field(default_factory=list)
    """Files of published scores (``eval/published/*.yaml``), shown apart from measured ones."""


class SuiteError(RuntimeError):
    """A system that failed during the run; what it finished is cached, and a rerun resumes."""


def load_published(path: str | Path) -> dict[str, Any]:
    """A file of published scores: ``source``, ``task``, ``metric`` and ``scores`` (system, direction, score)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"published scores file not found: {path}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: published scores must be a mapping with source, task, metric and scores")
    unknown = sorted(set(data) - {"source", "url", "task", "metric", "scores"})
    missing = [k for k in ("source", "task", "metric", "scores") if k not in data]
    if unknown or missing:
        raise TaskError(f"{path}: " + "; ".join(([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) +
                                                ([f"missing {', '.join(missing)}"] if missing else [])))
    if data["metric"] not in METRICS:
        raise TaskError(f"{path}: metric must be one of {', '.join(METRICS)}, got {data['metric']!r}")
    rows = []
    for n, row in enumerate(data["scores"] or [], start=1):
        if not isinstance(row, dict) or {"system", "direction", "score"} - set(row):
            raise TaskError(f"{path}: scores entry {n} needs system, direction and score")
        rows.append({"system": str(row["system"]), "direction": str(row["direction"]), "score": float(row["score"]),
                     **({"note": str(row["note"])} if row.get("note") else {})})
    return {"file": str(path), "source": str(data["source"]), "url": data.get("url"), "task": str(data["task"]),
            "metric": data["metric"], "scores": rows}


def _directions(bench: Benchmark, cfg: SuiteConfig) -> list[Direction]:
    only = cfg.directions
    if only:
        for name in only:  # an unknown code is an error whatever the task
            for code in name.split("-"):
                from langkit.languages import get_language

                get_language(code)
        only = [d for d in only if all(c in bench.codes for c in d.split("-"))]
        if not only:
            log.warning("%s: none of --directions %s is in it; skipped", bench.name, ",".join(cfg.directions))
            return []
    return load_benchmark_directions(bench, cfg.data, only=only, limit=cfg.limit)


def run_suite(cfg: SuiteConfig) -> Path:
    """Score every system on every task's directions into ``cfg.out``; returns ``results.json``'s path.

    Everything is checked before any model is loaded: the task files and their data, the system specs,
    the baseline's name, the published scores. A system that fails mid-run (an endpoint that stops
    answering) raises :class:`SuiteError` naming it and the direction; its finished outputs stay cached."""
    from langkit.evaluate.report import write_results

    benches = [load_benchmark(t) for t in cfg.tasks]
    if len({b.name for b in benches}) < len(benches):
        raise TaskError("the same task is given twice")
    specs = parse_systems(cfg.systems)
    names = [s.name for s in specs]
    baseline = cfg.baseline or names[0]
    if baseline not in names:
        raise SystemSpecError(f"--baseline {baseline!r} is not one of the systems ({', '.join(names)})")
    published = [load_published(p) for p in cfg.published]
    plan = [(bench, _directions(bench, cfg)) for bench in benches]
    if not any(directions for _, directions in plan):
        raise TaskError("nothing to score: no task has any of the directions asked")
    systems = [make_system(spec, cfg.generation) for spec in specs]
    for system in systems:  # files of outputs checked now, not after the systems before them have generated
        if isinstance(system, FileSystem):
            for bench, directions in plan:
                for d in directions:
                    system.outputs(bench.name, d.source_language, d.target_language, d.total or len(d.sources),
                                   len(d.sources))
    settings = dataclasses.asdict(cfg.generation)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for bench, directions in plan:
        for d in directions:
            write_lines(out / "outputs" / bench.name / f"{d.name}.src", d.sources)
            write_lines(out / "outputs" / bench.name / f"{d.name}.ref", d.references)

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    outputs: dict[tuple[str, str, str], list[str]] = {}  # (task, system, direction) -> outputs as scored
    system_info: dict[str, dict[str, Any]] = {}
    for spec, system in zip(specs, systems, strict=True):
        info = system.info()
        key = system_key(info, settings)
        system_info[spec.name] = {"spec": str(spec), **info, "cache_key": key}
        try:
            for bench, directions in plan:
                for d in directions:
                    hyps = _system_outputs(system, bench, d, out / "cache" / spec.name / key / bench.name)
                    if hyps is None:
                        skipped.append({"task": bench.name, "system": spec.name, "direction": d.name,
                                        "reason": "no output file for this direction"})
                        log.warning("system %s has no outputs for %s %s; skipped", spec.name, bench.name, d.name)
                        continue
                    hyps = [one_line(h) for h in hyps]
                    write_lines(out / "outputs" / bench.name / f"{spec.name}.{d.name}.hyp", hyps)
                    outputs[(bench.name, spec.name, d.name)] = hyps
                    metrics = score(hyps, d.references, metrics=METRICS, bootstrap=cfg.bootstrap)
                    flags = output_flags(d.sources, hyps)
                    log.info("%s %s %s (n=%d): %s%s", spec.name, bench.name, d.name, len(hyps),
                             ", ".join(f"{k} {v['score']:.2f}" for k, v in metrics.items()),
                             f" [flagged: {', '.join(flags['flags'])}]" if flags["flags"] else "")
                    results.append({"task": bench.name, "system": spec.name, "direction": d.name,
                                    "source_language": d.source_language, "target_language": d.target_language,
                                    "n": len(hyps), "total": d.total or len(hyps), "metrics": metrics, "flags": flags})
        finally:
            system.close()

    paired = []
    if cfg.bootstrap > 1:
        for bench, directions in plan:
            for d in directions:
                base = outputs.get((bench.name, baseline, d.name))
                if base is None or len(d.references) < 2:
                    continue
                for name in names:
                    if name == baseline or (bench.name, name, d.name) not in outputs:
                        continue
                    paired.append({"task": bench.name, "direction": d.name, "baseline_system": baseline,
                                   "compared_system": name,
                                   **paired_test(base, outputs[(bench.name, name, d.name)], d.references,
                                                 n_samples=cfg.bootstrap)})
    report = {
        "format": RESULTS_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": [describe(b) for b in benches],
        "data": cfg.data,
        "limit": cfg.limit,
        "systems": system_info,
        "baseline": baseline,
        "generation": {**settings, "decoding": "greedy"},
        "scoring": {"primary": "chrf++", "bootstrap": cfg.bootstrap,
                    "outputs": "as produced, made one line; references as published; no normalization"},
        "results": results,
        "paired": paired,
        "skipped": skipped,
        "published": published,
    }
    path = out / "results.json"
    write_json(path, report)
    write_results(report, out)
    log.info("wrote %s, results.md, results.csv, results.png", path)
    return path


def _system_outputs(system: Any, bench: Benchmark, d: Direction, cache_dir: Path) -> list[str] | None:
    """One direction's outputs: read (file systems), or from the cache plus what is still missing."""
    if isinstance(system, FileSystem):
        return system.outputs(bench.name, d.source_language, d.target_language, d.total or len(d.sources),
                              len(d.sources))
    with OutputCache(cache_dir / f"{d.name}.jsonl", d.sources) as cache:
        todo = cache.missing()
        if todo and len(todo) < len(d.sources):
            log.info("%s %s %s: %d of %d segments cached, translating the other %d", system.name, bench.name,
                     d.name, len(d.sources) - len(todo), len(d.sources), len(todo))
        if todo:
            if hasattr(system, "open"):
                system.open()
            bar = progress_bar(f"{system.name} {bench.name} {d.name}", len(todo))

            def emit(index: int, output: str) -> None:
                cache.add(index, output)
                bar.update(1)

            try:
                system.translate(d.source_language, d.target_language, todo, emit)
            except Exception as err:
                done = len(d.sources) - len(cache.missing())
                raise SuiteError(f"system {system.name} failed on {bench.name} {d.name} after {done} of "
                                 f"{len(d.sources)} segments ({type(err).__name__}: {err}); the finished outputs are "
                                 "kept: run the same command again to resume") from err
            finally:
                bar.close()
        missing = cache.missing()
        if missing:
            raise SuiteError(f"system {system.name} returned no output for {len(missing)} segment(s) of "
                             f"{bench.name} {d.name}")
        return cache.ordered()
