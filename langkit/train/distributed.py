"""One process or many: the train stage under ``accelerate`` (DDP, FSDP2, DeepSpeed ZeRO-3) or alone.

``accelerate.Accelerator`` reads how it was launched (``accelerate launch --config_file ...``, ``torchrun``,
or a plain ``python``: one process, nothing wrapped) and wraps the model and the optimizer accordingly. The
model it wraps is :class:`LossModule`, whose forward returns the training loss, so the chunked loss runs
inside the wrapper's forward too (DDP only synchronises gradients of a forward that went through it).

What langkit adds on top:

* every process draws the same global step from the data stream and keeps its own slice
  (:func:`langkit.train.data.next_batch`), and each process's loss is weighted by its share of the step's
  labelled tokens, so the gradient is the mean over all labelled tokens of the global step: the same as one
  process taking the whole global batch;
* the trainable tensors (adapter and new-token rows, a few MB to a few hundred MB) and the optimizer state
  are gathered in full for the checkpoint, which only the main process writes.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from langkit.loss import causal_lm_loss
from langkit.utils import get_logger


def make_accelerator() -> Any:
    """The ``accelerate.Accelerator`` of this process (one process: DistributedType.NO)."""
    from accelerate import Accelerator

    # Several processes and no GPU (torchrun on CPUs, the tests): accelerate takes that for DDP over gloo only
    # when told cpu=True (``accelerate launch --cpu`` tells it through ACCELERATE_USE_CPU).
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=several and not torch.cuda.is_available())
    for flag, wanted in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(flag, "").lower() == "true" and distributed_kind(accelerator) != wanted:
            get_logger("train").warning(
                "the launch asked for %s but accelerate runs %s here (it needs GPUs): nothing is sharded", wanted,
                distributed_kind(accelerator))
    if not accelerator.is_main_process:
        # One voice: the other processes log warnings and errors only (no progress bars either).
        get_logger().setLevel(logging.WARNING)
    return accelerator


def distributed_kind(accelerator: Any) -> str:
    """``NO``, ``MULTI_CPU``, ``MULTI_GPU``, ``FSDP``, ``DEEPSPEED``... (accelerate's DistributedType name)."""
    return str(getattr(accelerator.distributed_type, "name", accelerator.distributed_type))


def is_sharded(accelerator: Any) -> bool:
    """True when parameters are split over the processes (FSDP, DeepSpeed ZeRO-3)."""
    return distributed_kind(accelerator) in ("FSDP", "DEEPSPEED")


class LossModule(torch.nn.Module):
    """The PEFT model with a forward that returns the mean causal-LM loss over the labelled tokens of a batch
    (chunked or not): the module that DDP, FSDP or DeepSpeed wrap."""

    def __init__(self, model: Any, loss_chunk_size: int | None) -> None:
        super().__init__()
        self.model = model
        self.loss_chunk_size = loss_chunk_size

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.loss_chunk_size:
            return causal_lm_loss(self.model, batch, self.loss_chunk_size)
        loss: torch.Tensor = self.model(**batch).loss
        return loss


def trainable_state_dict(accelerator: Any, wrapped: Any) -> dict[str, torch.Tensor] | None:
    """The full trainable tensors of the PEFT model inside ``wrapped`` (names as ``PeftModel`` has them),
    gathered from the shards; None when nothing is sharded (the model saves its own tensors). Collective
    when sharded: every process must call it."""
    if not is_sharded(accelerator):
        return None
    inner = accelerator.unwrap_model(wrapped)
    named = [(n.removeprefix("model."), p) for n, p in inner.named_parameters() if p.requires_grad]
    if distributed_kind(accelerator) == "DEEPSPEED":
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().to("cpu", copy=True) for n, p in named}
    out = {}
    for name, p in named:
        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2: DTensor shards -> all-gather
        out[name] = full.detach().to("cpu", copy=True)
    return out


def optimizer_state(accelerator: Any, wrapped: Any, optimizer: Any) -> dict[str, Any] | None:
    """The optimizer's full state for a checkpoint (collective under FSDP). None under DeepSpeed, whose
    partitioned optimizer langkit does not gather: a resumed ZeRO-3 run restarts the AdamW moments."""
    kind = distributed_kind(accelerator)
    if kind == "DEEPSPEED":
        return None
    if kind == "FSDP":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_optimizer_state_dict(accelerator.unwrap_model(wrapped), optimizer.optimizer, options=options))
    state: dict[str, Any] = optimizer.state_dict()
    return state


def load_optimizer_state(accelerator: Any, wrapped: Any, optimizer: Any, state: dict[str, Any] | None) -> None:
    """Put a checkpoint's optimizer state back (after ``accelerator.prepare``)."""
    kind = distributed_kind(accelerator)
    if state is None or kind == "DEEPSPEED":
        get_logger("train").warning(
            "the checkpoint holds no optimizer state (DeepSpeed ZeRO-3): AdamW's moments restart at zero")
        return
    if kind == "FSDP":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_optimizer_state_dict(accelerator.unwrap_model(wrapped), optimizer.optimizer, state, options=options)
        return
    optimizer.load_state_dict(state)


def sum_over_processes(accelerator: Any, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (the values themselves when alone)."""
    if accelerator.num_processes == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return [float(v) for v in accelerator.reduce(tensor, reduction="sum")]
