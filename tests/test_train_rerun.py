"""Reruns of the train stage never claim what did not happen: a rerun whose settings differ from those its
checkpoint was trained with is refused before anything is written (config.yaml, metadata.json and the adapter
keep describing the training that ran), unless it says it means it (``train.resume_changed``), and then the
change is recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from datasets import Dataset

from langkit import pipeline
from langkit import train as train_mod
from langkit.cli import main
from langkit.config import save_config
from langkit.rundir import RunDir
from tests.test_train import _config, _make_run_dir, _records, _run_until_crash

SMALL = dict(max_steps=4, save_every=2, keep_checkpoints=1, max_length=64)


def _snapshot(run_dir: RunDir) -> dict[str, bytes]:
    files = [run_dir.config, run_dir.train / "metadata.json", run_dir.adapter / "adapter_model.safetensors",
             run_dir.train / "train_log.jsonl"]
    return {p.name: p.read_bytes() for p in files}


def _cli_train(tmp_path: Path, run_dir: RunDir, *overrides: str, **train: Any) -> int:
    config = tmp_path / "config.yaml"
    save_config(_config(**{**SMALL, **train}), config)
    return main(["-q", "train", str(config), "--out", str(run_dir.root), *overrides])


def test_rerun_of_a_finished_run_with_other_settings_is_refused(extended_tokenizer, tmp_path, capsys):
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    assert _cli_train(tmp_path, run_dir) == 0
    before = _snapshot(run_dir)
    assert yaml.safe_load(run_dir.config.read_text())["train"]["learning_rate"] == 1e-2
    capsys.readouterr()

    assert _cli_train(tmp_path, run_dir, "train.learning_rate=0.5", "train.lora_r=2") == 2
    err = capsys.readouterr().err
    assert "train.learning_rate: 0.01 in the checkpoint, 0.5 now" in err
    assert "train.lora_r: 4 in the checkpoint, 2 now" in err
    assert "train.resume=false" in err and "train.resume_changed=true" in err
    assert _snapshot(run_dir) == before  # config.yaml, metadata.json, adapter and log: as trained

    # Keys that only decide when and where things are written may change; the same settings rerun fine.
    assert _cli_train(tmp_path, run_dir, "train.save_every=1", "train.keep_checkpoints=3") == 0
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["learning_rate"] == 1e-2 and meta["resumed_from"] == 4 and meta["settings_changed"] == []

    # Asked on purpose, but the run is finished: no step would use the new settings, so still refused.
    assert _cli_train(tmp_path, run_dir, "train.learning_rate=0.5", "train.resume_changed=true") == 2
    assert "no step is left" in capsys.readouterr().err
    assert json.loads((run_dir.train / "metadata.json").read_text())["learning_rate"] == 1e-2

    # Starting over with the new settings is what train.resume=false does, and then they are the truth.
    assert _cli_train(tmp_path, run_dir, "train.learning_rate=0.5", "train.resume=false") == 0
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["learning_rate"] == 0.5 and meta["resumed_from"] is None
    assert yaml.safe_load(run_dir.config.read_text())["train"]["learning_rate"] == 0.5


def test_partial_run_resumes_with_changed_settings_only_on_purpose(extended_tokenizer, tmp_path, monkeypatch):
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    _run_until_crash(_config(**SMALL), run_dir, 3, monkeypatch)  # checkpoint of step 2, then a crash
    assert [p.name for p in run_dir.checkpoints.iterdir()] == ["step-000002"]
    log_before = (run_dir.train / "train_log.jsonl").read_bytes()

    with pytest.raises(train_mod.SettingsChanged, match=r"train\.warmup_steps: 2 in the checkpoint, 0 now"):
        pipeline.run_stage("train", _config(**SMALL, warmup_steps=0), run_dir.root)
    assert not run_dir.config.exists() and not (run_dir.train / "metadata.json").exists()
    assert (run_dir.train / "train_log.jsonl").read_bytes() == log_before

    pipeline.run_stage("train", _config(**SMALL, warmup_steps=0, resume_changed=True), run_dir.root)
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["resumed_from"] == 2 and meta["steps"] == 4
    assert yaml.safe_load(run_dir.config.read_text())["train"]["warmup_steps"] == 0
    assert meta["settings_changed"] == [
        {"step": 2, "changes": {"train.warmup_steps": {"checkpoint": 2, "now": 0}}}]
    # The record travels with the checkpoints: a later rerun with the same settings keeps it.
    pipeline.run_stage("train", _config(**SMALL, warmup_steps=0), run_dir.root)
    assert json.loads((run_dir.train / "metadata.json").read_text())["settings_changed"] == meta["settings_changed"]


def test_rerun_after_the_corpus_changed_is_refused(extended_tokenizer, tmp_path):
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    train_mod.run(_config(**SMALL), run_dir)
    Dataset.from_list(_records()[:-2]).to_parquet(str(run_dir.split("train")))  # the corpus was rebuilt
    with pytest.raises(train_mod.SettingsChanged, match=r"inputs\.train_split_sha256"):
        train_mod.run(_config(**SMALL), run_dir)


SAVE_ADAPTER = """
import sys
from peft import get_peft_model
from langkit.config import TrainConfig
from langkit.models import load_base_model
from langkit.train.checkpoints import save_adapter
from langkit.train.model import lora_config

