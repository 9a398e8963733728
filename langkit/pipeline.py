"""All five stages in order, into one run directory: what ``langkit run`` and the notebook call."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from langkit.config import RunConfig
from langkit.rundir import STAGES, RunDir
from langkit.utils import atomic_write_text, get_logger, write_json

log = get_logger("pipeline")

# Stage name -> module holding its ``run(cfg, run_dir) -> Path`` front door. Imported on demand, so
# that ``langkit corpus`` does not pay for importing torch.
STAGE_MODULES = {
    "corpus": "langkit.corpus",
    "tokenizer": "langkit.tokenizer",
    "train": "langkit.train",
    "eval": "langkit.evaluate",
    "publish": "langkit.publish",
}


def stage_runner(stage: str) -> Callable[[RunConfig, RunDir], Path]:
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_MODULES)}")
    return importlib.import_module(STAGE_MODULES[stage]).run  # type: ignore[no-any-return]


def default_run_dir(cfg: RunConfig, base: str | Path = "runs") -> Path:
    return Path(base) / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(cfg: RunConfig, out: str | Path) -> RunDir:
    """Create the run directory. A new one (no stage output yet) gets ``cfg`` as its ``config.yaml`` at once,
    which marks it as a langkit run; in one that has outputs, ``config.yaml`` is only updated by
    :func:`record_config` once a stage has run, so a stage that refuses or fails leaves it saying what the
    outputs there were made with."""
    run_dir = RunDir(Path(out))
    run_dir.root.mkdir(parents=True, exist_ok=True)
    fresh = not run_dir.config.exists() and not any((run_dir.root / name).exists() for name in STAGES)
    if fresh and int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun, one process writes
        atomic_write_text(run_dir.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
    return run_dir


def record_config(cfg: RunConfig, run_dir: RunDir, stage: str) -> None:
    """After ``stage`` ran with ``cfg``: write its section of ``config.yaml`` (and the top-level keys), keeping
    the sections of the stages it did not run as the file had them, so that the file says what made each
    stage's outputs. Under ``accelerate launch`` / ``torchrun`` one process writes."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    new = cfg.to_dict()
    old: dict[str, Any] = {}
    if run_dir.config.is_file():
        loaded = yaml.safe_load(run_dir.config.read_text(encoding="utf-8"))
        old = loaded if isinstance(loaded, dict) else {}
    # The stage's own section is new; another stage's section stays as it was recorded (new for a stage
    # that has never been recorded, so that the file always reads as a whole config).
    sections = set(STAGE_MODULES)
    merged = {key: old[key] if key in sections and key != stage and key in old else value
              for key, value in new.items()}
    atomic_write_text(run_dir.config, yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))


def _check_processes(stages: Sequence[str]) -> None:
    """Under ``accelerate launch`` / ``torchrun`` (several processes) only the train stage knows how to share
    the work; every other stage would run once per process into the same folder."""
    others = [s for s in stages if s != "train"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and others:
        raise ValueError(f"stage(s) {', '.join(others)} cannot run under several processes (WORLD_SIZE="
                         f"{os.environ['WORLD_SIZE']}): launch only the train stage (langkit train, or langkit run "
                         "--stages train) and run the others in one process")


def run_stage(stage: str, cfg: RunConfig, out: str | Path) -> Path:
    """One stage into the run directory ``out`` (earlier stages' outputs must already be there)."""
    _check_processes([stage])
    run_dir = prepare_run_dir(cfg, out)
    start = time.perf_counter()
    log.info("stage %s -> %s", stage, run_dir.root)
    result = stage_runner(stage)(cfg, run_dir)
    record_config(cfg, run_dir, stage)
    log.info("stage %s done in %.1f s", stage, time.perf_counter() - start)
    return result


def run_pipeline(cfg: RunConfig, out: str | Path, stages: Sequence[str] = tuple(STAGE_MODULES)) -> RunDir:
    """Run ``stages`` (all five by default) in order into ``out``; write ``timings.json`` at the end."""
    _check_processes(stages)
    run_dir = prepare_run_dir(cfg, out)
    timings = {}
    for stage in stages:
        start = time.perf_counter()
        log.info("=== %s ===", stage)
        stage_runner(stage)(cfg, run_dir)
        record_config(cfg, run_dir, stage)
        timings[stage] = round(time.perf_counter() - start, 2)
        log.info("%s done in %.1f s", stage, timings[stage])
    if int(os.environ.get("RANK", "0")) == 0:  # one writer under accelerate launch / torchrun
        write_json(run_dir.root / "timings.json", timings)
    return run_dir
