"""gpt-oss attention with sinks on torch's FlexAttention: ``train.attention: flex``.

FlexAttention (``torch.nn.attention.flex_attention``) is a fused, block-sparse attention kernel that
torch.compile generates with Triton for a CUDA GPU, forward and backward: it never holds the
[batch, heads, L, L] scores, and it skips whole 128 x 128 tiles that a *block mask* marks empty, so a
sliding-window layer costs O(L x window) and a causal one half of L². What it cannot express is gpt-oss's
sink: a per-head logit ``sink_h`` in the softmax denominator that carries no value. It does return each
query's log-sum-exp ``LSE_i = logsumexp_j s_ij`` over the keys it saw, and the sink only rescales a row
(see ``langkit/attention.py``)::

    out_i = O_i * exp(LSE_i) / (exp(LSE_i) + exp(sink_h)) = O_i * sigmoid(LSE_i - sink_h)

so the output is FlexAttention's plus one elementwise product. The LSE is differentiable (torch computes
its gradient in the same backward kernel), so the gradient reaches q, k, v through both ``O`` and
``LSE``, and the sink through the sigmoid: exact, not an approximation.

The masks are the ones ``langkit_sink`` applies, as one ``mask_mod`` of torch tensors:

* causal by index: query ``i`` sits at absolute position ``i + Lk - Lq`` (a KV cache's keys come first);
* sliding-window layers: key ``j`` is visible iff ``j > position - sliding_window``;
* padding: the keys' 2-D ``attention_mask`` (0 = never attended);
* packing: where ``position_ids`` restart, a token attends only within its own example
  (``langkit.attention.segment_ids``);
* a 4-D mask a caller prepared (bool, True = attend, or additive float) is applied as it is, alone.

The block mask (which tiles hold any visible key, which hold only visible keys) is computed here by
evaluating the rule over chunks of query rows, so its memory stays bounded at any length, and cached
for the layers of one forward pass (and the recomputation of gradient checkpointing).

Where it runs: on CUDA through ``torch.compile(flex_attention)`` (the fused kernels). On CPU, torch 2.13
has only FlexAttention's unfused reference (it materialises the scores) and refuses its backward pass,
and its compiled CPU kernel returns no LSE, so on CPU ``flex`` serves for checking the forward pass only;
train on CPU with ``langkit_sink``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from langkit import attention
from langkit.attention import FLEX, segment_ids
from langkit.utils import get_logger

log = get_logger("attention")

__all__ = ["FLEX", "IMPLEMENTATION", "flex_sink_attention", "flex_attention_forward", "register"]
IMPLEMENTATION = "langkit_flex"  # its key in transformers' AttentionInterface ("flex_attention" is transformers')
BLOCK = 128  # FlexAttention's tile, query rows x keys (its default sparse block size)
# Mask elements evaluated at a time while building a block mask: 2**26 bools = 64 MiB per temporary.
MASK_CHUNK_ELEMENTS = 1 << 26
_CACHE_SIZE = 8  # block masks kept: a forward pass needs two (full and sliding layers)

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------


def rule_mask_mod(offset: torch.Tensor, window: torch.Tensor, segments: torch.Tensor,
                  kv_valid: torch.Tensor) -> MaskMod:
    """The causal, window, packing and padding rule as a FlexAttention ``mask_mod``. Every argument is a
    tensor (0-d ``offset`` = Lk - Lq and ``window``; ``segments`` [B, n] example ids by key position and
    ``kv_valid`` [B, n] bool, both padded past Lk so that the kernel's tiles never index out of range), so
    one compiled kernel serves full and sliding layers, packed or not, padded or not."""

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        position = q + offset
        return ((kv <= position) & (kv > position - window) & kv_valid[b, kv]
                & (segments[b, position] == segments[b, kv]))

    return mask_mod


def dense_mask_mods(mask: torch.Tensor) -> tuple[MaskMod, Any]:
    """(mask_mod, score_mod) of a prepared 4-D mask [B, 1 or H, Lq, Lk] padded to whole tiles: bool (True =
    attend; no score_mod), or additive float (attend where above half the dtype's minimum, and the value
    is added to the score, as eager adds it)."""
    per_head = mask.shape[1] > 1
    if mask.dtype == torch.bool:
        def bool_mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return mask[b, h if per_head else 0, q, kv]

        return bool_mask_mod, None
    threshold = torch.finfo(mask.dtype).min / 2

    def float_mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return mask[b, h if per_head else 0, q, kv] > threshold

    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q: torch.Tensor,
                  kv: torch.Tensor) -> torch.Tensor:
        return score + mask[b, h if per_head else 0, q, kv].to(score.dtype)

    return float_mask_mod, score_mod


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., nq, nk] 0/1 tiles -> (tiles per query row [..., nq], their key-tile indices first [..., nq, nk]),
    the layout of ``BlockMask.from_kv_blocks``."""
    counts = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts, order


def block_mask_from(mask_mod: MaskMod, batch: int, heads: int, q_len: int, k_len: int,
                    device: torch.device) -> Any:
    """The ``BlockMask`` of ``mask_mod`` over [batch, heads, q_len, k_len] (``heads`` 1 when the rule is the
    same for every head): tiles where every pair is visible are *full* (no mask_mod call in the kernel),
    tiles with some are *partial*, the rest are skipped. The rule is evaluated on a chunk of query rows
    at a time ([B, heads, rows, keys] bools of at most ``MASK_CHUNK_ELEMENTS``), never on all L² at once."""
    from torch.nn.attention.flex_attention import BlockMask

    q_pad, k_pad = _round_up(q_len, BLOCK), _round_up(k_len, BLOCK)
    rows = max(BLOCK, MASK_CHUNK_ELEMENTS // max(1, batch * heads * k_pad) // BLOCK * BLOCK)
    b = torch.arange(batch, device=device)[:, None, None, None]
    h = torch.arange(heads, device=device)[None, :, None, None]
    kv = torch.arange(k_pad, device=device)[None, None, None, :]
    partial, full = [], []
    for start in range(0, q_pad, rows):
        q = torch.arange(start, min(q_pad, start + rows), device=device)[None, None, :, None]
        # Pairs past either length are never visible: a tile that holds them is at most partial.
        allowed = mask_mod(b, h, q, kv) & (q < q_len) & (kv < k_len)
        allowed = allowed.expand(batch, heads, q.shape[2], k_pad)
        tiles = allowed.reshape(batch, heads, q.shape[2] // BLOCK, BLOCK, k_pad // BLOCK, BLOCK)
        seen = tiles.sum(dim=(3, 5), dtype=torch.int32)  # [B, heads, rows/128, keys/128] visible pairs
        full.append(seen == BLOCK * BLOCK)
        partial.append((seen > 0) & (seen < BLOCK * BLOCK))
    kv_num, kv_indices = _ordered(torch.cat(partial, dim=2))
    full_num, full_indices = _ordered(torch.cat(full, dim=2))
    return BlockMask.from_kv_blocks(kv_num, kv_indices, full_num, full_indices, BLOCK_SIZE=BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(q_len, k_len))


class _BlockMaskCache:
    """The last few block masks, by shape, window and the very tensors they were built from (held by weak
    reference and checked for in-place changes): the layers of a forward pass share theirs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[Any, ...], tuple[list[Any], list[int], Any]] = OrderedDict()

    def get(self, key: tuple[Any, ...], sources: list[torch.Tensor]) -> Any:
        entry = self.entries.get(key)
        if entry is None:
            return None
        refs, versions, value = entry
        if all(r() is t and t._version == v for r, t, v in zip(refs, sources, versions, strict=True)):
            self.entries.move_to_end(key)
            return value
        del self.entries[key]
        return None

    def put(self, key: tuple[Any, ...], sources: list[torch.Tensor], value: Any) -> None:
        self.entries[key] = ([weakref.ref(t) for t in sources], [t._version for t in sources], value)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


_cache = _BlockMaskCache(_CACHE_SIZE)


def _rule_block_mask(batch: int, q_len: int, k_len: int, window: int | None, padding: torch.Tensor | None,
                     position_ids: torch.Tensor | None, device: torch.device) -> Any:
    """The block mask of the rule (cached): ``padding`` is the 2-D mask the layer was given (its last
    ``k_len`` columns are the keys'), kept as the cache's key as it is, not a slice of it (a new object)."""
    sources = [t for t in (padding, position_ids) if t is not None]
    key = ("rule", batch, q_len, k_len, window, str(device), tuple(id(t) for t in sources))
    cached = _cache.get(key, sources)
    if cached is not None:
        return cached
    # Tensors the mask_mod indexes, by key position, padded past the last tile of keys and of queries
    # (positions reach q_pad - 1 + Lk - Lq < k_pad + BLOCK).
    n = _round_up(k_len, BLOCK) + BLOCK
    segments = torch.zeros(batch, n, dtype=torch.long, device=device)
    if position_ids is not None and q_len == k_len:
        ids = segment_ids(position_ids.expand(batch, -1))
        if ids is not None:
            segments[:, :k_len] = ids
            segments[:, k_len:] = -1  # padding past the end is its own example
    valid = torch.zeros(batch, n, dtype=torch.bool, device=device)
    valid[:, :k_len] = True if padding is None else padding[:, -k_len:].bool()
    offset = torch.tensor(k_len - q_len, device=device)
    # No window: one past every position, so that the same rule (and compiled kernel) serves both layers.
    limit = torch.tensor(window if window is not None else k_len + BLOCK + 1, device=device)
    mask_mod = rule_mask_mod(offset, limit, segments, valid)
    block_mask = block_mask_from(mask_mod, batch, 1, q_len, k_len, device)
    _cache.put(key, sources, block_mask)
    return block_mask


# --------------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------------

_compiled: Any = None


def _flex_kernel(device: torch.device) -> Any:
    """``flex_attention`` compiled for CUDA (once per process; torch recompiles per shape itself and
    treats lengths as dynamic after the second); the unfused reference elsewhere."""
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled is None:
        _compiled = torch.compile(flex_attention)
    return _compiled


def _lse_kwargs() -> dict[str, Any]:
    """The LSE request: ``return_aux`` since torch 2.9 (``return_lse`` is deprecated there), else ``return_lse``."""
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9
        return {"return_lse": True}
    return {"return_aux": AuxRequest(lse=True)}


def flex_sink_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, sinks: torch.Tensor,
                        scaling: float, attention_mask: torch.Tensor | None = None, sliding_window: int | None = None,
                        position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """gpt-oss attention with sinks on FlexAttention: query [B, H, Lq, D], key/value [B, Hkv, Lk, D],
    sinks [H]; returns [B, H, Lq, D]. ``attention_mask`` and ``position_ids`` as in
    :func:`langkit.attention.sink_attention` (2-D padding mask, restarting positions for packing, or a
    prepared 4-D mask)."""
    batch, heads, q_len, _ = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} key/value heads")
    score_mod = None
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[..., -q_len:, -k_len:]
        # Padded to whole tiles (never visible) so that the kernel's boundary tiles index inside it.
        pad_q, pad_k = _round_up(q_len, BLOCK) - q_len, _round_up(k_len, BLOCK) - k_len
        fill = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
        mask = torch.nn.functional.pad(mask, (0, pad_k, 0, pad_q), value=fill)
        mask_mod, score_mod = dense_mask_mods(mask)
        block_mask = block_mask_from(mask_mod, mask.shape[0], mask.shape[1], q_len, k_len, query.device)
    else:
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")
        block_mask = _rule_block_mask(batch, q_len, k_len, sliding_window, attention_mask, position_ids,
                                      query.device)
    try:
        out, aux = _flex_kernel(query.device)(query, key, value, score_mod=score_mod, block_mask=block_mask,
                                              scale=scaling, enable_gqa=heads != kv_heads, **_lse_kwargs())
    except NotImplementedError as err:
        if query.device.type == "cpu":
            raise NotImplementedError(f"{err} (train.attention=flex trains on a CUDA GPU only; on CPU use "
                                      "langkit_sink, exact with memory linear in the length)") from err
        raise
    lse = aux if isinstance(aux, torch.Tensor) else aux.lse  # [B, H, Lq] float32, natural log
    # The sink's share of each row: out * sigmoid(LSE - sink). A row that sees no key has LSE = -inf and
    # output 0, as in eager (the sink takes all of its probability).
    keep = torch.sigmoid(lse - sinks.float()[None, :, None])
    result: torch.Tensor = out * keep[..., None].to(out.dtype)
    return result


flex_attention_forward = attention.interface_entry("flex", flex_sink_attention)
"""The ``langkit_flex`` entry of transformers' ``AttentionInterface``."""


@contextmanager
def cpu_reference_backward() -> Iterator[None]:
    """Within this block, torch's unfused FlexAttention runs its backward pass on CPU too. torch 2.13 refuses
    it at a device check only (its unfused backward is the reference its fused kernels are tested
    against, and runs on any device); this lifts that one refusal, keeping the rest of the check. For
    tests and the CPU smoke run of ``scripts/gpu_check.py``: it materialises the [B, H, L, L] scores, so it
    is no way to train."""
    import torch.nn.attention.flex_attention as torch_flex

    check = torch_flex._validate_device

    def without_cpu_refusal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        check(query.detach(), key.detach(), value.detach())

    torch_flex._validate_device = without_cpu_refusal
    try:
        yield
    finally:
        torch_flex._validate_device = check


def register() -> None:
    """Make ``attn_implementation="langkit_flex"`` known to transformers, with the mask builder of
    ``langkit_sink`` (only the keys' 2-D padding mask reaches the attention; the rest is the block mask)."""
    attention.register(IMPLEMENTATION, flex_attention_forward)
