#!/usr/bin/env python
"""Attention alone on CPU: flex (FlexAttention + sinks) against langkit_sink and transformers' eager.

    .venv/bin/python scripts/bench_attention.py                       # tiny's heads, 512 / 2,048 / 4,096 tokens
    .venv/bin/python scripts/bench_attention.py --heads 64 --kv-heads 8 --head-dim 64 --lengths 1024 2048

One packed row (documents of 1/16 to 1/4 of the row, position ids restarting), float32, the full-attention
and the sliding-window (128) layer kinds. ``forward`` is under ``torch.no_grad`` (what FlexAttention runs on
CPU in torch 2.13, unfused); ``train`` is forward + backward, where flex runs torch's unfused reference
backward (``langkit.flex.cpu_reference_backward``: CPU has no supported FlexAttention backward). The paths
are timed in turn, ``--repeats`` times each, and the median kept, so that a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PATHS = ("eager", "langkit_sink", "flex")


def _inputs(length: int, heads: int, kv_heads: int, dim: int, grad: bool) -> dict[str, Any]:
    from langkit.attention import packed_eager_masks

    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_check import packed_row  # the same packing as the GPU check

    torch.manual_seed(0)
    position_ids = torch.cat([torch.arange(n) for n in packed_row(length, 0)])[None]
    return {
        "q": torch.randn(1, heads, length, dim, requires_grad=grad),
        "k": torch.randn(1, kv_heads, length, dim, requires_grad=grad),
        "v": torch.randn(1, kv_heads, length, dim, requires_grad=grad),
        "sinks": torch.randn(heads, requires_grad=grad),
        "position_ids": position_ids,
        "eager_masks": packed_eager_masks(position_ids, None, 128, torch.float32),
    }


def _run(path: str, x: dict[str, Any], window: int | None, grad: bool) -> float:
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    from langkit.attention import sink_attention_forward
    from langkit.flex import cpu_reference_backward, flex_attention_forward

    module = torch.nn.Module()
    module.sinks = torch.nn.Parameter(x["sinks"].detach().clone(), requires_grad=grad)
    module.num_key_value_groups = x["q"].shape[1] // x["k"].shape[1]
    scaling = x["q"].shape[-1] ** -0.5
    start = time.perf_counter()
    with torch.set_grad_enabled(grad), cpu_reference_backward():
        if path == "eager":
            mask = x["eager_masks"]["sliding_attention" if window else "full_attention"]
            out = eager_attention_forward(module, x["q"], x["k"], x["v"], mask, scaling=scaling)[0]
        else:
            forward = flex_attention_forward if path == "flex" else sink_attention_forward
            out = forward(module, x["q"], x["k"], x["v"], None, scaling=scaling, sliding_window=window,
                          position_ids=x["position_ids"])[0]
        if grad:
            out.sum().backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# attention only, CPU ({torch.get_num_threads()} threads), float32, {args.heads} heads / "
          f"{args.kv_heads} kv heads / head_dim {args.head_dim}, one packed row; median of {args.repeats}, "
          f"torch {torch.__version__}")
    print(f"{'tokens':>7} {'layer':<8} {'mode':<8} " + " ".join(f"{p:>13}" for p in PATHS) + "   flex/eager  flex/sink")
    for length in args.lengths:
        for window, layer in ((None, "full"), (128, "sliding")):
            for grad, mode in ((False, "forward"), (True, "train")):
                x = _inputs(length, args.heads, args.kv_heads, args.head_dim, grad)
                times: dict[str, list[float]] = {p: [] for p in PATHS}
                for path in PATHS:  # one untimed call each: dynamo's trace of flex, allocator warm-up
                    _run(path, x, window, grad)
                for _ in range(args.repeats):
                    for path in PATHS:
                        times[path].append(_run(path, x, window, grad))
                med = {p: statistics.median(t) for p, t in times.items()}
                print(f"{length:>7,} {layer:<8} {mode:<8} " + " ".join(f"{med[p] * 1e3:>10.1f} ms" for p in PATHS)
                      + f"   {med['flex'] / med['eager']:>10.2f}  {med['flex'] / med['langkit_sink']:>9.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
