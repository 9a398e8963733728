"""Stage 3: LoRA fine-tuning of gpt-oss on the corpus, with the extended tokenizer.

The model is the base (``tiny`` or a gpt-oss checkpoint) with its embeddings and lm_head grown to the
extended vocabulary (new rows = mean of the base sub-token rows, see :func:`langkit.models.resize_for_new_tokens`),
then wrapped by PEFT (:mod:`langkit.train.model`):

* LoRA on the attention projections q/k/v/o and, with ``train.lora_experts``, on the fused expert
  weights (``target_parameters``; each expert gets rank ``train.lora_expert_r``, by default ``lora_r``);
* the new tokens' rows of ``embed_tokens`` and ``lm_head`` trained through ``trainable_token_indices``
  (the adapter stores those full rows; every base row stays frozen), optionally at their own learning rate
  (``train.embedding_learning_rate``).

Data (:mod:`langkit.train.data`): each aligned pair of the train split gives two harmony translation examples
(pivot -> language and language -> pivot, loss on the answer only); with ``train.monolingual`` each record's
text also gives a plain next-token example; ``train.mix`` sets their proportions. A plain loop (AdamW, linear
warm-up/decay, clipping at 1.0) takes the seeded stream of examples for ``train.max_steps`` steps,
checkpointing atomically (:mod:`langkit.train.checkpoints`) so that a resumed run ends with the same adapter as
an uninterrupted one.

Processes (:mod:`langkit.train.distributed`): the same code runs alone or under ``accelerate launch`` /
``torchrun`` (DDP, FSDP2, DeepSpeed ZeRO-3). Every process takes its slice of the same global step, so the
global batch is ``train.batch_size`` x processes; only the main process writes.

Long sequences (``train.attention``, ``train.chunked_loss``, ``train.packing``): ``langkit_sink`` attention
(``langkit/attention.py``) never builds the [batch, heads, L, L] scores; the chunked loss
(``langkit/loss.py``) never builds the [tokens, vocab] logits of the batch; packing fills each row with
whole examples (position ids restart per example, attention stays within an example, and an example's
first token takes no loss from the one before it), and the share of non-padding tokens is logged.

Outputs, under ``RUN/train/``::

    adapter/                       adapter_model.safetensors + adapter_config.json (PeftModel.from_pretrained)
    checkpoints/step-NNNNNN/       the adapter + trainer_state.pt (optimizer, scheduler, RNG, data position)
                                   + settings.json (what its steps were trained with; a rerun with other
                                   settings is refused unless train.resume_changed)
    train_log.jsonl                one line per step: step, loss, lr, tokens, tokens_seen, grad_norm,
                                   examples, efficiency (non-padding share of the step's token slots), and
                                   with train.mix the examples of each kind
    metadata.json                  what was trained, on how much, how long, on how many processes, and the
                                   energy (measured or estimated, and which: langkit/train/energy.py)
    loss.png                       the loss curve
    merged/                        with ``train.merged_export``: the base with the adapter merged in and the
                                   tokenizer (AutoModelForCausalLM.from_pretrained), for serving with vLLM
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langkit.config import RunConfig, TrainConfig
from langkit.harmony import Example
from langkit.rundir import RunDir
from langkit.tokenizer import load_new_tokens
from langkit.train import energy
from langkit.train.checkpoints import (
    ADAPTER_WEIGHTS,
    CHECKPOINT_PREFIX,
    SETTINGS_FILE,
    TRAINER_STATE,
    describe_changes,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_log,
    read_settings,
    rng_state,
    save_adapter,
    seed_everything,
    set_rng_state,
    settings_changes,
    train_settings,
)
from langkit.train.data import (
    KINDS,
    Batch,
    ExampleStream,
    MixedStream,
    collate,
    collate_packed,
    encode_records,
    encode_records_with_kinds,
    load_examples,
    load_training_data,
    make_stream,
    next_batch,
    read_records,
    take_packed,
    to_device,
)
from langkit.train.distributed import (
    LossModule,
    distributed_kind,
    load_optimizer_state,
    make_accelerator,
    optimizer_state,
    sum_over_processes,
    trainable_state_dict,
)
from langkit.train.energy import ASSUMED_POWER_W, EnergyMeter, energy_estimate
from langkit.train.model import (
    ATTENTION_MODULES,
    EXPERT_PARAMETERS,
    base_model_config,
    check_max_length,
    check_vocabulary,
    count_parameters,
    expert_lora,
    export_merged,
    load_adapted_model,
    lora_config,
    prepare_model,
    tokenizer_size,
)
from langkit.utils import atomic_write_text, get_logger, progress, sha256_file, write_json

__all__ = [
    "ADAPTER_WEIGHTS", "ASSUMED_POWER_W", "ATTENTION_MODULES", "CHECKPOINT_PREFIX", "EXPERT_PARAMETERS", "KINDS",
    "TRAINER_STATE", "Batch", "ExampleStream", "MixedStream", "SettingsChanged", "TrainResult", "base_model_config",
    "check_max_length", "check_vocabulary", "collate", "collate_packed", "count_parameters", "encode_records",
    "encode_records_with_kinds", "energy_estimate", "export_merged", "expert_lora", "fit", "list_checkpoints",
    "load_adapted_model", "load_examples", "load_training_data", "lora_config", "lr_factor", "make_optimizer",
    "make_stream", "next_batch", "prepare_model", "read_records", "resume_check", "run", "run_settings",
    "save_adapter", "take_packed", "tokenizer_size",
]

log = get_logger("train")

MAX_GRAD_NORM = 1.0
TRAIN_LOG = "train_log.jsonl"


# --------------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------------


def lr_factor(step_index: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak learning rate for the optimizer step ``step_index`` (0-based): linear
    warm-up to 1 over ``warmup_steps``, then linear decay that reaches 0 just after the last step."""
    if step_index < warmup_steps:
        return (step_index + 1) / warmup_steps
    return max(0.0, (max_steps - step_index) / max(1, max_steps - warmup_steps))


