"""Stage 3: LoRA fine-tuning of gpt-oss on the corpus, with the extended tokenizer.

The model is the base (``tiny`` or a gpt-oss checkpoint) with its embeddings and lm_head grown to the
extended vocabulary (new rows = mean of the base sub-token rows, see :func:`langkit.models.resize_for_new_tokens`),
then wrapped by PEFT:

* LoRA on the attention projections q/k/v/o and, with ``train.lora_experts``, on the fused expert
  weights (``target_parameters``; each expert gets rank r);
* the new tokens' rows of ``embed_tokens`` and ``lm_head`` trained through ``trainable_token_indices``
  (the adapter stores those full rows; every base row stays frozen).

Data: each aligned pair of the train split gives two harmony translation examples (pivot -> language and
language -> pivot, loss on the answer only); with ``train.monolingual`` each record's text also gives a
plain next-token example. A plain loop (AdamW, linear warm-up/decay, clipping at 1.0) cycles through the
seeded shuffled examples for ``train.max_steps`` steps, checkpointing atomically so that a resumed run
ends with the same adapter as an uninterrupted one.

Long sequences (``train.attention``, ``train.chunked_loss``, ``train.packing``): ``langkit_sink`` attention
(``langkit/attention.py``) never builds the [batch, heads, L, L] scores; the chunked loss
(``langkit/loss.py``) never builds the [tokens, vocab] logits of the batch; packing fills each row with
whole examples (position ids restart per example, attention stays within an example, and an example's
first token takes no loss from the one before it), and the share of non-padding tokens is logged.

Outputs, under ``RUN/train/``::

    adapter/                       adapter_model.safetensors + adapter_config.json (PeftModel.from_pretrained)
    checkpoints/step-NNNNNN/       the adapter + trainer_state.pt (optimizer, scheduler, RNG, data position)
    train_log.jsonl                one line per step: step, loss, lr, tokens, tokens_seen, grad_norm,
                                   examples, efficiency (non-padding share of the step's token slots)
    metadata.json                  what was trained, on how much, how long, and an energy estimate
    loss.png                       the loss curve
    merged/                        with ``train.merged_export``: the base with the adapter merged in and the
                                   tokenizer (AutoModelForCausalLM.from_pretrained), for serving with vLLM
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langkit.attention import EAGER, packed_eager_masks, set_attention
from langkit.config import RunConfig, TrainConfig
from langkit.harmony import IGNORE_INDEX, Example, encode_monolingual, encode_translation
from langkit.loss import causal_lm_loss
from langkit.models import DTYPES, TINY, gpt_oss_config, load_base_model, resize_for_new_tokens
from langkit.rundir import RunDir
from langkit.tokenizer import NewToken, load_new_tokens
from langkit.utils import atomic_write_text, get_logger, progress, write_json

log = get_logger("train")

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Keep this order: the adapter's saved keys depend on it (see ../shared/FACTS.md).
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
MAX_GRAD_NORM = 1.0
CHECKPOINT_PREFIX = "step-"
TRAINER_STATE = "trainer_state.pt"
TRAIN_LOG = "train_log.jsonl"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Assumed average draw while training, for the energy estimate (W): a desktop-class CPU package, and
# an H100/H200 SXM at its rated board power. Nothing is measured.
ASSUMED_POWER_W = {"cpu": 65.0, "cuda": 700.0, "mps": 30.0}


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def tokenizer_size(tokenizer: Any) -> int:
    """Rows a model needs for this tokenizer: one past its largest id (ids may have gaps)."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)


def check_vocabulary(tokenizer_ids: int, model_rows: int, new_tokens: Sequence[NewToken]) -> int:
    """Check that a tokenizer of ``tokenizer_ids`` ids fits a base model with ``model_rows`` embedding
    rows plus ``new_tokens`` (ids ``model_rows`` and up). Returns the vocabulary size to resize to."""
    ids = sorted(t.id for t in new_tokens)
    target = model_rows + len(ids)
    if ids and ids != list(range(model_rows, target)):
        raise ValueError(
            f"vocabulary mismatch: new_tokens.json gives ids {ids[0]}..{ids[-1]}, but the base model has "
            f"{model_rows} rows so new ids must be {model_rows}..{target - 1}; was the tokenizer extended "
            "from another base than train.model?"
        )
    if tokenizer_ids > target:
        raise ValueError(
            f"vocabulary mismatch: the tokenizer has {tokenizer_ids} ids but the base model has {model_rows} "
            f"rows and new_tokens.json adds {len(ids)}; ids {target}..{tokenizer_ids - 1} would have no "
            "embedding (is new_tokens.json from this tokenizer, and the tokenizer from this base model?)"
        )
    if ids and tokenizer_ids != target:
        raise ValueError(
            f"vocabulary mismatch: new_tokens.json adds ids up to {target - 1} but the tokenizer has only "
            f"{tokenizer_ids} ids (is new_tokens.json from this tokenizer?)"
        )
    return target


