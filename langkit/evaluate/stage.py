"""The eval stage on a run: its own held-back split, the run's adapter against its base model."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from langkit.config import RunConfig
from langkit.evaluate.generation import to_device, translate
from langkit.evaluate.human import Translation, write_human_eval
from langkit.evaluate.metrics import describe_flags, output_flags, paired_test, score
from langkit.evaluate.report import report_markdown
from langkit.evaluate.tasks import Direction, Task, default_task, load_directions, one_line, write_lines
from langkit.harmony import STOP_TOKENS
from langkit.rundir import RunDir
from langkit.utils import atomic_write_text, get_logger, read_json, sha256_file, write_json

log = get_logger("evaluate")


def evaluate_system(
    system: str,
    model: Any,
    tokenizer: Any,
    directions: Sequence[Direction],
    out_dir: Path,
    *,
    max_new_tokens: int,
    batch_size: int,
    task: Task,
    normalize: Callable[[str, str], str] | None = None,
) -> tuple[list[dict[str, Any]], list[Translation]]:
    """Translate every direction with one system, write its outputs/ files, score them. ``normalize``
    ((text, language) -> text) is applied to the outputs before scoring: the references went through the
    corpus stage's normalization, and an output should not lose chrF for an apostrophe variant or a
    decomposed accent that the reference lost there. ``.hyp`` holds what was scored (so that sacrebleu's
    command line gives the same scores), ``.gen`` the outputs as the model wrote them, which judges see."""
    results, translations = [], []
    for d in directions:
        hyps = [one_line(h) for h in translate(model, tokenizer, d.source_language, d.target_language, d.sources,
                                               max_new_tokens=max_new_tokens, batch_size=batch_size)]
        scored = [normalize(h, d.target_language) for h in hyps] if normalize else hyps
        stem = out_dir / "outputs" / f"{system}.{d.name}"
        for suffix, lines in (("src", d.sources), ("gen", hyps), ("hyp", scored), ("ref", d.references)):
            write_lines(stem.with_name(f"{stem.name}.{suffix}"), lines)
        metrics = score(scored, d.references, metrics=task.metrics, bootstrap=task.bootstrap)
        flags = output_flags(d.sources, hyps)
        if flags["flags"]:
            log.warning("%s %s: %s", system, d.name, describe_flags(flags, len(hyps)))
        log.info("%s %s (n=%d): %s", system, d.name, len(hyps),
                 ", ".join(f"{k} {v['score']:.2f}" for k, v in metrics.items()))
        results.append({"system": system, "direction": d.name, "source_language": d.source_language,
                        "target_language": d.target_language, "n": len(hyps), "metrics": metrics, "flags": flags})
        translations += [Translation(system, d.name, d.source_language, d.target_language, i, s, h, r, scored=c)
                         for i, s, h, r, c in zip(d.test_ids, d.sources, hyps, d.references, scored, strict=True)]
    return results, translations



def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _corpus_normalization(run_dir: RunDir, cfg: RunConfig) -> Any:
    """The normalization settings the corpus stage built the references with (``corpus/stats.json`` records
    them), else the config's: outputs must go through the same rules as their references."""
    from langkit.config import NormalizeConfig

    stats = run_dir.corpus / "stats.json"
    recorded = (read_json(stats).get("steps") or {}).get("normalize") if stats.is_file() else None
    if not isinstance(recorded, dict):
        return cfg.corpus.normalize
    known = {f.name for f in dataclasses.fields(NormalizeConfig)}
    return NormalizeConfig(**{k: v for k, v in recorded.items() if k in known})


