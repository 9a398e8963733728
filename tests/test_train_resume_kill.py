"""A train run killed with SIGKILL part-way, started again, ends with the adapter of an uninterrupted run.

The killed run goes through the command line (``python -m langkit train CONFIG --out RUN``) in a
subprocess, so the kill is a real one: no exception handler, no ``finally``, whatever was being written
stays half written. The uninterrupted reference runs in this process (same code, one start-up less).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langkit import train as train_mod
from langkit.config import save_config
from langkit.train import list_checkpoints
from tests.test_train import _config, _make_run_dir

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 4
SAVE_EVERY = 2
WAIT_S = 180  # for the first checkpoint (import, model build and 2 steps take about 10 s here)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               LANGKIT_NO_PROGRESS="1", PYTHONPATH=str(REPO))
    return env


def _start(config: Path, run: Path, log: Path, *overrides: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "langkit", "train", str(config), "--out", str(run), *overrides],
                                cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.wait(timeout=WAIT_S) == 0, log.read_text(errors="replace")[-3000:]


def test_sigkilled_run_resumes_to_the_uninterrupted_adapter(extended_tokenizer, tmp_path):
    _, _, folder = extended_tokenizer
    config = tmp_path / "config.yaml"
    cfg = _config(max_steps=MAX_STEPS, save_every=SAVE_EVERY, keep_checkpoints=2)
    save_config(cfg, config)
    killed = _make_run_dir(tmp_path / "killed", folder)
    reference = _make_run_dir(tmp_path / "reference", folder)
    killed_log = tmp_path / "killed.log"

    proc = _start(config, killed.root, killed_log)
    deadline = time.monotonic() + WAIT_S
    try:
        # Checkpoints appear by a rename once complete: kill as soon as the first one is there.
        while not list_checkpoints(killed.checkpoints):
            assert proc.poll() is None, f"exited before its first checkpoint:\n{killed_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint after {WAIT_S} s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not killed.adapter.exists(), "the run finished before it was killed"
    last_saved = list_checkpoints(killed.checkpoints)[-1][0]
    assert SAVE_EVERY <= last_saved < MAX_STEPS

    # Started again (with the merged export on: the config flag through the command line), to the end.
    _finish(_start(config, killed.root, killed_log, "train.merged_export=true"), killed_log)
    train_mod.run(cfg, reference)

    meta = json.loads((killed.train / "metadata.json").read_text())
    assert meta["resumed_from"] == last_saved and meta["steps"] == MAX_STEPS
    assert f"resuming from {killed.checkpoints / f'step-{last_saved:06d}'}" in killed_log.read_text()
    assert json.loads((reference.train / "metadata.json").read_text())["resumed_from"] is None
    steps = [json.loads(line)["step"] for line in (killed.train / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, MAX_STEPS + 1))
    assert not any(p.name.startswith(".") for p in killed.checkpoints.iterdir())  # no half-written leftovers

    expected = load_file(str(reference.adapter / "adapter_model.safetensors"))
    got = load_file(str(killed.adapter / "adapter_model.safetensors"))
    assert got.keys() == expected.keys() and expected
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key
    assert (killed.merged / "model.safetensors").is_file() and not reference.merged.exists()