def base_vocab_size(name: str) -> int:
    """Embedding rows of base model ``name``, read from its config (no weights loaded)."""
    if name == TINY:
        return int(gpt_oss_config(TINY).vocab_size)
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(name).vocab_size)


def _resized_base(train: TrainConfig, tokenizer: Any, new_tokens: Sequence[NewToken]) -> tuple[Any, list[int]]:
    base = load_base_model(train.model, train.dtype, seed=train.seed)
    base.config.use_cache = False
    rows = base.get_input_embeddings().weight.shape[0]
    vocab_size = check_vocabulary(tokenizer_size(tokenizer), rows, new_tokens)
    new_ids = resize_for_new_tokens(base, vocab_size, new_tokens) if new_tokens else []
    return base, new_ids


def lora_config(train: TrainConfig, new_ids: Sequence[int]) -> Any:
    """The PEFT config of a run: LoRA on attention (and experts), trainable rows for the new tokens."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=0.0,  # required by target_parameters (expert LoRA)
        target_modules=list(ATTENTION_MODULES),
        target_parameters=list(EXPERT_PARAMETERS) if train.lora_experts else None,
        # Dict form: gpt-oss's lm_head is untied from embed_tokens and needs its own trainable rows.
        trainable_token_indices=(
            {"embed_tokens": list(new_ids), "lm_head": list(new_ids)}
            if train.train_new_embeddings and new_ids else None
        ),
    )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def prepare_model(train: TrainConfig, tokenizer: Any, new_tokens: Sequence[NewToken]) -> Any:
    """The base model resized for ``tokenizer`` and wrapped for training (a ``PeftModel``).

    Raises ``ValueError`` when the tokenizer does not fit the base model or nothing would be trained."""
    from peft import get_peft_model

    base, new_ids = _resized_base(train, tokenizer, new_tokens)
    set_attention(base, train.attention)  # training only: evaluation generates with transformers' eager
    if train.gradient_checkpointing:
        # Non-reentrant: PEFT's frozen embeddings give the first layer no input that requires grad.
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(train.seed)  # LoRA A initialisation
    model = get_peft_model(base, lora_config(train, new_ids))
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ValueError(f"{train.model}: the LoRA config matched no parameter, nothing to train")
    log.info("%s: %d trainable parameters of %d (%.3f%%); %d new token rows", train.model, trainable, total,
             100 * trainable / total, len(new_ids) if train.train_new_embeddings else 0)
    return model


def load_adapted_model(run_dir: RunDir, cfg: RunConfig, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained run: the extended tokenizer, the base resized for it, and the
    adapter from ``run_dir.adapter``, in eval mode (on ``device`` when given, else where it loaded)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir.require(run_dir.tokenizer, "tokenizer")))
    new_tokens = load_new_tokens(run_dir.require(run_dir.new_tokens, "tokenizer"))
    base, _ = _resized_base(cfg.train, tokenizer, new_tokens)
    model = PeftModel.from_pretrained(base, str(run_dir.require(run_dir.adapter, "train")))
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def read_records(path: Path, languages: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a corpus split (parquet) whose ``language`` is one of ``languages``, in file order."""
    import pyarrow.parquet as pq

    columns = ["language", "text", "pivot_language", "pivot_text"]
    table = pq.read_table(path, columns=columns).to_pylist()
    wanted = set(languages)
    return [row for row in table if row["language"] in wanted]


def _has_loss(example: Example) -> bool:
    # The model shifts labels by one: labels[0] never carries loss.
    return any(label != IGNORE_INDEX for label in example.labels[1:])