def run(cfg: RunConfig, run_dir: RunDir, task: Task | None = None) -> Path:
    """The eval stage: translate the test split with each system, score, write the reports and the
    blinded human-evaluation sheet into ``run_dir.eval``. Returns that folder."""
    task = task or default_task()
    split = run_dir.require(run_dir.split(task.split), "corpus")
    run_dir.require(run_dir.adapter_weights, "train")
    run_dir.require(run_dir.tokenizer_file, "tokenizer")
    directions = load_directions(split, cfg.languages, cfg.eval.max_items, task)
    if not directions:
        raise ValueError(f"{split} holds no aligned pairs for {', '.join(cfg.languages)}: nothing to evaluate")

    def load_langkit() -> tuple[Any, Any]:
        from langkit.train import load_adapted_model  # lazily: train.py pulls in the training stack

        return load_adapted_model(run_dir, cfg)  # type: ignore[no-any-return]

    def load_base() -> tuple[Any, Any]:
        from langkit.models import load_base_model
        from langkit.tokenizer import load_base_tokenizer

        return load_base_model(cfg.train.model, cfg.train.dtype, seed=cfg.train.seed), load_base_tokenizer(cfg.tokenizer.base)

    systems: list[tuple[str, Callable[[], tuple[Any, Any]]]] = [("langkit", load_langkit)]
    if cfg.eval.compare_base:
        systems.append(("base", load_base))

    normalize_config = _corpus_normalization(run_dir, cfg)

    def normalize_output(text: str, language: str) -> str:
        from langkit.corpus.normalize import normalize_text  # the rules the references went through

        return normalize_text(text, language, normalize_config)[0]

    out_dir = run_dir.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    results, translations = [], []
    for system, load in systems:
        log.info("evaluating %s on %d direction(s)", system, len(directions))
        model, tokenizer = load()
        model = to_device(model)
        r, t = evaluate_system(system, model, tokenizer, directions, out_dir, max_new_tokens=cfg.eval.max_new_tokens,
                               batch_size=cfg.eval.batch_size, task=task, normalize=normalize_output)
        results += r
        translations += t
        del model, tokenizer  # one system in memory at a time
        gc.collect()

    # langkit against the base model on the same segments, direction by direction (the outputs as scored).
    paired = []
    if cfg.eval.compare_base and task.bootstrap > 1:
        for d in directions:
            if len(d.references) < 2:
                continue  # one segment: every resample is the same
            base, langkit = ([t.scored for t in translations if t.system == system and t.direction == d.name]
                             for system in ("base", "langkit"))
            paired.append({"direction": d.name, "baseline_system": "base", "compared_system": "langkit",
                           **paired_test(base, langkit, d.references, n_samples=task.bootstrap)})

    report = {
        "model": cfg.train.model,
        "adapter": _rel(run_dir.adapter, run_dir.root),
        # what was scored, so that publishing can tell these scores from a later adapter's or tokenizer's
        "adapter_sha256": sha256_file(run_dir.adapter_weights),
        "tokenizer_sha256": sha256_file(run_dir.tokenizer_file),
        "test_set": _rel(split, run_dir.root),
        "results": results,
        "paired": paired,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "languages": list(cfg.languages),
        "systems": {
            "langkit": {"model": cfg.train.model, "adapter": _rel(run_dir.adapter, run_dir.root),
                        "tokenizer": _rel(run_dir.tokenizer, run_dir.root)},
            **({"base": {"model": cfg.train.model, "adapter": None, "tokenizer": cfg.tokenizer.base}}
               if cfg.eval.compare_base else {}),
        },
        "scoring": {"outputs": "normalized by the corpus stage's rules for the target language, as the references "
                               "are: outputs/*.hyp hold them as scored, outputs/*.gen as generated"},
        "generation": {"decoding": "greedy", "max_new_tokens": cfg.eval.max_new_tokens,
                       "batch_size": cfg.eval.batch_size, "stop_tokens": list(STOP_TOKENS), "max_items": cfg.eval.max_items},
        "task": dataclasses.asdict(task),
    }
    write_json(run_dir.report, report)
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    write_human_eval(translations, out_dir, seed=cfg.eval.seed)
    log.info("wrote %s, report.md and human_eval.csv/.xlsx (%d items)", run_dir.report, len(translations))
    return out_dir
