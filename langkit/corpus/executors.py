"""The corpus build on datatrove's executors: its local process pool, or Slurm.

The unit of work of the corpus build's first phase is one source (:mod:`langkit.corpus.shards`), so
it maps onto a datatrove pipeline with one task per source: task ``rank`` writes the shard of source
number ``rank``. The second phase, the merge, is one datatrove task that depends on them. Both steps
call the same functions as the plain build, on the same shard files, so the output is byte for byte
the one of ``corpus.executor: local`` (tested on datatrove's LocalPipelineExecutor).

- ``corpus.executor: datatrove`` (or ``langkit corpus build --executor datatrove``) runs the shards on
  :class:`datatrove.executor.LocalPipelineExecutor` (``corpus.workers`` at a time), then merges in
  this process.
- On a Slurm cluster, :func:`slurm_executors` gives the two
  :class:`datatrove.executor.SlurmPipelineExecutor` s (a job array of one task per source, then the
  merge job depending on it); ``.run()`` on the merge submits both. The output folder must be on a
  file system all nodes share.

datatrove is an optional dependency (``pip install langkit[datatrove]``; the dev extra has it): this
module imports it, and the build imports this module only when ``executor`` is ``datatrove``. Its per-task logs and stats go to ``corpus/.work/datatrove/`` (local) or
the ``logging_dir`` given (Slurm). datatrove's own "skip completed tasks" is off: the shards, named by
a hash of what they depend on, are what says a source is done (a changed input or config must redo it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from langkit.config import RunConfig, SourceConfig
from langkit.corpus.readers import source_name
from langkit.corpus.shards import Steps, missing_shards, process_source

__all__ = ["CorpusMerge", "CorpusShards", "run_sources_datatrove", "slurm_executors"]


class CorpusShards(PipelineStep):  # type: ignore[misc]
    """A datatrove pipeline step whose task ``rank`` writes the shard of ``sources[rank]`` (unless that
    shard is already there). Run it with ``tasks=len(sources)``."""

    name = "langkit corpus shards"
    type = "langkit"

    def __init__(self, sources: list[SourceConfig], shards: dict[str, Path], steps: Steps) -> None:
        super().__init__()
        self.sources = sources
        self.shards = {name: str(path) for name, path in shards.items()}
        self.steps = steps

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        if world_size != len(self.sources):
            raise ValueError(f"run with tasks={len(self.sources)} (one per source), got {world_size}")
        source = self.sources[rank]
        shard = Path(self.shards[source_name(source)])
        if not shard.is_file():
            with self.track_time("source"):
                process_source(source, shard, self.steps)
        self.stat_update("sources")
        if data:
            yield from data


class CorpusMerge(PipelineStep):  # type: ignore[misc]
    """A datatrove pipeline step (one task) that runs the corpus build of ``cfg`` into ``out_dir`` on
    the finished shards: the merge."""

    name = "langkit corpus merge"
    type = "langkit"

    def __init__(self, cfg: RunConfig, out_dir: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dir = str(out_dir)

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        from langkit.corpus import build_from_config

        build_from_config(self.cfg, self.out_dir, workers=1, only_source="", executor="local")
        if data:
            yield from data


def run_sources_datatrove(
    sources: list[SourceConfig], shards: dict[str, Path], steps: Steps, workers: int, work_dir: Path
) -> None:
    """Write the missing shards with datatrove's LocalPipelineExecutor, ``workers`` tasks at a time
    (0: one per core), one task per source."""
    todo = missing_shards(sources, shards)
    if not todo:
        return
    n = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    executor = LocalPipelineExecutor(
        pipeline=[CorpusShards(todo, shards, steps)],
        tasks=len(todo),
        workers=n,
        logging_dir=str(work_dir / "datatrove"),
        skip_completed=False,
        start_method="spawn",
    )
    executor.run()
    missing = [source_name(s) for s in todo if not shards[source_name(s)].is_file()]
    if missing:  # pragma: no cover - a task failed; datatrove logged why
        raise RuntimeError(f"datatrove tasks did not write the shards of: {', '.join(missing)} "
                           f"(datatrove's logs: {work_dir / 'datatrove'})")


def slurm_executors(
    cfg: RunConfig, out_dir: str | Path, logging_dir: str | Path, **slurm: Any
) -> tuple[Any, Any]:
    """The corpus build as two datatrove Slurm executors: a job array with one task per source (the
    shards), and the merge (one task) that depends on it. ``slurm`` goes to both
    ``SlurmPipelineExecutor`` s (``partition``, ``time``, ``cpus_per_task``, ``mem_per_cpu_gb``,
    ``venv_path``, ``sbatch_args``...). ``out_dir`` is the corpus folder (``RUN/corpus``); it must be on a
    file system shared by the nodes. Call ``.run()`` on the second to submit both."""
    from langkit.corpus.build import plan_shards

    c = cfg.corpus
    out_dir = Path(out_dir)
    steps = Steps(c.normalize, c.pii, c.filters, c.langid, c.dedup)
    sources, shards = plan_shards(c.sources, cfg.languages, steps, out_dir, c.release, c.allow_restricted,
                                  c.allow_eval_sources)
    logging_dir = Path(logging_dir)
    shard_job = SlurmPipelineExecutor(
        pipeline=[CorpusShards(sources, shards, steps)],
        tasks=len(sources),
        job_name="langkit-corpus-shards",
        logging_dir=str(logging_dir / "shards"),
        skip_completed=False,
        **slurm,
    )
    merge_job = SlurmPipelineExecutor(
        pipeline=[CorpusMerge(cfg, out_dir)],
        tasks=1,
        job_name="langkit-corpus-merge",
        logging_dir=str(logging_dir / "merge"),
        depends=shard_job,
        skip_completed=False,
        **slurm,
    )
    return shard_job, merge_job
