"""The corpus build on an existing engine: the same config run with ``corpus.executor: local`` and on
datatrove's executors (its LocalPipelineExecutor; and its SlurmPipelineExecutor's per-task code,
run here without a cluster) writes byte-identical outputs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

from langkit.config import RunConfig, config_from_dict
from langkit.corpus.build import WORK_DIR
from tests.test_corpus_resume import assert_same, cli, make_sources, write_config

pytest.importorskip("datatrove")


def test_datatrove_local_executor_gives_the_same_corpus(tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", make_sources(tmp_path / "data", lines=500), workers=2)
    local = cli(config, tmp_path / "local")
    assert local.returncode == 0, local.stderr
    trove = cli(config, tmp_path / "trove", "--executor", "datatrove")
    assert trove.returncode == 0, trove.stderr
    assert "langkit corpus shards" in trove.stderr  # datatrove's own log of the pipeline it ran
    assert not (tmp_path / "trove" / "corpus" / WORK_DIR).exists()
    assert_same(tmp_path / "local" / "corpus", tmp_path / "trove" / "corpus")


def test_slurm_executors_run_task_by_task_give_the_same_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langkit.corpus.build import build_corpus
    from langkit.corpus.executors import CorpusMerge, CorpusShards, slurm_executors

    sources = make_sources(tmp_path / "data", lines=300)
    cfg = config_from_dict(
        {"languages": ["wol_Latn", "swh_Latn"], "corpus": {"sources": sources, "workers": 1}}
    )
    assert isinstance(cfg, RunConfig)
    c = cfg.corpus
    build_corpus(c.sources, cfg.languages, tmp_path / "ref", c.dev_size, c.test_size, c.seed, workers=1)

    shards, merge = slurm_executors(
        cfg, tmp_path / "slurm", tmp_path / "logs", partition="cpu", time="01:00:00", cpus_per_task=2
    )
    assert shards.tasks == len(sources) and isinstance(shards.pipeline[0], CorpusShards)
    assert merge.tasks == 1 and merge.depends is shards and isinstance(merge.pipeline[0], CorpusMerge)
    # What each task of the job array, then the merge job, runs on its node (without sbatch); datatrove
    # reads the node list Slurm sets (expanded by scontrol), and sets DATATROVE_* variables (restored after the test).
    import datatrove.executor.slurm as slurm

    monkeypatch.setenv("SLURM_NODELIST", "node1")
    monkeypatch.setattr(slurm, "expand_slurm_nodelist", lambda nodelist: [nodelist])  # scontrol's job
    for name in [k for k in os.environ if k.startswith("DATATROVE_")]:
        monkeypatch.setenv(name, os.environ[name])
    for name in ("NODE_RANK", "EXECUTOR", "NODE_IPS", "CPUS_PER_TASK", "MEM_PER_CPU", "GPUS_ON_NODE"):
        monkeypatch.setenv(f"DATATROVE_{name}", "")
    for rank in range(shards.world_size):
        shards._run_for_rank(rank)
    assert len(list((tmp_path / "slurm" / WORK_DIR).glob("*.arrow"))) == len(sources)
    merge._run_for_rank(0)
    assert_same(tmp_path / "ref", tmp_path / "slurm")


def test_unknown_executor_is_a_config_error() -> None:
    from langkit.config import ConfigError

    with pytest.raises(ConfigError, match="corpus.executor"):
        config_from_dict({"languages": ["wol_Latn"], "corpus": {"executor": "spark"}})