def encode_records(records: Sequence[dict[str, Any]], tokenizer: Any, train: TrainConfig) -> list[Example]:
    """Training examples: two translation directions per aligned pair, plus (``train.monolingual``) the
    plain text of every record. Examples left with no loss after truncation are dropped."""
    examples: list[Example] = []
    dropped = 0
    for row in records:
        candidates = []
        text, pivot, pivot_lang = row["text"] or "", row.get("pivot_text") or "", row.get("pivot_language") or ""
        if text and pivot and pivot_lang:
            candidates.append(encode_translation(tokenizer, pivot_lang, row["language"], pivot, text, train.max_length))
            candidates.append(encode_translation(tokenizer, row["language"], pivot_lang, text, pivot, train.max_length))
        if text and train.monolingual:
            candidates.append(encode_monolingual(tokenizer, text, train.max_length))
        for example in candidates:
            if _has_loss(example):
                examples.append(example)
            else:
                dropped += 1
    if dropped:
        log.warning("dropped %d example(s) with no answer token left within train.max_length=%d",
                    dropped, train.max_length)
    return examples


def load_examples(path: Path, tokenizer: Any, languages: Sequence[str], train: TrainConfig) -> list[Example]:
    """The examples of a corpus split; ``ValueError`` when there are none."""
    examples = encode_records(read_records(path, languages), tokenizer, train)
    if not examples:
        raise ValueError(
            f"{path} gives no training example in {', '.join(languages)} "
            f"(monolingual={train.monolingual}, max_length={train.max_length})"
        )
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask`` and ``labels`` (-100 on
    padding), each [B, L]."""
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(rows: Sequence[Sequence[Example]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows, right-padded to the longest row: ``input_ids``, ``attention_mask``, ``labels`` and
    ``position_ids``, each [R, L]. Position ids restart at 0 for every example, which is what keeps
    examples apart in attention (``langkit.attention.segment_ids``); the padding tail gets its own run of
    positions, and no example attends to it (attention_mask 0). Each example's first label is -100: the
    model predicts label t+1 at position t, and in a packed row that position holds the previous example's
    last token (alone, that label is never predicted either)."""
    length = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            input_ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1:at + n] = torch.tensor(e.labels[1:], dtype=torch.long)
            attention_mask[r, at:at + n] = 1
            position_ids[r, at:at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(length - at)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "position_ids": position_ids}


@dataclass
class ExampleStream:
    """An endless stream of example indices: every pass (epoch) is a fresh seeded shuffle, so the
    position (epoch, offset) is all a resumed run needs to continue exactly where it stopped."""

    size: int
    seed: int
    epoch: int = 0
    offset: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _shuffled(self) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if not self._order:
                self._order = self._shuffled()
            out.append(self._order[self.offset])
            self.offset += 1
            if self.offset == self.size:
                self.epoch, self.offset, self._order = self.epoch + 1, 0, []
        return out

    def peek(self) -> int:
        """The next index, without taking it (the position does not move)."""
        if not self._order:
            self._order = self._shuffled()
        return self._order[self.offset]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "seed": self.seed}

    def load_state(self, state: dict[str, int]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint data position is for {state['size']} examples (seed {state['seed']}), but the "
                f"data now gives {self.size} (seed {self.seed}): the corpus or config changed; set "
                "train.resume=false to start over"
            )
        self.epoch, self.offset, self._order = state["epoch"], state["offset"], []


def take_packed(stream: ExampleStream, lengths: Sequence[int], rows: int, capacity: int) -> list[list[int]]:
    """Example indices for one packed step: ``rows`` rows of at most ``capacity`` tokens. Examples come in
    stream order, each into the first row with room (first fit); the step ends at the first example that
    fits no row (it opens the next step, so the stream position stays exact for resuming) or that this step
    already holds (a data set smaller than one step)."""
    bins: list[list[int]] = []
    free: list[int] = []
    taken: set[int] = set()
    while True:
        index = stream.peek()
        if index in taken:
            break
        n = lengths[index]
        if n > capacity:
            raise ValueError(f"example {index} has {n} tokens, more than train.max_length={capacity}")
        slot = next((b for b, room in enumerate(free) if room >= n), None)
        if slot is None:
            if len(bins) == rows:
                break
            bins.append([])
            free.append(capacity)
            slot = len(bins) - 1
        stream.take(1)
        taken.add(index)
        bins[slot].append(index)
        free[slot] -= n
    return bins


@dataclass
class Batch:
    """One optimizer step's model inputs (``labels`` included) and what they hold."""

    inputs: dict[str, Any]
    tokens: int
    """Non-padding tokens."""
    slots: int
    """Token positions computed, padding included (rows x row length)."""
    examples: int


