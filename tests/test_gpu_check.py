"""scripts/gpu_check.py, run on CPU with the tiny model (the smoke form of the one GPU run), and its
bookkeeping when a cell runs out of memory or out of time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_on_cpu(gpu_check, tmp_path):
    out = tmp_path / "check.md"
    assert gpu_check.main(["--device", "cpu", "--model", "tiny", "--lengths", "64", "--equality-length", "64",
                           "--gen-batches", "1", "2", "--gen-new-tokens", "2", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    table = out.read_text()
    # Every path trained, on CPU flex through torch's reference backward.
    assert [(r["tokens"], r["path"], r["status"]) for r in report["training"]] == [
        (64, "flex", "ok"), (64, "langkit_sink", "ok"), (64, "eager", "ok")]
    assert all(r["tokens_per_s"] > 0 and r["peak_gib"] is None for r in report["training"])
    # Equality: every mask kind, flex and langkit_sink as close to float64 as eager itself.
    rows = report["attention_equality"]
    assert {r["kind"] for r in rows} == set(gpu_check.MASK_KINDS)
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["equal"] for r in rows if r["path"] != "eager")
    assert all(r["out"] < 1e-5 and r["dsinks"] < 1e-5 for r in rows)
    for r in report["model_equality"]:
        assert r["status"] == "ok" and r["loss_rel_diff"] < 1e-6 and r["grad_rel_diff"] < 1e-5
    assert [(r["batch"], r["status"], r["new_tokens"]) for r in report["generation"]] == [(1, "ok", 2), (2, "ok", 2)]
    for heading in ("## Equality at 64 tokens", "## Generation", "## Training", "| 64 | flex | ok |"):
        assert heading in table


def test_out_of_memory_and_time_are_reported_not_fatal(gpu_check, tmp_path, monkeypatch):
    model = SimpleNamespace(parameters=lambda: iter(()), zero_grad=lambda set_to_none=True: None)
    monkeypatch.setattr(gpu_check, "build", lambda *args: (model, SimpleNamespace(), []))
    clock = {"now": 0.0}
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock["now"])

    def fake_steps(model: Any, base: Any, path: str, length: int, steps: int, device: str, chunk: int) -> dict[str, Any]:
        if path == "eager" and length >= 128:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {length} GiB")
        step = {"flex": 1.0, "langkit_sink": 10.0}.get(path, 1.0) * length / 64
        clock["now"] += steps * step
        return {"status": "ok", "first_step_s": step, "step_s": step, "tokens_per_s": length / step,
                "peak_gib": None, "loss": 1.0}

    monkeypatch.setattr(gpu_check, "train_steps", fake_steps)
    out = tmp_path / "check.md"
    assert gpu_check.main(["--device", "cpu", "--lengths", "64", "128", "256", "--skip-equality", "--skip-generation",
                           "--budget-s", "200", "--out", str(out)]) == 0
    cells = {(r["tokens"], r["path"]): r["status"] for r in json.loads(out.with_suffix(".json").read_text())["training"]}
    assert cells[(128, "eager")] == "OOM"
    assert cells[(256, "eager")] == "skipped (OOM at 128)"  # not tried again past its OOM
    assert cells[(256, "flex")] == "ok"
    # langkit_sink took 10 s a step at 64 and 20 at 128: at 256, ~160 s predicted, past the 200 s budget.
    assert cells[(128, "langkit_sink")] == "ok"
    assert cells[(256, "langkit_sink")].startswith("skipped (time budget: ~160 s predicted")
    assert "| 128 | eager | OOM |" in out.read_text()
