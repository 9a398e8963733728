"""Exact sink-aware attention for gpt-oss, with memory linear in the sequence length.

gpt-oss attention gives every head ``h`` a learned sink logit ``sink_h`` that joins the softmax denominator
but carries no value. For query ``i``, with scores ``s_ij = q_i . k_j * scaling`` over the keys it may see::

    out_i = sum_j exp(s_ij) v_j / (sum_j exp(s_ij) + exp(sink_h))
          = O_i * sigmoid(LSE_i - sink_h)        (O: plain softmax attention, LSE_i = logsumexp_j s_ij)

transformers computes this eagerly (``eager_attention_forward`` in ``modeling_gpt_oss.py``) on a
[batch, heads, L, L] score tensor, so memory grows with L². Here the queries go in blocks of ``c`` rows;
each block scores only the keys it can see (causal, and on sliding-window layers only the last
``sliding_window`` keys), a [batch, heads, c, n] tensor that never exists for all queries at once. The
forward pass keeps the output and ``log(sum_j exp(s_ij) + exp(sink_h))`` per query ([batch, heads, L]);
the backward pass recomputes each block's probabilities from it (the FlashAttention recipe), so memory per
layer is O(L * c), not O(L²). Everything is plain PyTorch, the same on CPU and GPU.

Why not ``scaled_dot_product_attention`` + an LSE rescale: SDPA does not return the log-sum-exp on CPU
(only private kernels do), and the gradient has to flow through the LSE too. FlexAttention does that on a
CUDA GPU (``train.attention: flex``, ``langkit/flex.py``), but on CPU torch 2.13 has no backward pass for
it, and its unfused CPU forward materialises the scores: this module is the path that runs everywhere.

What is masked, matching transformers' eager masks:

* causal by index: query ``i`` is at absolute position ``i + Lk - Lq`` (``Lk > Lq`` only with a KV cache,
  whose keys are the last ``Lk`` tokens);
* sliding-window layers (``module.sliding_window``, 128 in gpt-oss): key ``j`` is visible iff
  ``j > i - sliding_window``;
* padding: a 2-D ``attention_mask`` [batch, keys] (0 = padding key, never attended);
* packed sequences: when ``position_ids`` restart (any step other than +1, the rule of transformers'
  ``find_packed_sequence_indices``), a token attends only within its own run of positions, i.e. its own
  packed example;
* a 4-D mask that a caller prepared itself (bool, True = attend, or additive float) is applied as is, as
  eager applies it, with no causal or window rule added.

Select it with ``train.attention: langkit_sink`` (see :func:`set_attention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from langkit.utils import get_logger

log = get_logger("attention")

EAGER = "eager"
LANGKIT_SINK = "langkit_sink"
FLEX = "flex"  # FlexAttention with sinks, langkit/flex.py
ATTENTION_IMPLEMENTATIONS = (EAGER, LANGKIT_SINK, FLEX)

# Score elements one query block may hold ([batch, heads, c, n]): 2**25 floats = 128 MiB in float32. The
# backward pass holds about three such tensors at a time. Read at call time, so tests can shrink it.
SCORE_BLOCK_ELEMENTS = 1 << 25
MIN_BLOCK_ROWS = 16


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor | None:
    """[B, L] id of the packed example of each token: a new example starts wherever the position does not
    step by +1 (positions restart per example). ``None`` when every row is a single sequence."""
    first = position_ids[:, :1] - 1
    segments = (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)
    if bool((segments[:, -1] == 0).all()):
        return None
    return segments


def allowed_block(q_start: int, q_end: int, k_start: int, k_end: int, offset: int, window: int | None,
                  kv_valid: torch.Tensor | None, segments: torch.Tensor | None,
                  device: torch.device) -> torch.Tensor:
    """Which keys ``k_start..k_end-1`` queries ``q_start..q_end-1`` may attend to: [B or 1, c, n] bool.

    Causal by index (the query at ``i + offset``), the sliding window when ``window``, padding keys
    (``kv_valid`` [B, Lk], False = padding) and packed examples (``segments`` [B, L], same id = same
    example) left out."""
    q = torch.arange(q_start, q_end, device=device)[:, None] + offset  # [c, 1] absolute positions
    k = torch.arange(k_start, k_end, device=device)[None, :]  # [1, n]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    allowed = allowed[None]  # [1, c, n]
    if kv_valid is not None:
        allowed = allowed & kv_valid[:, None, k_start:k_end]
    if segments is not None:
        allowed = allowed & (segments[:, q_start:q_end, None] == segments[:, None, k_start:k_end])
    return allowed


def packed_eager_masks(position_ids: torch.Tensor, attention_mask: torch.Tensor | None, sliding_window: int | None,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """4-D additive masks [B, 1, L, L] (0 = attend, dtype's minimum = not) for transformers' eager attention
    on packed rows, keyed by gpt-oss layer type. gpt-oss does not pass ``position_ids`` to its mask builder,
    so eager would let packed examples see each other; a prepared mask dict goes to the layers as is."""
    batch, length = position_ids.shape
    segments = segment_ids(position_ids)
    kv_valid = attention_mask.bool() if attention_mask is not None else None
    masks = {}
    for name, window in (("full_attention", None), ("sliding_attention", sliding_window)):
        allowed = allowed_block(0, length, 0, length, 0, window, kv_valid, segments, position_ids.device)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        masks[name] = mask.expand(batch, length, length)[:, None]
    return masks


# --------------------------------------------------------------------------------------------------
# The blockwise kernel
# --------------------------------------------------------------------------------------------------


def _blocks(q_len: int, k_len: int, offset: int, window: int | None, has_mask: bool,
            rows_per_head: int) -> Iterator[tuple[int, int, int, int]]:
    """(q_start, q_end, k_start, k_end) of each query block. A block's rows ``c`` are chosen so that
    c x (keys it sees) <= ``rows_per_head``: early causal blocks see few keys and can be taller."""
    q_start = 0
    while q_start < q_len:
        if has_mask:
            rows = rows_per_head // k_len
        else:
            # Keys seen: n = a + c with a = keys before the block's first query; c = root of c(a + c) = budget.
            a = q_start + offset if window is None else min(q_start + offset, window - 1)
            rows = int((math.sqrt(a * a + 4 * rows_per_head) - a) / 2)
            if window is not None:  # blocks much taller than the window mostly compute masked scores
                rows = min(rows, 2 * max(window, MIN_BLOCK_ROWS))
        q_end = min(q_len, q_start + max(MIN_BLOCK_ROWS, rows))
        if has_mask:
            k_start, k_end = 0, k_len
        else:
            k_start = 0 if window is None else max(0, q_start + offset - window + 1)
            k_end = min(k_len, q_end + offset)
        yield q_start, q_end, k_start, k_end
        q_start = q_end


def _masked_scores(query: torch.Tensor, key: torch.Tensor, block: tuple[int, int, int, int], scaling: float,
                   offset: int, window: int | None, kv_valid: torch.Tensor | None, segments: torch.Tensor | None,
                   mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q_rows [B, Hkv, g*c, D], scores [B, Hkv, g, c, n] float32 with -inf where not attended).

    GQA without copying keys: the g query heads that share a key head are stacked as rows,
    head h = kv * g + r (the order of transformers' ``repeat_kv``)."""
    q_start, q_end, k_start, k_end = block
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    groups, rows = heads // kv_heads, q_end - q_start
    q_rows = query[:, :, q_start:q_end].reshape(batch, kv_heads, groups * rows, dim)
    scores = torch.matmul(q_rows, key[:, :, k_start:k_end].transpose(-1, -2)).float()
    scores = scores.mul_(scaling).view(batch, kv_heads, groups, rows, k_end - k_start)
    if mask is not None:
        block_mask = mask[:, :, q_start:q_end, k_start:k_end]
        block_mask = block_mask[:, :, None] if block_mask.shape[1] == 1 else block_mask.reshape(
            block_mask.shape[0], kv_heads, groups, rows, k_end - k_start)
        if block_mask.dtype == torch.bool:
            scores.masked_fill_(~block_mask, float("-inf"))
        else:
            scores.add_(block_mask.float())
    else:
        allowed = allowed_block(q_start, q_end, k_start, k_end, offset, window, kv_valid, segments, query.device)
        scores.masked_fill_(~allowed[:, None, None], float("-inf"))
    return q_rows, scores


class _SinkAttention(torch.autograd.Function):
    """Blockwise attention with a sink term; see the module docstring. Shapes: query [B, H, Lq, D],
    key/value [B, Hkv, Lk, D], sinks [H]; returns [B, H, Lq, D]."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, sinks: torch.Tensor,
                scaling: float, window: int | None, kv_valid: torch.Tensor | None, segments: torch.Tensor | None,
                mask: torch.Tensor | None, rows_per_head: int) -> torch.Tensor:
        batch, heads, q_len, dim = query.shape
        kv_heads, k_len = key.shape[1], key.shape[2]
        groups = heads // kv_heads
        offset = k_len - q_len
        out = torch.empty(batch, kv_heads, groups, q_len, dim, dtype=query.dtype, device=query.device)
        # log of each query's full softmax denominator, sink included: [B, Hkv, g, Lq]
        lse = torch.empty(batch, kv_heads, groups, q_len, dtype=torch.float32, device=query.device)
        sink = sinks.float().view(1, kv_heads, groups, 1)
        for block in _blocks(q_len, k_len, offset, window, mask is not None, rows_per_head):
            q_start, q_end, k_start, k_end = block
            _, scores = _masked_scores(query, key, block, scaling, offset, window, kv_valid, segments, mask)
            # The sink is finite, so the max is too, even on a row with no visible key (its output is then 0,
            # as in eager, where the sink takes all the probability).
            top = torch.maximum(scores.amax(-1), sink)  # [B, Hkv, g, c]
            probs = scores.sub_(top[..., None]).exp_()  # unnormalised, in place of the scores
            denom = probs.sum(-1) + torch.exp(sink - top)  # [B, Hkv, g, c]
            rows = probs.view(batch, kv_heads, -1, k_end - k_start).to(value.dtype)
            block_out = torch.matmul(rows, value[:, :, k_start:k_end]).view(batch, kv_heads, groups, -1, dim)
            out[:, :, :, q_start:q_end] = (block_out.float() / denom[..., None]).to(query.dtype)
            lse[:, :, :, q_start:q_end] = top + denom.log()
        out = out.view(batch, heads, q_len, dim)
        ctx.save_for_backward(query, key, value, sinks, out, lse, kv_valid, segments, mask)
        ctx.scaling, ctx.window, ctx.rows_per_head = scaling, window, rows_per_head
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        query, key, value, sinks, out, lse, kv_valid, segments, mask = ctx.saved_tensors
        scaling, window = ctx.scaling, ctx.window
        batch, heads, q_len, dim = query.shape
        kv_heads, k_len = key.shape[1], key.shape[2]
        groups = heads // kv_heads
        offset = k_len - q_len
        dtype = query.dtype
        grad_rows = grad_out.reshape(batch, kv_heads, groups, q_len, dim)
        # delta_i = dO_i . out_i (out with the sink): the softmax backward's row term, [B, Hkv, g, Lq]
        delta = (grad_out.float() * out.float()).sum(-1).view(batch, kv_heads, groups, q_len)
        grad_q = torch.zeros(batch, kv_heads, groups, q_len, dim, dtype=torch.float32, device=query.device)
        grad_k = torch.zeros(key.shape, dtype=torch.float32, device=key.device)
        grad_v = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        for block in _blocks(q_len, k_len, offset, window, mask is not None, ctx.rows_per_head):
            q_start, q_end, k_start, k_end = block
            n = k_end - k_start
            q_rows, scores = _masked_scores(query, key, block, scaling, offset, window, kv_valid, segments, mask)
            # Normalised probabilities (sink in the denominator), in place of the scores: [B, Hkv, g, c, n]
            probs = scores.sub_(lse[:, :, :, q_start:q_end, None]).exp_()
            d_out = grad_rows[:, :, :, q_start:q_end].reshape(batch, kv_heads, -1, dim)  # [B, Hkv, g*c, D]
            k_block, v_block = key[:, :, k_start:k_end], value[:, :, k_start:k_end]  # [B, Hkv, n, D]
            # dS = P * (dO . v_j - delta_i), in place of dP
            d_scores = torch.matmul(d_out, v_block.transpose(-1, -2)).float().view(probs.shape)
            d_scores = d_scores.sub_(delta[:, :, :, q_start:q_end, None]).mul_(probs)
            prob_rows = probs.view(batch, kv_heads, -1, n).to(dtype)
            ds_rows = d_scores.view(batch, kv_heads, -1, n).to(dtype)
            grad_v[:, :, k_start:k_end] += torch.matmul(prob_rows.transpose(-1, -2), d_out).float()
            grad_k[:, :, k_start:k_end] += torch.matmul(ds_rows.transpose(-1, -2), q_rows).float().mul_(scaling)
            grad_q[:, :, :, q_start:q_end] = torch.matmul(ds_rows, k_block).float().mul_(scaling).view(
                batch, kv_heads, groups, -1, dim)
        grad_sinks = None
        if ctx.needs_input_grad[3]:
            # d out_i / d sink = -out_i * P_sink,i, so dL/dsink_h = -sum_i P_sink,i * delta_i
            sink = sinks.float().view(1, kv_heads, groups, 1)
            grad_sinks = -(torch.exp(sink - lse) * delta).sum(dim=(0, 3)).reshape(heads).to(sinks.dtype)
        return (grad_q.view(batch, heads, q_len, dim).to(dtype), grad_k.to(key.dtype), grad_v.to(value.dtype),
                grad_sinks, None, None, None, None, None, None)


def sink_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, sinks: torch.Tensor, scaling: float,
                   attention_mask: torch.Tensor | None = None, sliding_window: int | None = None,
                   position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """gpt-oss attention with sinks, computed blockwise: query [B, H, Lq, D], key/value [B, Hkv, Lk, D],
    sinks [H]; returns [B, H, Lq, D]. ``attention_mask``: None, a 2-D padding mask [B, >= Lk] (its last Lk
    columns are the keys') or a prepared 4-D mask; ``position_ids`` [B or 1, Lq] that restart mark packed
    examples (only read when Lq == Lk, i.e. without a KV cache)."""
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    if heads % key.shape[1]:
        raise ValueError(f"{heads} query heads are not a multiple of {key.shape[1]} key/value heads")
    kv_valid = segments = mask = None
    if attention_mask is not None:
        if attention_mask.dim() == 4:
            mask = attention_mask
        elif attention_mask.dim() == 2:
            kv_valid = attention_mask[:, -k_len:].bool()
            if bool(kv_valid.all()):
                kv_valid = None
        else:
            raise ValueError(f"attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")
    if mask is None and position_ids is not None and q_len == k_len:
        segments = segment_ids(position_ids.expand(batch, -1))
    window = sliding_window if mask is None else None
    rows_per_head = max(1, SCORE_BLOCK_ELEMENTS // (batch * heads))
    out: torch.Tensor = _SinkAttention.apply(query, key, value, sinks, scaling, window, kv_valid, segments, mask,
                                             rows_per_head)
    return out


def interface_entry(name: str, attention: Callable[..., torch.Tensor]) -> Callable[..., tuple[torch.Tensor, None]]:
    """An entry of transformers' ``AttentionInterface`` for ``attention(query, key, value, sinks, scaling,
    attention_mask, sliding_window, position_ids)`` ([B, H, Lq, D]): the arguments and output layout of
    gpt-oss's ``eager_attention_forward`` ([B, Lq, H, D], no attention weights)."""

    def forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                sliding_window: int | None = None, s_aux: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        if dropout:
            raise ValueError(f"{name} attention has no dropout (got {dropout}); gpt-oss trains with attention_dropout=0")
        sinks = s_aux if s_aux is not None else module.get_parameter("sinks")
        out = attention(query, key, value, sinks, scaling, attention_mask, sliding_window, position_ids)
        return out.transpose(1, 2).contiguous(), None

    return forward


sink_attention_forward = interface_entry(LANGKIT_SINK, sink_attention)
"""The ``langkit_sink`` entry of transformers' ``AttentionInterface``."""


# --------------------------------------------------------------------------------------------------
# Selecting it
# --------------------------------------------------------------------------------------------------


def padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                 mask_function: Any = None, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor | None:
    """The mask builder of ``langkit_sink`` in transformers' ``AttentionMaskInterface``: only the keys' 2-D
    padding mask [B, kv_length] (or None), never an [L, L] mask; the causal, window and packing rules are
    applied per block by the attention itself. (Without a builder transformers would drop the padding
    mask altogether.)"""
    if attention_mask is None:
        return None
    from transformers.masking_utils import prepare_padding_mask

    mask = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    assert mask is not None
    return mask[:, kv_offset:kv_offset + kv_length]


def register(name: str = LANGKIT_SINK, forward: Callable[..., Any] = sink_attention_forward) -> None:
    """Make ``attn_implementation=name`` known to transformers: the attention function and its mask builder
    (:func:`padding_mask`: only the keys' 2-D padding mask reaches the attention, which applies the causal,
    window and packing rules itself)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, padding_mask)


def set_attention(model: Any, name: str) -> None:
    """Switch a transformers model (before PEFT wrapping, or its base model) to attention ``name``."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if name == LANGKIT_SINK:
        register()
    elif name == FLEX:
        from langkit import flex

        flex.register()
        # Not transformers' own "flex_attention": its block masks come from a builder that gpt-oss gives no
        # position ids, so packed examples would see each other.
        name = flex.IMPLEMENTATION
    model.set_attn_implementation(name)
    log.debug("attention implementation: %s", name)