def next_batch(stream: ExampleStream, examples: Sequence[Example], train: TrainConfig, pad_id: int,
               sliding_window: int | None) -> Batch:
    """The next step's batch: ``train.batch_size`` examples padded to the longest, or with
    ``train.packing`` that many packed rows. Eager attention gets packed rows' masks as 4-D block-diagonal
    masks (gpt-oss does not derive them from position ids); ``langkit_sink`` reads the position ids."""
    if not train.packing:
        batch = collate([examples[i] for i in stream.take(train.batch_size)], pad_id)
        return Batch(dict(batch), int(batch["attention_mask"].sum()), batch["input_ids"].numel(), train.batch_size)
    lengths = [len(e.input_ids) for e in examples]
    rows = take_packed(stream, lengths, train.batch_size, train.max_length)
    batch = collate_packed([[examples[i] for i in row] for row in rows], pad_id)
    inputs: dict[str, Any] = dict(batch)
    if train.attention == EAGER:
        inputs["attention_mask"] = packed_eager_masks(batch["position_ids"], batch["attention_mask"], sliding_window,
                                                      DTYPES[train.dtype])
    return Batch(inputs, int(batch["attention_mask"].sum()), batch["input_ids"].numel(), sum(len(r) for r in rows))


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value.to(device)


# --------------------------------------------------------------------------------------------------
# Optimizer, schedule, checkpoints
# --------------------------------------------------------------------------------------------------


