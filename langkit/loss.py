"""Causal-LM loss without materialising the logits of a whole batch.

With gpt-oss's 201,088-token vocabulary the logits of one 16k-token sequence are 6.4 GB in bf16 (twice
that once upcast for the loss), more than the rest of a LoRA step. Here the loss runs over the labelled
positions in chunks of ``chunk_size`` rows: for each chunk the output layer's own ``forward`` makes the
[chunk, vocab] logits, the cross-entropy and its gradient ``softmax - onehot`` are computed at once, and
autograd turns that into gradients for the chunk's hidden states and for the output layer's trainable
parameters (PEFT's trainable new-token rows of ``lm_head``, or LoRA on it). Only those gradients are kept
(the size of the hidden states and of the parameters); the backward pass just scales them. So at most one
chunk's logits exist at a time, and the output layer's matmul runs twice per chunk (forward, and the
gradient of its input and weight), not three times as with checkpointing.

Calling the module (rather than multiplying by its ``weight``) keeps PEFT's wrappers exact: a
``TrainableTokensWrapper`` replaces the new rows of ``lm_head`` in its forward.

Positions whose label is -100 cost nothing: only labelled rows are gathered before the chunks (a
translation example's prompt and the padding are never projected onto the vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from langkit.harmony import IGNORE_INDEX


def _chunk_loss_and_grad(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                         inputs: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
    """Summed cross-entropy of ``head(hidden)`` ([c, H] -> [c, V]) against ``labels`` [c], and its gradient
    with respect to ``inputs`` (the chunk's hidden states and/or the head's trainable parameters)."""
    with torch.enable_grad():
        logits = head(hidden)  # [c, V], the head's dtype
    with torch.no_grad():
        # Five passes over [c, V] and no second [c, V] buffer: the float32 logits become the gradient in place.
        # (A head whose backward needed its own output would make autograd.grad below raise, never silently
        # differ: autograd checks the versions of what it saved. Linear heads and PEFT's wrappers don't.)
        scores = logits.float()  # the logits themselves when they are float32, else a float32 copy
        target = scores.gather(1, labels[:, None]).squeeze(1)  # [c]
        top = scores.amax(dim=-1, keepdim=True)  # [c, 1]
        probs = scores.sub_(top).exp_()  # exp(logit - max)
        total = probs.sum(dim=-1, keepdim=True)  # [c, 1]
        loss = (top.squeeze(1) + total.squeeze(1).log() - target).sum()  # sum of logsumexp - target logit
        if not inputs:
            return loss, ()
        # d(sum CE)/d logits = softmax - onehot(label), [c, V]
        grad_logits = probs.div_(total)
        grad_logits[torch.arange(labels.shape[0], device=labels.device), labels] -= 1.0
    grads = torch.autograd.grad(logits, inputs, grad_outputs=grad_logits.to(logits.dtype), allow_unused=True)
    return loss, grads


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over ``labels`` [M] of ``head(hidden)`` for hidden [M, H], every label kept."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, chunk_size: int,
                *params: torch.Tensor) -> torch.Tensor:
        need_hidden = ctx.needs_input_grad[0]
        trainable = [i for i, p in enumerate(params) if ctx.needs_input_grad[4 + i]]
        # Gradients are kept in float32 and summed over the chunks; the backward pass only scales them.
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_params = [torch.zeros(params[i].shape, dtype=torch.float32, device=params[i].device) for i in trainable]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(hidden.shape[0], start + chunk_size)
            chunk = hidden[start:end].detach().requires_grad_(need_hidden)
            inputs = ([chunk] if need_hidden else []) + [params[i] for i in trainable]
            loss, grads = _chunk_loss_and_grad(head, chunk, labels[start:end], inputs)
            total += loss
            if grad_hidden is not None:
                first = grads[0]
                assert first is not None  # the chunk's hidden states always reach the logits
                grad_hidden[start:end] = first
                grads = grads[1:]
            for acc, grad in zip(grad_params, grads, strict=True):
                if grad is not None:
                    acc += grad
        count = labels.shape[0]
        ctx.count = count
        ctx.n_params = len(params)
        ctx.trainable = trainable
        ctx.dtypes = (hidden.dtype, [params[i].dtype for i in trainable])
        ctx.save_for_backward(grad_hidden, *grad_params)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, *grad_params = ctx.saved_tensors
        scale = grad_output.float() / ctx.count
        hidden_dtype, param_dtypes = ctx.dtypes
        out_params: list[torch.Tensor | None] = [None] * ctx.n_params
        for i, grad, dtype in zip(ctx.trainable, grad_params, param_dtypes, strict=True):
            out_params[i] = (grad * scale).to(dtype)
        d_hidden = (grad_hidden * scale).to(hidden_dtype) if grad_hidden is not None else None
        return (d_hidden, None, None, None, *out_params)


def chunked_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module,
                          chunk_size: int = 1024) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` against ``labels`` over the positions whose label is not -100,
    computed ``chunk_size`` positions at a time. hidden [N, H], labels [N]; returns a scalar (float32).
    Equal to ``F.cross_entropy(head(hidden).float(), labels, ignore_index=-100)``, gradients included."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    keep = (labels != IGNORE_INDEX).nonzero().squeeze(1)  # [M]
    hidden, labels = hidden[keep], labels[keep]  # [M, H], [M]: only labelled rows are projected
    if labels.numel() == 0:
        # As F.cross_entropy: the mean over no labelled token is NaN (the training step refuses it).
        return hidden.sum().float() * float("nan")
    params = [p for p in head.parameters() if p.requires_grad]
    if not torch.is_grad_enabled() or not (hidden.requires_grad or params):
        with torch.no_grad():
            total = sum((_chunk_loss_and_grad(head, hidden[s:s + chunk_size], labels[s:s + chunk_size], [])[0]
                         for s in range(0, hidden.shape[0], chunk_size)), torch.zeros((), device=hidden.device))
        return total / labels.shape[0]
    loss: torch.Tensor = _ChunkedLinearCrossEntropy.apply(hidden, labels, head, chunk_size, *params)
    return loss


def causal_lm_loss(model: Any, batch: Mapping[str, Any], chunk_size: int) -> torch.Tensor:
    """The causal-LM loss of ``model`` (a ``PeftModel`` or a transformers causal LM) on ``batch``
    (``labels`` [B, L] plus the model's inputs), as transformers computes it (position t predicts label
    t+1, mean over labelled tokens) but with :func:`chunked_cross_entropy` on the output layer."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(causal_lm.config, "output_router_logits", False):
        raise ValueError("the chunked loss has no router auxiliary loss: set output_router_logits=False "
                         "(gpt-oss's default) or train.chunked_loss=false")
    decoder = getattr(causal_lm, causal_lm.base_model_prefix)  # GptOssModel: everything but lm_head
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = decoder(**inputs).last_hidden_state  # [B, L, H]
    labels = batch["labels"].to(hidden.device)
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # [B, L]: the label each position predicts
    return chunked_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), shifted.reshape(-1),
                                 causal_lm.get_output_embeddings(), chunk_size)
