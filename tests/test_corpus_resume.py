"""Scale and faults of the corpus build: a killed build resumes to the same bytes, the output does not
depend on the number of worker processes, and one source at a time (``--only-source``) then a merge
gives the same corpus."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from langkit.config import RunConfig, config_from_dict
from langkit.corpus import build_corpus
from langkit.corpus.build import CRASH_ENV, WORK_DIR

WORDS = "ñaata waa dëkk bi ak jàng lekk naan xam dem ñëw ci ngir moo ma nga mu ñu yow man seen suñu".split()
FRENCH = "le la les un une de du et est dans pour avec sur pas plus tout mais".split()


def _line(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))


def make_sources(folder: Path, lines: int = 1500) -> list[dict[str, Any]]:
    """Three generated sources in two formats and two languages, with exact duplicates, phone
    numbers and French lines mixed in, so every per-record step and the dedup have work."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    text = []
    for i in range(lines):
        r = rng.random()
        if r < 0.05 and text:
            text.append(rng.choice(text))  # exact duplicate
        elif r < 0.08:
            text.append(f"{_line(rng, WORDS)} +221 77 123 45 {i % 90 + 10:02d}")
        elif r < 0.1:
            text.append(_line(rng, FRENCH))
        else:
            text.append(_line(rng, WORDS))
    (folder / "wol.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    rows = [f"{i}\t{_line(rng, WORDS)}\t{_line(rng, FRENCH)}" for i in range(lines)]
    (folder / "wol.tsv").write_text("id\twol_Latn\tfra_Latn\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (folder / "swh.txt").write_text("\n".join(f"habari ya {_line(rng, WORDS)}" for _ in range(lines)) + "\n")
    return [
        {"path": str(folder / "wol.txt"), "format": "text", "language": "wol_Latn", "name": "wol-text",
         "license": "CC-BY-4.0"},
        {"path": str(folder / "wol.tsv"), "format": "tsv", "language": "wol_Latn", "name": "wol-pairs",
         "license": "CC-BY-4.0", "text_field": "wol_Latn", "pivot_field": "fra_Latn", "pivot_language": "fra_Latn"},
        {"path": str(folder / "swh.txt"), "format": "text", "language": "swh_Latn", "name": "swh-text",
         "license": "CC-BY-4.0"},
    ]  # fmt: skip


def write_config(path: Path, sources: list[dict[str, Any]], workers: int = 1) -> Path:
    data = {"languages": ["wol_Latn", "swh_Latn"], "corpus": {"sources": sources, "workers": workers}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def cli(
    config: Path, out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "langkit", "corpus", "build", str(config), "--out", str(out), *args]
    full_env = {**os.environ, "LANGKIT_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    """Every output file of a corpus folder, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    assert "dataset/train.parquet" in fa and "stats.json" in fa
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs"


def test_crashed_build_resumes_to_identical_output(tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", make_sources(tmp_path / "data"))
    ref = cli(config, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    # The test hook exits like a SIGKILL right after the first source's shard is renamed into place.
    crashed = cli(config, tmp_path / "b", env={CRASH_ENV: "1"})
    assert crashed.returncode == 137, crashed.stderr
    corpus = tmp_path / "b" / "corpus"
    shards = sorted((corpus / WORK_DIR).glob("*.arrow"))
    assert len(shards) == 1 and shards[0].name.startswith("wol-text-")
    assert not (corpus / "dataset").exists() and not (corpus / "stats.json").exists()
    # The merge starts on the first shard while the others are written, so the kill may leave its
    # temporary files (dropped.jsonl's...): never under a final name, and removed by the rerun.
    assert not (corpus / "dropped.jsonl").exists()

    resumed = cli(config, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert "reusing 1 finished source shard" in resumed.stderr
    assert not (corpus / WORK_DIR).exists()
    assert not [p for p in corpus.rglob("*") if p.name.endswith(".tmp")]
    assert_same(tmp_path / "ref" / "corpus", corpus)


def _marked(marker: str) -> list[int]:
    """The processes (of this user) whose environment carries LANGKIT_TEST_MARK=marker."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("LANGKIT_TEST_MARK") == marker:
                found.append(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_crashed_parallel_build_leaves_no_process_and_resumes(tmp_path: Path) -> None:
    # Two workers: the languages are merged in processes of their own, waiting for their shards. Killed
    # after the first shard, the build leaves no process behind (they notice their parent is gone),
    # and the rerun gives the uninterrupted build's bytes.
    config = write_config(tmp_path / "run.yaml", make_sources(tmp_path / "data"), workers=2)
    ref = cli(config, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    crashed = cli(config, tmp_path / "b", env={CRASH_ENV: "1", "LANGKIT_TEST_MARK": marker})
    assert crashed.returncode == 137, crashed.stderr
    deadline = time.monotonic() + 60
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _marked(marker)
    resumed = cli(config, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(tmp_path / "ref" / "corpus", tmp_path / "b" / "corpus")


def test_sigkilled_build_resumes_to_identical_output(tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", make_sources(tmp_path / "data", lines=4000))
    ref = cli(config, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    cmd = [sys.executable, "-m", "langkit", "corpus", "build", str(config), "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "b" / "corpus" / WORK_DIR
    deadline = time.monotonic() + 120
    # Kill it as soon as the first shard is whole (or, on a very fast machine, whenever it is).
    while proc.poll() is None and time.monotonic() < deadline and not list(work.glob("*.arrow")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in (tmp_path / "b").rglob("*"):
        # A file under its final name is whole: only temporary names may be partial.
        if (
            path.is_file()
            and path.suffix in (".parquet", ".jsonl", ".json")
            and not path.name.startswith(".")
        ):
            if path.suffix == ".parquet":
                assert path.read_bytes().endswith(b"PAR1")
    resumed = cli(config, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(tmp_path / "ref" / "corpus", tmp_path / "b" / "corpus")


def test_output_does_not_depend_on_workers(tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "data", lines=600)
    outs = []
    for workers in (1, 3):
        cfg = config_from_dict({"languages": ["wol_Latn", "swh_Latn"], "corpus": {"sources": sources}})
        assert isinstance(cfg, RunConfig)
        c = cfg.corpus
        out = tmp_path / f"w{workers}"
        build_corpus(c.sources, cfg.languages, out, c.dev_size, c.test_size, c.seed, workers=workers)
        outs.append(out)
    assert_same(outs[0], outs[1])


def test_one_job_per_source_then_merge(tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "data", lines=400)
    config = write_config(tmp_path / "run.yaml", sources)
    ref = cli(config, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    for source in sources:  # what a Slurm array would run, one task per source
        job = cli(config, tmp_path / "b", "--only-source", source["name"])
        assert job.returncode == 0, job.stderr
    assert len(list((tmp_path / "b" / "corpus" / WORK_DIR).glob("*.arrow"))) == 3
    assert not (tmp_path / "b" / "corpus" / "stats.json").exists()
    merged = cli(config, tmp_path / "b")
    assert merged.returncode == 0, merged.stderr
    assert "reusing 3 finished source shard" in merged.stderr
    assert_same(tmp_path / "ref" / "corpus", tmp_path / "b" / "corpus")


def test_a_damaged_shard_fails_the_parallel_merge_with_its_name(tmp_path: Path) -> None:
    # The shards are written one job per source, then one .sig file is cut short: the 2-worker build
    # (its languages merged in processes of their own) fails with a message naming the file.
    sources = make_sources(tmp_path / "data", lines=400)
    config = write_config(tmp_path / "run.yaml", sources, workers=2)
    for source in sources:
        job = cli(config, tmp_path / "b", "--only-source", source["name"])
        assert job.returncode == 0, job.stderr
    sig = sorted((tmp_path / "b" / "corpus" / WORK_DIR).glob("wol-text-*.sig"))[0]
    sig.write_bytes(sig.read_bytes()[:1000])
    merged = cli(config, tmp_path / "b")
    assert merged.returncode != 0
    assert sig.name in merged.stderr and "delete both and build again" in merged.stderr
    assert not (tmp_path / "b" / "corpus" / "stats.json").exists()