train = TrainConfig(lora_r=4, lora_alpha=8, lora_expert_r=2)
model = get_peft_model(load_base_model("tiny", seed=0), lora_config(train, []))
save_adapter(model, __import__("pathlib").Path(sys.argv[1]))
"""


def test_adapter_config_is_byte_identical_between_identical_runs(tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    configs = []
    for seed in ("1", "2", "3"):  # string hashing, and so PEFT's set order, differs per process
        out = tmp_path / f"adapter-{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(repo))
        proc = subprocess.run([sys.executable, "-c", SAVE_ADAPTER, str(out)], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        configs.append((out / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1] == configs[2]
    data = json.loads(configs[0])
    assert data["target_modules"] == sorted(data["target_modules"])
    assert data["target_parameters"] == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]  # order kept


def test_a_key_newer_than_the_checkpoint_counts_only_off_its_default(tmp_path):
    from langkit.config import TrainConfig
    from langkit.train.checkpoints import SETTINGS_FILE, TRAINER_STATE, train_settings

    checkpoint = tmp_path / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    for name in (TRAINER_STATE, "adapter_model.safetensors"):
        (checkpoint / name).write_bytes(b"")
    now = train_settings(TrainConfig(max_steps=4), ["wol_Latn"], 1, {})
    older = {k: v for k, v in now.items() if k != "train.packing"}  # written before train.packing existed
    (checkpoint / SETTINGS_FILE).write_text(json.dumps({"settings": older, "changes": []}))
    assert train_mod.resume_check(TrainConfig(max_steps=4), checkpoint.parent, now) == []
    with pytest.raises(train_mod.SettingsChanged, match=r"train\.packing: null in the checkpoint, true now"):
        train_mod.resume_check(TrainConfig(max_steps=4, packing=True), checkpoint.parent,
                               train_settings(TrainConfig(max_steps=4, packing=True), ["wol_Latn"], 1, {}))


def test_a_new_run_directory_gets_its_config_at_once_an_old_one_only_after_a_stage(tmp_path):
    cfg = _config(**SMALL)
    fresh = pipeline.prepare_run_dir(cfg, tmp_path / "new")
    assert yaml.safe_load(fresh.config.read_text())["train"]["max_steps"] == 4  # marks it as a langkit run
    used = RunDir(tmp_path / "used")
    used.train.mkdir(parents=True)  # outputs of some earlier run, made with settings nobody recorded
    assert not pipeline.prepare_run_dir(cfg, used.root).config.exists()
    pipeline.record_config(cfg, fresh, "train")
    other = _config(**{**SMALL, "max_steps": 9})
    other.eval.max_items = 3
    pipeline.record_config(other, fresh, "eval")  # only the eval section (and top-level keys) change
    recorded = yaml.safe_load(fresh.config.read_text())
    assert recorded["train"]["max_steps"] == 4 and recorded["eval"]["max_items"] == 3
