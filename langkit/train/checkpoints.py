"""Checkpoints of the train stage: the adapter and the trainer state, written atomically, keep-last-N.

A checkpoint is a folder ``checkpoints/step-NNNNNN/`` holding the adapter (safetensors, as
``PeftModel.save_pretrained`` writes it), ``trainer_state.pt`` (optimizer, scheduler, RNG states, the data
stream's position, counters) and ``settings.json`` (what the steps so far were trained with: the train keys
that shape the result, the languages, and the SHA-256 of the train split and tokenizer; a run resumes from
it only with the same settings, see :func:`settings_changes`). It is written under a hidden temporary name and renamed into place, so a
folder under its final name is always whole; a crashed run leaves at most a hidden folder, removed on the
next start. Only the main process writes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langkit.config import FREE_TRAIN_KEYS as FREE_KEYS
from langkit.rundir import ADAPTER_WEIGHTS
from langkit.utils import replace_dir, temp_dir

CHECKPOINT_PREFIX = "step-"
TRAINER_STATE = "trainer_state.pt"
SETTINGS_FILE = "settings.json"


def rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # Plain lists: torch.load(weights_only=True) refuses numpy arrays.
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_adapter(model: Any, dest: Path, extra: dict[str, Any] | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save the adapter (safetensors) into ``dest`` atomically: into a temp folder, then renamed.
    ``extra`` objects are written next to it under their key as file name (``torch.save``, or JSON for a
    ``.json`` name). ``state_dict``: the
    trainable tensors gathered from sharded training (FSDP, ZeRO-3), under the PeftModel's names; without
    it, the model's own tensors are saved."""
    tmp = temp_dir(dest)
    # The new-token rows live in the adapter (trainable tokens); the resized embedding matrices are rebuilt
    # by resize_for_new_tokens on load, so never save the whole embeddings ("auto" would, at 2 x V x H).
    kwargs: dict[str, Any] = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False, **kwargs)
    _stable_adapter_config(model, tmp)
    for name, obj in (extra or {}).items():
        if name.endswith(".json"):  # small facts a person (or a rerun) reads without loading torch state
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
        else:
            torch.save(obj, tmp / name)
    return replace_dir(tmp, dest)


def _stable_adapter_config(model: Any, folder: Path) -> None:
    """Rewrite ``adapter_config.json`` so that identical runs write identical bytes: PEFT holds some fields
    (``target_modules``, ``exclude_modules``) as sets and writes them in set order, which changes with each
    process's string hashing (PYTHONHASHSEED). Those lists are sorted; every other list keeps its order
    (``target_parameters``' order decides the saved keys)."""
    import dataclasses

    path = folder / "adapter_config.json"
    configs = getattr(model, "peft_config", None)
    if not path.is_file() or not isinstance(configs, dict) or "default" not in configs:
        return
    unordered = [f.name for f in dataclasses.fields(configs["default"])
                 if isinstance(getattr(configs["default"], f.name), (set, frozenset))]
    data = json.loads(path.read_text("utf-8"))
    for key in unordered:
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key], key=str)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), "utf-8")


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as (step, path), oldest first."""
    found = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}*") if folder.is_dir() else []:
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / TRAINER_STATE).is_file() and (path / ADAPTER_WEIGHTS).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def prune_checkpoints(folder: Path, keep: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(path)


def load_checkpoint(model: Any, path: Path) -> dict[str, Any]:
    """Load the adapter of checkpoint ``path`` into ``model`` (a PeftModel, not yet wrapped for distributed
    training) and return its trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(p.device for p in model.parameters() if p.requires_grad)
    try:
        result: Any = set_peft_model_state_dict(model, load_file(str(path / ADAPTER_WEIGHTS), device=str(device)))
    except RuntimeError as err:  # shape mismatch: another lora_r, another vocabulary
        raise ValueError(f"{path} does not fit this model ({err}); set train.resume=false to start over") from None
    missing = [k for k in result.missing_keys if "lora_" in k or "trainable_tokens" in k]
    if result.unexpected_keys or missing:
        raise ValueError(
            f"{path} does not match this model (unexpected keys {result.unexpected_keys[:3]}, missing {missing[:3]});"
            " set train.resume=false to start over"
        )
    state: dict[str, Any] = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    return state


def read_log(path: Path, up_to: int) -> list[dict[str, Any]]:
    """The rows of ``train_log.jsonl`` up to step ``up_to``."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= up_to]


# --------------------------------------------------------------------------------------------------
# The settings a checkpoint was trained with, and what a rerun changes
# --------------------------------------------------------------------------------------------------


def train_settings(train: Any, languages: list[str], processes: int, inputs: dict[str, str]) -> dict[str, Any]:
    """What shapes the steps of a run, as flat dotted keys: every ``train.`` key but :data:`FREE_KEYS`
    (``batch_size`` as ``train.global_batch_size``), ``languages``, and ``inputs`` (a file's name -> its
    SHA-256: the train split and the tokenizer the examples were encoded with)."""
    import dataclasses

    settings: dict[str, Any] = {"languages": list(languages)}
    for key, value in sorted(dataclasses.asdict(train).items()):
        if key in FREE_KEYS:
            continue
        if key == "batch_size":
            key, value = "global_batch_size", value * processes
        settings[f"train.{key}"] = value
    settings.update(inputs)
    # Through JSON and back, so that what is compared is what settings.json holds (tuples become lists...).
    return dict(json.loads(json.dumps(settings)))


def read_settings(checkpoint: Path) -> dict[str, Any] | None:
    """``settings.json`` of a checkpoint: {"settings": ..., "changes": [...]}; None for a checkpoint written
    before langkit recorded them."""
    path = checkpoint / SETTINGS_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return data


def settings_changes(before: dict[str, Any], now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The keys whose values differ: key -> {"checkpoint": value there, "now": value now} (absent: None)."""
    return {key: {"checkpoint": before.get(key), "now": now.get(key)}
            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)}


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    def short(value: Any) -> str:
        if isinstance(value, str) and len(value) == 64:  # a SHA-256: its first 12 digits tell them apart
            return f"sha256 {value[:12]}..."
        return json.dumps(value, ensure_ascii=False)

    return "; ".join(f"{key}: {short(c['checkpoint'])} in the checkpoint, {short(c['now'])} now"
                     for key, c in changes.items())