def lr_factor(step_index: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak learning rate for the optimizer step ``step_index`` (0-based): linear
    warm-up to 1 over ``warmup_steps``, then linear decay that reaches 0 just after the last step."""
    if step_index < warmup_steps:
        return (step_index + 1) / warmup_steps
    return max(0.0, (max_steps - step_index) / max(1, max_steps - warmup_steps))


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _temp_dir(dest: Path) -> Path:
    """An empty hidden folder next to ``dest`` to write into before :func:`_replace_dir`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _replace_dir(tmp: Path, dest: Path) -> Path:
    """Put the finished folder ``tmp`` at ``dest`` by renames, so ``dest`` is never half written."""
    old = dest.parent / f".old-{dest.name}"
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def save_adapter(model: Any, dest: Path, extra: dict[str, Any] | None = None) -> Path:
    """Save the adapter (safetensors) into ``dest`` atomically: into a temp folder, then renamed.
    ``extra`` objects are ``torch.save``d next to it under their key as file name."""
    tmp = _temp_dir(dest)
    # The new-token rows live in the adapter (trainable tokens); the resized embedding matrices are rebuilt
    # by resize_for_new_tokens on load, so never save the whole embeddings ("auto" would, at 2 x V x H).
    model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
    for name, obj in (extra or {}).items():
        torch.save(obj, tmp / name)
    return _replace_dir(tmp, dest)


def export_merged(run_dir: RunDir, cfg: RunConfig) -> Path:
    """Write ``run_dir.merged``: the trained adapter merged into the (resized) base with
    ``merge_and_unload`` and saved as a plain transformers model (safetensors), with the tokenizer next to
    it, atomically (temp folder, then renamed). vLLM does not serve LoRA on gpt-oss's experts; this folder
    it serves as any gpt-oss checkpoint. Returns the folder.

    The weights are saved in ``train.dtype`` (a real checkpoint's MXFP4 experts stay dequantized: transformers
    drops the quantization config when it dequantizes on load)."""
    model, tokenizer = load_adapted_model(run_dir, cfg)
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # training turned the cache off; serving wants it
    dest = run_dir.merged
    tmp = _temp_dir(dest)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    _replace_dir(tmp, dest)
    log.info("merged model (%d-token vocabulary) written to %s", merged.get_input_embeddings().weight.shape[0], dest)
    return dest


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as (step, path), oldest first."""
    found = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}*") if folder.is_dir() else []:
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / TRAINER_STATE).is_file() and (path / ADAPTER_WEIGHTS).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def _prune_checkpoints(folder: Path, keep: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(path)


def _load_checkpoint(model: Any, path: Path) -> dict[str, Any]:
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


def _read_log(path: Path, up_to: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= up_to]


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _training_step(model: Any, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, params: list[torch.nn.Parameter],
                   train: TrainConfig) -> tuple[float, float]:
    """One optimizer step on one batch; returns (loss, gradient norm before clipping)."""
    # Mean causal-LM loss over the labelled (non -100) tokens, with or without all logits at once.
    loss = causal_lm_loss(model, batch, train.loss_chunk_size) if train.chunked_loss else model(**batch).loss
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}; lower train.learning_rate or check the data")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item()), float(grad_norm)


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    wall_time_s: float
    losses: list[float]
    resumed_from: int | None
    slots_seen: int = 0
    """Token positions computed, padding included: tokens_seen / slots_seen is the padding efficiency."""

    @property
    def efficiency(self) -> float | None:
        return round(self.tokens_seen / self.slots_seen, 4) if self.slots_seen else None


# Why a loop of our own and not transformers' Trainer or TRL's SFTTrainer (both were considered):
# * packing without cross-talk: TRL documents its packing for FlashAttention setups only (examples are
#   separated by position_ids, which the varlen flash kernels honour). gpt-oss's mask builder never sees
#   position_ids, so with eager attention (and on CPU) packed examples would attend to each other. Here
#   eager gets explicit block-diagonal masks and langkit_sink reads the position ids; both are tested
#   equal to running the examples one by one.
# * the chunked loss needs the final hidden states, not the logits the model returns: with Trainer it
#   would mean overriding compute_loss to bypass the model's forward anyway.
# * exact resume including the data position: the (epoch, offset) of a seeded stream is saved with the
#   optimizer, scheduler and RNG (atomically, keep-last-N) and a resumed run starts there at no cost,
#   packed steps (a variable number of examples each) included; Trainer re-iterates its dataloader and
#   skips the batches already seen.
# * PEFT's target_parameters (expert LoRA) and trainable_token_indices are saved with
#   save_embedding_layers=False, or every checkpoint would hold two full [V, H] matrices.


def fit(model: Any, examples: Sequence[Example], train: TrainConfig, out_dir: Path, pad_id: int) -> TrainResult:
    """Train ``model`` (a PeftModel) on ``examples`` for ``train.max_steps`` steps, logging into
    ``out_dir/train_log.jsonl`` and checkpointing into ``out_dir/checkpoints``; resumes from the last
    checkpoint there when ``train.resume``."""
    checkpoints = out_dir / "checkpoints"
    log_path = out_dir / TRAIN_LOG
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, train.warmup_steps, train.max_steps))
    stream = ExampleStream(len(examples), train.seed)

    base_config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    sliding_window = getattr(base_config, "sliding_window", None)
    step, tokens_seen, slots_seen, wall_before, losses, resumed_from = 0, 0, 0, 0.0, [], None
    found = list_checkpoints(checkpoints)
    if train.resume and found:
        resumed_from, path = found[-1]
        state = _load_checkpoint(model, path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state(state["data"])
        _set_rng_state(state["rng"])
        step, tokens_seen, wall_before, losses = state["step"], state["tokens_seen"], state["wall_time_s"], state["losses"]
        slots_seen = state.get("slots_seen", tokens_seen)  # checkpoints from before packing: no count kept
        log.info("resuming from %s (step %d of %d)", path, step, train.max_steps)
        if step >= train.max_steps:
            log.info("checkpoint %s is of a finished run: no more steps", path.name)
            if step > train.max_steps:
                log.warning("checkpoint step %d is past train.max_steps=%d; keeping it as it is", step, train.max_steps)
        rows = _read_log(log_path, step)
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))  # drop steps after the checkpoint
    else:
        if found or log_path.exists():
            log.info("starting over in %s (train.resume=%s): removing earlier checkpoints and log", out_dir, train.resume)
        shutil.rmtree(checkpoints, ignore_errors=True)
        log_path.unlink(missing_ok=True)
        _seed_everything(train.seed)
    for stale in checkpoints.glob(".*") if checkpoints.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)  # half-written checkpoints of a crashed run

    def checkpoint(at: int, wall: float) -> None:
        state = {
            "step": at, "tokens_seen": tokens_seen, "slots_seen": slots_seen, "wall_time_s": wall, "losses": list(losses),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "data": stream.state(), "rng": _rng_state(),
        }
        save_adapter(model, checkpoints / f"{CHECKPOINT_PREFIX}{at:06d}", {TRAINER_STATE: state})
        _prune_checkpoints(checkpoints, train.keep_checkpoints)

    model.train()
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log_file:
        done = step
        for step in progress(range(done + 1, train.max_steps + 1), desc="train", total=max(0, train.max_steps - done)):
            batch = next_batch(stream, examples, train, pad_id, sliding_window)
            tokens = batch.tokens
            lr = scheduler.get_last_lr()[0]
            loss, grad_norm = _training_step(model, _to_device(batch.inputs, device), optimizer, scheduler, params, train)
            tokens_seen += tokens
            slots_seen += batch.slots
            losses.append(loss)
            row = {"step": step, "loss": round(loss, 6), "lr": lr, "tokens": tokens, "tokens_seen": tokens_seen,
                   "grad_norm": round(grad_norm, 6), "examples": batch.examples,
                   "efficiency": round(tokens / batch.slots, 4)}
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            log.info("step %d/%d loss %.4f lr %.3g tokens %d (%d examples, %.0f%% of the batch not padding)", step,
                     train.max_steps, loss, lr, tokens, batch.examples, 100 * tokens / batch.slots)
            if step % train.save_every == 0 or step == train.max_steps:
                checkpoint(step, wall_before + time.perf_counter() - start)
    model.eval()
    return TrainResult(step, tokens_seen, wall_before + time.perf_counter() - start, losses, resumed_from, slots_seen)


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def energy_estimate(wall_time_s: float, device: torch.device) -> dict[str, Any]:
    watts = ASSUMED_POWER_W.get(device.type, ASSUMED_POWER_W["cpu"])
    return {
        "kwh": round(wall_time_s * watts / 3.6e6, 6),
        "assumed_power_w": watts,
        "method": f"estimated: wall time x assumed {device.type.upper()} power ({watts:g} W); not measured",
    }


def _plot_loss(losses: Sequence[float], path: Path) -> None:
    """The loss curve (PNG), next to train_log.jsonl."""
    if not losses:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: RunConfig, run_dir: RunDir) -> Path:
    """The train stage: LoRA-tune ``cfg.train.model`` on the corpus's train split with the extended
    tokenizer; write the adapter, checkpoints, log and metadata into ``run_dir.train``. Returns it."""
    from transformers import AutoTokenizer

    train = cfg.train
    split = run_dir.require(run_dir.split("train"), "corpus")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir.require(run_dir.tokenizer, "tokenizer")))
    new_tokens = load_new_tokens(run_dir.require(run_dir.new_tokens, "tokenizer"))
    # Before any model is loaded: the tokenizer must fit the base, and there must be data.
    check_vocabulary(tokenizer_size(tokenizer), base_vocab_size(train.model), new_tokens)
    examples = load_examples(split, tokenizer, cfg.languages, train)
    log.info("%d training examples from %s (%s)", len(examples), split, ", ".join(cfg.languages))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    device = _device()
    model = prepare_model(train, tokenizer, new_tokens).to(device)
    result = fit(model, examples, train, run_dir.train, pad_id)

    save_adapter(model, run_dir.adapter)
    trainable, total = count_parameters(model)
    _plot_loss(result.losses, run_dir.train / "loss.png")
    write_json(run_dir.train / "metadata.json", {
        "base_model": train.model,
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "wall_time_s": round(result.wall_time_s, 3),
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.losses[-1] if result.losses else None,
        "lora_r": train.lora_r,
        "lora_alpha": train.lora_alpha,
        "lora_experts": train.lora_experts,
        "train_new_embeddings": train.train_new_embeddings,
        "new_tokens": len(new_tokens),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "examples": len(examples),
        "languages": list(cfg.languages),
        "learning_rate": train.learning_rate,
        "batch_size": train.batch_size,
        "max_length": train.max_length,
        "attention": train.attention,
        "chunked_loss": train.chunked_loss,
        "gradient_checkpointing": train.gradient_checkpointing,
        "loss_chunk_size": train.loss_chunk_size if train.chunked_loss else None,
        "packing": train.packing,
        # Share of the computed token positions that were not padding (packed or padded batches alike).
        "packing_efficiency": result.efficiency,
        "dtype": train.dtype,
        "seed": train.seed,
        "resumed_from": result.resumed_from,
        "device": str(device),
        "energy": energy_estimate(result.wall_time_s, device),
    })
    if train.merged_export:
        del model  # the export loads the model again from the saved adapter: one copy at a time
        export_merged(run_dir, cfg)
    if result.losses:
        log.info("trained %d steps (%d tokens): loss %.4f -> %.4f; adapter in %s", result.steps,
                 result.tokens_seen, result.losses[0], result.losses[-1], run_dir.adapter)
    return run_dir.train