def make_optimizer(model: Any, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: one group at ``train.learning_rate``, or, with
    ``train.embedding_learning_rate``, the new-token rows (PEFT's ``trainable_tokens_delta``) in a second
    group at that rate. The schedule scales every group's peak rate alike."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if train.embedding_learning_rate is None:
        return torch.optim.AdamW([p for _, p in params], lr=train.learning_rate, weight_decay=train.weight_decay)
    rows = [p for n, p in params if "trainable_tokens" in n]
    rest = [p for n, p in params if "trainable_tokens" not in n]
    groups = [{"params": rest, "lr": train.learning_rate, "name": "lora"}]
    if rows:
        groups.append({"params": rows, "lr": train.embedding_learning_rate, "name": "new_token_rows"})
    return torch.optim.AdamW(groups, lr=train.learning_rate, weight_decay=train.weight_decay)


# --------------------------------------------------------------------------------------------------
# Reruns: resume only what was trained with the same settings
# --------------------------------------------------------------------------------------------------


class SettingsChanged(ValueError):
    """A rerun would resume a checkpoint trained with other settings."""


def run_settings(cfg: RunConfig, run_dir: RunDir, processes: int) -> dict[str, Any]:
    """The settings the train stage of ``cfg`` would train with in ``run_dir`` (see
    :func:`langkit.train.checkpoints.train_settings`), the inputs named by their digests."""
    inputs = {"inputs.train_split_sha256": sha256_file(run_dir.split("train")),
              "inputs.tokenizer_sha256": sha256_file(run_dir.tokenizer_file)}
    return train_settings(cfg.train, list(cfg.languages), processes, inputs)


def resume_check(train: TrainConfig, checkpoints: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Before resuming from the last checkpoint in ``checkpoints``: the settings changes recorded so far
    (each {"step", "changes"}), with this rerun's appended when ``train.resume_changed`` allows one. A rerun
    whose ``settings`` differ from the checkpoint's raises :class:`SettingsChanged`, naming the keys and the
    ways on, before anything is loaded or written. Nothing to resume (``train.resume`` false, no checkpoint):
    an empty list."""
    found = list_checkpoints(checkpoints)
    if not train.resume or not found:
        return []
    step, path = found[-1]
    recorded = read_settings(path)
    if recorded is None:
        log.warning("%s was written before langkit recorded training settings: its settings cannot be compared "
                    "with this run's (train.resume=false starts over)", path)
        return []
    history: list[dict[str, Any]] = list(recorded.get("changes", []))
    before = recorded["settings"]
    # A key the checkpoint has no record of came with a later langkit: at its default it changes nothing.
    defaults = train_settings(TrainConfig(), [], 1, {})
    changes = {key: change for key, change in settings_changes(before, settings).items()
               if key in before or key not in defaults or change["now"] != defaults[key]}
    if not changes:
        return history
    where = f"{path} (step {step})"
    if not train.resume_changed:
        raise SettingsChanged(
            f"train: this rerun's settings differ from those of the checkpoint it would resume, {where}: "
            f"{describe_changes(changes)}. Nothing was trained or written. To train from scratch with the new "
            f"settings: train.resume=false (removes the checkpoints and log of {checkpoints.parent}) or another "
            "--out; to continue the checkpoint with the new settings on purpose: train.resume_changed=true "
            "(metadata.json records the change); to continue it as it was: rerun with the settings in "
            f"{path / SETTINGS_FILE}")
    if step >= train.max_steps:
        raise SettingsChanged(
            f"train: {where} is at or past train.max_steps={train.max_steps}: no step is left to train with the "
            f"changed settings ({describe_changes(changes)}), so nothing would use them. train.resume=false "
            "starts over with them; a larger train.max_steps continues")
    return [*history, {"step": step, "changes": changes}]


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _training_step(model: Any, batch: Batch, optimizer: Any, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   params: list[torch.nn.Parameter], accelerator: Any) -> tuple[float, float | None]:
    """One optimizer step on this process's share of a global batch; returns (the global step's loss,
    gradient norm before clipping; None where DeepSpeed clips and does not tell)."""
    processes = accelerator.num_processes
    # Mean causal-LM loss over this process's labelled (non -100) tokens (LossModule: chunked or not).
    loss = model(to_device(batch.inputs, accelerator.device))
    # One all-reduce gives both the step's loss and whether any process saw a non-finite one: every process
    # then stops together (one alone would leave the others waiting in the next collective).
    bad, value = sum_over_processes(
        accelerator, [float(not torch.isfinite(loss.detach()).item()), float(loss.item()) * batch.loss_share])
    if bad:
        raise FloatingPointError(f"loss is not finite ({loss.item()} here) on {int(bad)} process(es); "
                                 "lower train.learning_rate or check the data")
    # DDP averages gradients over processes: weighting each process's mean by (its labelled tokens / the
    # step's) x processes makes the result the mean over all the step's labelled tokens (alone: x 1).
    accelerator.backward(loss * (batch.loss_share * processes))
    grad_norm = accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return value, None if grad_norm is None else float(grad_norm)


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    wall_time_s: float
    losses: list[float]
    resumed_from: int | None
    slots_seen: int = 0
    """Token positions computed, padding included: tokens_seen / slots_seen is the padding efficiency."""
    energy: dict[str, Any] | None = None
    """The ``energy`` entry of metadata.json (measured or estimated; see langkit/train/energy.py)."""
    kinds_seen: dict[str, int] | None = None
    """With ``train.mix``: examples of each kind seen so far."""
    adapter_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    """The trainable tensors gathered from sharded training (FSDP, ZeRO-3) for the main process to save;
    None otherwise (the model holds them)."""
    settings_changed: list[dict[str, Any]] = field(default_factory=list)
    """Settings changed on purpose at a resume (``train.resume_changed``): each {"step", "changes"}."""

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
# * exact resume including the data position: the position of a seeded stream (a few integers, per kind
#   with train.mix) is saved with the optimizer, scheduler and RNG (atomically, keep-last-N) and a resumed
#   run starts there at no cost, packed steps (a variable number of examples each) included, and on another
#   number of processes with the same global batch. Trainer re-iterates its dataloader and skips the batches
#   already seen, and its per-process samplers tie the position to the number of processes.
# * a global step equal to one process's whole batch: each process weights its loss by its share of the
#   step's labelled tokens; Trainer averages per-process means (transformers' num_items_in_batch fixes that
#   for its own loss only, not for the chunked loss).
# * PEFT's target_parameters (expert LoRA) and trainable_token_indices are saved with
#   save_embedding_layers=False, or every checkpoint would hold two full [V, H] matrices.
# Distribution itself is accelerate's (DDP, FSDP2, DeepSpeed), as Trainer would use it.


def fit(model: Any, examples: Sequence[Example], train: TrainConfig, out_dir: Path, pad_id: int, *,
        kinds: Sequence[str] | None = None, accelerator: Any = None,
        settings: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` (a PeftModel) on ``examples`` for ``train.max_steps`` steps, logging into
    ``out_dir/train_log.jsonl`` and checkpointing into ``out_dir/checkpoints``; resumes from the last
    checkpoint there when ``train.resume``. ``kinds`` gives each example's kind (for ``train.mix``; all
    ``translation`` when not given). ``settings`` (:func:`run_settings`) are stored with every checkpoint,
    and a checkpoint trained with other settings is not resumed (:func:`resume_check`). Under several
    processes every process calls it; only the main one writes."""
    accelerator = accelerator or make_accelerator()
    main = accelerator.is_main_process
    rank, processes = accelerator.process_index, accelerator.num_processes
    checkpoints = out_dir / "checkpoints"
    log_path = out_dir / TRAIN_LOG
    kinds = list(kinds) if kinds is not None else ["translation"] * len(examples)
    stream = make_stream(kinds, train)

    base_config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    sliding_window = getattr(base_config, "sliding_window", None)
    step, tokens_seen, slots_seen, wall_before, losses, resumed_from = 0, 0, 0, 0.0, [], None
    kinds_seen: Counter[str] = Counter()
    energy_before: dict[str, Any] | None = None
    found = list_checkpoints(checkpoints)
    changed = resume_check(train, checkpoints, settings) if settings is not None else []
    accelerator.wait_for_everyone()  # every process has looked before the main one changes anything
    state: dict[str, Any] | None = None
    if changed and changed[-1]["step"] == found[-1][0]:
        log.warning("resuming %s with changed settings (train.resume_changed): %s", found[-1][1].name,
                    describe_changes(changed[-1]["changes"]))
    if train.resume and found:
        resumed_from, path = found[-1]
        state = load_checkpoint(model, path)  # the adapter, into the model before it is wrapped
        stream.load_state(state["data"])
        set_rng_state(state["rng"])
        step, tokens_seen, wall_before, losses = state["step"], state["tokens_seen"], state["wall_time_s"], state["losses"]
        slots_seen = state.get("slots_seen", tokens_seen)  # checkpoints from before packing: no count kept
        kinds_seen.update(state.get("kinds_seen", {}))
        energy_before = state.get("energy")
        log.info("resuming from %s (step %d of %d)", path, step, train.max_steps)
        if step >= train.max_steps:
            log.info("checkpoint %s is of a finished run: no more steps", path.name)
            if step > train.max_steps:
                log.warning("checkpoint step %d is past train.max_steps=%d; keeping it as it is", step, train.max_steps)
        if main:
            rows = read_log(log_path, step)
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))  # drop steps after the checkpoint
    else:
        if main:
            if found or log_path.exists():
                log.info("starting over in %s (train.resume=%s): removing earlier checkpoints and log", out_dir,
                         train.resume)
            shutil.rmtree(checkpoints, ignore_errors=True)
            log_path.unlink(missing_ok=True)
        seed_everything(train.seed)
    if main:
        for stale in checkpoints.glob(".*") if checkpoints.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)  # half-written checkpoints of a crashed run

    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, train.warmup_steps, train.max_steps))
    # The model is wrapped with its loss (DDP/FSDP/DeepSpeed see the whole forward); the scheduler is not
    # given to accelerate, whose wrapper would step it once per process.
    wrapped, optimizer = accelerator.prepare(LossModule(model, train.loss_chunk_size if train.chunked_loss else None),
                                             optimizer)
    params = [p for p in wrapped.parameters() if p.requires_grad]  # after prepare: FSDP2 swaps them for shards
    if state is not None:
        load_optimizer_state(accelerator, wrapped, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The scheduler's state does not set the optimizer's rate: where the optimizer state came back it
        # already holds it, but under ZeRO-3 it does not come back, so set it from the schedule here.
        for group, rate in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = rate
    device = accelerator.device
    meter = EnergyMeter(device.type, device.index or 0, measure_cpu=accelerator.local_process_index == 0).start()

    def energy_so_far(wall: float) -> dict[str, Any]:
        _, joules = meter.stop()
        # Measured on every process, or the estimate: a partial measurement would undercount.
        flags = sum_over_processes(accelerator, [0.0 if meter.method == energy.ESTIMATED else 1.0, joules])
        measured = flags[0] == processes
        if state is not None and (energy_before or {}).get("method") != (meter.method if measured else None):
            measured = False  # earlier segments measured otherwise, or not at all (or by an older langkit)
        total = flags[1] + (energy_before or {}).get("joules", 0.0) if measured else 0.0
        # Estimated: one assumed draw per GPU, or per machine on CPUs (its processes share the packages).
        devices = processes if device.type == "cuda" else _machines(accelerator)
        return energy.report(meter.method if measured else energy.ESTIMATED, total, wall, device.type, devices)

    # The adapter gathered by the latest checkpoint, and at which step: the last step always checkpoints,
    # and its gather (an all-gather of every trainable tensor under FSDP/ZeRO-3) serves the result too.
    gathered: tuple[int, dict[str, torch.Tensor] | None] | None = None

    def checkpoint(at: int, wall: float) -> None:
        nonlocal gathered
        # Gathering is collective under FSDP/ZeRO-3: every process runs this, the main one writes.
        adapter = trainable_state_dict(accelerator, wrapped)
        # Kept only from the last step: a copy held between checkpoints would cost every process host memory.
        gathered = (at, adapter) if at == train.max_steps else None
        optim = optimizer_state(accelerator, wrapped, optimizer)
        spent = energy_so_far(wall)
        if main:
            trainer_state = {
                "step": at, "tokens_seen": tokens_seen, "slots_seen": slots_seen, "wall_time_s": wall,
                "losses": list(losses), "optimizer": optim, "scheduler": scheduler.state_dict(),
                "data": stream.state(), "rng": rng_state(), "kinds_seen": dict(kinds_seen),
                "energy": {"method": spent["method"] if spent["method"] != energy.ESTIMATED else None,
                           "joules": spent["joules"]},
                "processes": processes,
            }
            extra: dict[str, Any] = {TRAINER_STATE: trainer_state}
            if settings is not None:
                extra[SETTINGS_FILE] = {"settings": settings, "changes": changed}
            save_adapter(model, checkpoints / f"{CHECKPOINT_PREFIX}{at:06d}", extra, state_dict=adapter)
            prune_checkpoints(checkpoints, train.keep_checkpoints)
        accelerator.wait_for_everyone()

    wrapped.train()
    lengths = [len(e.input_ids) for e in examples]  # measured once, not on every packed step
    start = time.perf_counter()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("a", encoding="utf-8") if main else None
    try:
        done = step
        for step in progress(range(done + 1, train.max_steps + 1), desc="train", total=max(0, train.max_steps - done)):
            batch = next_batch(stream, examples, train, pad_id, sliding_window, rank, processes, lengths)
            lr = scheduler.get_last_lr()[0]
            loss, grad_norm = _training_step(wrapped, batch, optimizer, scheduler, params, accelerator)
            meter.tick()
            tokens_seen += batch.tokens
            slots_seen += batch.slots
            losses.append(loss)
            row: dict[str, Any] = {
                "step": step, "loss": round(loss, 6), "lr": lr, "tokens": batch.tokens, "tokens_seen": tokens_seen,
                "grad_norm": None if grad_norm is None else round(grad_norm, 6), "examples": batch.examples,
                "efficiency": round(batch.tokens / batch.slots, 4)}
            if train.mix:
                step_kinds = Counter(kinds[i] for i in batch.indices)
                kinds_seen.update(step_kinds)
                row["kinds"] = {k: step_kinds.get(k, 0) for k in KINDS}
            if log_file is not None:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            log.info("step %d/%d loss %.4f lr %.3g tokens %d (%d examples, %.0f%% of the batch not padding)", step,
                     train.max_steps, loss, lr, batch.tokens, batch.examples, 100 * batch.tokens / batch.slots)
            if step % train.save_every == 0 or step == train.max_steps:
                checkpoint(step, wall_before + time.perf_counter() - start)
    finally:
        if log_file is not None:
            log_file.close()
    wall = wall_before + time.perf_counter() - start
    spent = energy_so_far(wall)
    if gathered is not None and gathered[0] == step:
        adapter = gathered[1]
    else:  # no step ran (resumed at the end)
        adapter = trainable_state_dict(accelerator, wrapped)  # collective when sharded
    model.eval()
    return TrainResult(step, tokens_seen, wall, losses, resumed_from, slots_seen, spent,
                       dict(kinds_seen) if train.mix else None, adapter, changed)


def _machines(accelerator: Any) -> int:
    """Machines taking part (processes / processes per machine)."""
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or accelerator.num_processes
    return max(1, accelerator.num_processes // per_machine)


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
    tokenizer; write the adapter, checkpoints, log and metadata into ``run_dir.train``. Returns it.

    Alone, or under ``accelerate launch`` / ``torchrun`` (every process calls it; only the main one writes)."""
    from transformers import AutoTokenizer

    accelerator = make_accelerator()
    main = accelerator.is_main_process
    train = cfg.train
    split = run_dir.require(run_dir.split("train"), "corpus")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir.require(run_dir.tokenizer, "tokenizer")))
    new_tokens = load_new_tokens(run_dir.require(run_dir.new_tokens, "tokenizer"))
    # Before any model is loaded: the tokenizer must fit the base, the examples its positions, and there
    # must be data (of every kind train.mix asks for).
    base_config = base_model_config(train.model)
    check_vocabulary(tokenizer_size(tokenizer), int(base_config.vocab_size), new_tokens)
    check_max_length(train, base_config)
    # A rerun that would resume a checkpoint trained with other settings stops here, before anything is
    # loaded or written (the run's metadata.json and adapter keep describing what was trained).
    settings = run_settings(cfg, run_dir, accelerator.num_processes)
    resume_check(train, run_dir.checkpoints, settings)
    examples, kinds = load_training_data(split, tokenizer, cfg.languages, train)
    log.info("%d training examples from %s (%s): %s", len(examples), split, ", ".join(cfg.languages),
             ", ".join(f"{n} {k}" for k, n in sorted(Counter(kinds).items())))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    model = prepare_model(train, tokenizer, new_tokens)
    if accelerator.num_processes > 1:
        log.info("%d processes (%s): global batch %d = train.batch_size %d x %d", accelerator.num_processes,
                 distributed_kind(accelerator), train.batch_size * accelerator.num_processes, train.batch_size,
                 accelerator.num_processes)
    result = fit(model, examples, train, run_dir.train, pad_id, kinds=kinds, accelerator=accelerator,
                 settings=settings)

    if main:
        save_adapter(model, run_dir.adapter, state_dict=result.adapter_state)
        trainable, total = count_parameters(model)
        _plot_loss(result.losses, run_dir.train / "loss.png")
        expert_r, expert_alpha = expert_lora(train)
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
            "lora_expert_r": expert_r if train.lora_experts else None,
            "lora_expert_alpha": expert_alpha if train.lora_experts else None,
            "train_new_embeddings": train.train_new_embeddings,
            "new_tokens": len(new_tokens),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "examples": len(examples),
            "examples_by_kind": dict(sorted(Counter(kinds).items())),
            "mix": dict(train.mix) or None,
            "examples_seen_by_kind": result.kinds_seen,
            "languages": list(cfg.languages),
            "learning_rate": train.learning_rate,
            "embedding_learning_rate": train.embedding_learning_rate,
            "batch_size": train.batch_size,
            "processes": accelerator.num_processes,
            "global_batch_size": train.batch_size * accelerator.num_processes,
            "distributed": distributed_kind(accelerator),
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
            # Settings changed on purpose at a resume (train.resume_changed): the steps before each change
            # used its "checkpoint" values. Empty: every step used the settings above.
            "settings_changed": result.settings_changed,
            "device": str(accelerator.device),
            "energy": result.energy,
        })
    accelerator.wait_for_everyone()
    if train.merged_export and main:
        del model  # the export loads the model again from the saved adapter: one copy at a time
        export_merged(run_dir, cfg)
    if result.losses:
        log.info("trained %d steps (%d tokens): loss %.4f -> %.4f; adapter in %s", result.steps,
                 result.tokens_seen, result.losses[0], result.losses[-1], run_dir.adapter)
    return run_dir.train
