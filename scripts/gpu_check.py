#!/usr/bin/env python
"""The GPU check of the long-context training paths: one run, one table.

    python scripts/gpu_check.py                     # on one H200: gpt-oss-20b, random bf16 weights, ~7 min
    python scripts/gpu_check.py --model tiny --device cpu --lengths 128 256   # CPU smoke run, seconds

What it does, in this order, writing the table (``--out``, markdown, and the same stem ``.json``) after
every row so that a run cut short still leaves what it measured:

1. builds the model's real architecture with random weights directly on the device (nothing downloaded:
   ``langkit.models.build_random_model``), 64 new token rows, and wraps it as the train stage does (LoRA
   on q/k/v/o and on the experts, the new rows trainable, gradient checkpointing on);
2. the equality check at ``--equality-length`` tokens (2,048 on the GPU): each attention path against
   transformers' eager attention run in float64 on the same inputs, for every mask kind (causal, sliding
   window, packed, both, left padding), in float32 and bf16: relative error ``|x - ref| / |ref|`` of the
   output and of the gradients of q, k, v and the sinks; then the whole model's loss and LoRA gradients,
   flex and langkit_sink against eager, on one packed row;
3. the eval stage's generation speed: ``model.generate`` as ``langkit eval`` calls it (eager attention,
   greedy, KV cache, left-padded prompts of harmony-prompt length, the adapter unmerged), segments/s at
   batch 1 and 32; random weights never emit a stop token, so every segment is ``--gen-new-tokens`` long;
4. for each length (4k, 16k, 32k, 64k packed tokens: one row of several documents, position ids
   restarting per document) and each attention path (``flex``, ``langkit_sink``, ``eager``, all with the
   chunked loss so that attention is the only difference): ``--steps`` LoRA steps (AdamW), the last one
   timed (the first includes compilation); tokens/s, step time, ``torch.cuda.max_memory_allocated``.
   A cell that runs out of memory is reported as OOM and the run goes on; eager is not tried past a
   length where it ran out of memory; a cell whose predicted time (the path's last step time scaled by
   the length ratio squared, plus its first step's one-off cost) would overrun ``--budget-s`` is skipped
   and says so.

On CPU (the smoke run), flex trains through torch's unfused reference backward
(``langkit.flex.cpu_reference_backward``): it exercises every line of this script, its timings mean
nothing for the GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PATHS = ("flex", "langkit_sink", "eager")
N_NEW_TOKENS = 64
STOP_IDS = [200002, 200007]  # <|return|>, <|end|>
PAD_ID = 199999
DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": dict(model="openai/gpt-oss-20b", lengths=[4096, 16384, 32768, 65536], equality_length=2048,
                 gen_batches=[1, 32], gen_new_tokens=64, budget_s=450.0),
    "cpu": dict(model="tiny", lengths=[128, 256], equality_length=96, gen_batches=[1, 4], gen_new_tokens=4,
                budget_s=0.0),
}
MASK_KINDS = ("causal", "sliding", "packed", "packed-sliding", "left-padded")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def is_oom(err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None),
                                  MemoryError) if t is not None)
    text = str(err).lower()
    return isinstance(err, oom_types) or "out of memory" in text or "can't allocate memory" in text


def guarded(fn: Callable[[], dict[str, Any]], device: str) -> dict[str, Any]:
    """``fn()``, or ``{"status": "OOM" | "error", ...}`` when it raises; then its memory is freed (after the
    ``except``, so that the traceback's frames no longer hold the tensors)."""
    failure: dict[str, Any] | None = None
    try:
        result = fn()
    except Exception as err:  # one cell's failure must not end the one GPU run
        failure = {"status": "OOM" if is_oom(err) else "error", "error": str(err).strip().splitlines()[0][:300]}
        if failure["status"] == "error":
            traceback.print_exc()
    if failure is not None:
        gc.collect()  # a failed cell's tensors may sit in reference cycles (the traceback's frames)
    if device == "cuda":
        torch.cuda.empty_cache()
    return failure if failure is not None else result


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    ref64 = ref.double()
    return float((got.double() - ref64).norm() / ref64.norm().clamp_min(1e-300))


def flex_context(path: str, device: str) -> Any:
    """On CPU, flex's backward needs torch's unfused reference (see langkit.flex)."""
    if path == "flex" and device == "cpu":
        from langkit.flex import cpu_reference_backward

        return cpu_reference_backward()
    return nullcontext()


def packed_row(length: int, seed: int) -> list[int]:
    """Document lengths filling one row of ``length`` tokens: 1/16 to 1/4 of the row each (about 8)."""
    rng = random.Random(seed)
    sizes, left = [], length
    while left > 0:
        n = min(left, rng.randint(max(1, length // 16), max(1, length // 4)))
        sizes.append(n)
        left -= n
    return sizes


def packed_batch(length: int, path: str, window: int | None, dtype: torch.dtype, device: str,
                 seed: int = 0) -> dict[str, Any]:
    """One packed row as the train stage collates it (``collate_packed``); eager gets its 4-D masks."""
    from langkit.attention import packed_eager_masks
    from langkit.harmony import Example
    from langkit.train.data import collate_packed

    rng = random.Random(seed)
    docs = []
    for n in packed_row(length, seed):
        ids = [rng.randrange(200_000) for _ in range(n)]
        docs.append(Example(ids, list(ids)))
    batch: dict[str, Any] = {k: v.to(device) for k, v in collate_packed([docs], PAD_ID).items()}
    if path == "eager":
        batch["attention_mask"] = packed_eager_masks(batch["position_ids"], batch["attention_mask"], window, dtype)
    return batch


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def build(model_name: str, device: str, dtype_name: str, lora_r: int) -> tuple[Any, Any, list[int]]:
    """(PEFT model, its base, new token ids): the architecture with random weights, resized for 64 new
    tokens, gradient checkpointing on, LoRA as the train stage sets it (q/k/v/o + experts, new rows)."""
    from peft import get_peft_model

    from langkit.config import TrainConfig
    from langkit.models import build_random_model, resize_for_new_tokens
    from langkit.tokenizer import BASE_VOCAB_SIZE, NewToken
    from langkit.train import lora_config

    base = build_random_model(model_name, dtype=dtype_name, device=device if device == "cuda" else None)
    new = [NewToken(BASE_VOCAB_SIZE + i, f"t{i}", f"t{i}", ("a", "b"), [1000 + i, 2000 + i], 1)
           for i in range(N_NEW_TOKENS)]
    new_ids = resize_for_new_tokens(base, BASE_VOCAB_SIZE + N_NEW_TOKENS, new)
    base.config.use_cache = False
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train = TrainConfig(model=model_name, dtype=dtype_name, lora_r=lora_r, lora_alpha=2 * lora_r)
    torch.manual_seed(0)
    model = get_peft_model(base, lora_config(train, new_ids)).to(device)
    model.train()
    return model, base, new_ids


def trainable(model: Any) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def train_steps(model: Any, base: Any, path: str, length: int, steps: int, device: str,
                chunk: int) -> dict[str, Any]:
    """``steps`` LoRA steps on one packed row of ``length`` tokens with attention ``path``."""
    from langkit.attention import set_attention
    from langkit.loss import causal_lm_loss

    set_attention(base, path)
    window = getattr(base.config, "sliding_window", None)
    batch = packed_batch(length, path, window, base.dtype, device)
    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.zero_grad(set_to_none=True)
    reset_peak(device)
    times, loss = [], float("nan")
    with flex_context(path, device):
        for _ in range(steps):
            sync(device)
            start = time.perf_counter()
            value = causal_lm_loss(model, batch, chunk)
            value.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            times.append(time.perf_counter() - start)
            loss = float(value.detach())
    return {"status": "ok", "first_step_s": times[0], "step_s": times[-1], "tokens_per_s": length / times[-1],
            "peak_gib": peak_gib(device), "loss": loss}


# --------------------------------------------------------------------------------------------------
# 2. Equality
# --------------------------------------------------------------------------------------------------


class _Heads(torch.nn.Module):
    """What transformers' eager gpt-oss attention reads from its module: the sinks and the GQA groups."""

    def __init__(self, sinks: torch.Tensor, kv_heads: int) -> None:
        super().__init__()
        self.sinks = torch.nn.Parameter(sinks)
        self.num_key_value_groups = sinks.shape[0] // kv_heads


def _mask_case(kind: str, length: int, device: str) -> tuple[torch.Tensor | None, torch.Tensor | None, int | None]:
    """(2-D padding mask, position ids, window) of a mask kind."""
    window = 128 if "sliding" in kind else None
    padding = position_ids = None
    if kind.startswith("packed"):
        position_ids = torch.cat([torch.arange(n) for n in packed_row(length, 1)])[None].to(device)
    if kind == "left-padded":
        padding = torch.ones(1, length, dtype=torch.long, device=device)
        padding[:, : length // 10] = 0
    return padding, position_ids, window


def _attention_run(case: dict[str, Any], path: str, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One path on one equality case: (output, grads of q, k, v and the sinks), computed in ``dtype``."""
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    from langkit.attention import packed_eager_masks, sink_attention_forward
    from langkit.flex import flex_attention_forward

    q, k, v = (t.detach().clone().to(dtype).requires_grad_() for t in case["qkv"])
    module = _Heads(case["sinks"].detach().clone().to(dtype), case["kv_heads"])
    window, padding = case["window"], case["padding"]
    if path == "eager":
        name = "sliding_attention" if window else "full_attention"
        mask = packed_eager_masks(case["positions"], padding, window, dtype)[name]
        out = eager_attention_forward(module, q, k, v, mask, scaling=case["scaling"])[0]
    else:
        forward = flex_attention_forward if path == "flex" else sink_attention_forward
        out = forward(module, q, k, v, padding, scaling=case["scaling"], sliding_window=window,
                      position_ids=case["position_ids"])[0]
    (out.float() * case["weight"]).sum().backward()
    return out.detach(), [t.grad for t in (q, k, v, module.sinks)]  # type: ignore[misc]


def attention_equality(config: Any, length: int, device: str) -> list[dict[str, Any]]:
    """Each path against float64 eager on one [1, heads, length, head_dim] problem per mask kind and dtype."""
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    rows = []
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    for dtype in dtypes:
        for kind in MASK_KINDS:
            torch.manual_seed(0)
            padding, position_ids, window = _mask_case(kind, length, device)
            case = {
                "qkv": [torch.randn(1, heads, length, dim, device=device),
                        torch.randn(1, kv_heads, length, dim, device=device),
                        torch.randn(1, kv_heads, length, dim, device=device)],
                "sinks": torch.randn(heads, device=device), "kv_heads": kv_heads, "scaling": dim**-0.5,
                "weight": torch.randn(1, length, heads, dim, device=device), "window": window, "padding": padding,
                "position_ids": position_ids,
                "positions": position_ids if position_ids is not None else torch.arange(length, device=device)[None],
            }
            ref_out, ref_grads = _attention_run(case, "eager", torch.float64)

            def one(path: str, case: dict[str, Any] = case, dtype: torch.dtype = dtype,
                    ref: tuple[torch.Tensor, list[torch.Tensor]] = (ref_out, ref_grads)) -> dict[str, Any]:
                with flex_context(path, device):
                    out, grads = _attention_run(case, path, dtype)
                errs = [rel_err(out, ref[0])] + [rel_err(g, r) for g, r in zip(grads, ref[1], strict=True)]
                return {"status": "ok", **dict(zip(("out", "dq", "dk", "dv", "dsinks"), errs, strict=True))}

            for path in PATHS:
                rows.append({"dtype": str(dtype).removeprefix("torch."), "kind": kind, "path": path,
                             **guarded(partial(one, path), device)})
    # Judged against eager in the same dtype: as close to float64 as transformers' own eager is (x4, plus
    # a floor for values eager gets exactly).
    floor = {"float32": 1e-5, "bfloat16": 1e-3}
    for row in rows:
        if row["status"] != "ok" or row["path"] == "eager":
            continue
        eager = next(r for r in rows if r["dtype"] == row["dtype"] and r["kind"] == row["kind"] and r["path"] == "eager")
        if eager["status"] == "ok":
            row["equal"] = all(row[key] <= 4 * eager[key] + floor[row["dtype"]] for key in ("out", "dq", "dk", "dv", "dsinks"))
    return rows


def model_equality(model: Any, base: Any, length: int, device: str, chunk: int) -> list[dict[str, Any]]:
    """Loss and LoRA gradients of the whole model on one packed row: flex and langkit_sink against eager."""
    from langkit.attention import set_attention
    from langkit.loss import causal_lm_loss

    window = getattr(base.config, "sliding_window", None)
    results: dict[str, Any] = {}
    for path in ("eager", "flex", "langkit_sink"):
        def one(path: str = path) -> dict[str, Any]:
            set_attention(base, path)
            batch = packed_batch(length, path, window, base.dtype, device, seed=2)
            model.zero_grad(set_to_none=True)
            with flex_context(path, device):
                loss = causal_lm_loss(model, batch, chunk)
                loss.backward()
            grads = torch.cat([p.grad.detach().float().flatten() for p in trainable(model) if p.grad is not None])
            model.zero_grad(set_to_none=True)
            return {"status": "ok", "loss": float(loss.detach()), "grads": grads}

        results[path] = guarded(one, device)
    rows = []
    eager = results["eager"]
    for path in ("flex", "langkit_sink"):
        row = {"path": path, "status": results[path]["status"]}
        if row["status"] == "ok" and eager["status"] == "ok":
            ours = results[path]
            row.update(loss=ours["loss"], eager_loss=eager["loss"],
                       loss_rel_diff=abs(ours["loss"] - eager["loss"]) / abs(eager["loss"]),
                       grad_rel_diff=float((ours["grads"] - eager["grads"]).norm() / eager["grads"].norm()))
        else:
            row["error"] = results[path].get("error") or eager.get("error")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# 3. Generation
# --------------------------------------------------------------------------------------------------


def generation_speed(model: Any, base: Any, batch: int, new_tokens: int, prompt: int, device: str) -> dict[str, Any]:
    """Segments/s of ``model.generate`` with the eval stage's arguments (langkit.evaluate.generation.translate)."""
    from langkit.attention import set_attention

    set_attention(base, "eager")  # what the eval stage generates with
    rng = random.Random(batch)
    lengths = [rng.randint(3 * prompt // 4, prompt) for _ in range(batch)]
    width = max(lengths)
    ids = torch.tensor([[PAD_ID] * (width - n) + [rng.randrange(200_000) for _ in range(n)] for n in lengths],
                       device=device)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=device)
    model.eval()
    try:
        with torch.no_grad():
            def generate(n: int) -> torch.Tensor:
                out: torch.Tensor = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                                                   min_new_tokens=n, do_sample=False, eos_token_id=STOP_IDS,
                                                   pad_token_id=PAD_ID, use_cache=True)
                return out

            generate(2)  # warm-up: kernels, cache allocation
            reset_peak(device)
            sync(device)
            start = time.perf_counter()
            out = generate(new_tokens)
            sync(device)
            elapsed = time.perf_counter() - start
    finally:
        model.train()
    made = int(out.shape[1] - width)
    return {"status": "ok", "batch": batch, "prompt_tokens": width, "new_tokens": made, "time_s": elapsed,
            "segments_per_s": batch / elapsed, "tokens_per_s": batch * made / elapsed, "peak_gib": peak_gib(device)}


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}e}" if digits < 0 else f"{value:,.{digits}f}"
    return str(value)


def render(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['model']} on {report['device_name']}", ""]
    lines += [f"- {k}: {v}" for k, v in report["setup"].items()]
    lines += ["", f"## Equality at {report['equality_length']:,} tokens (relative error against eager in float64)", ""]
    lines += ["| dtype | mask | path | out | dq | dk | dv | dsinks | equal |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["attention_equality"]:
        if r["status"] != "ok":
            lines.append(f"| {r['dtype']} | {r['kind']} | {r['path']} | {r['status']}: {r.get('error', '')} |||||")
            continue
        errs = " | ".join(f"{r[k]:.1e}" for k in ("out", "dq", "dk", "dv", "dsinks"))
        lines.append(f"| {r['dtype']} | {r['kind']} | {r['path']} | {errs} | {_f(r.get('equal'))} |")
    if report["model_equality"]:
        lines += ["", "Whole model, one packed row (loss and LoRA gradients against eager, same dtype):", "",
                  "| path | loss | eager loss | loss rel. diff | grad rel. diff |", "|---|---|---|---|---|"]
        for r in report["model_equality"]:
            if r["status"] == "ok" and "loss" in r:
                lines.append(f"| {r['path']} | {r['loss']:.5f} | {r['eager_loss']:.5f} | {r['loss_rel_diff']:.1e} | "
                             f"{r['grad_rel_diff']:.1e} |")
            else:
                lines.append(f"| {r['path']} | {r['status']}: {r.get('error', '')} ||||")
    lines += ["", "## Generation (eval stage's model.generate, eager attention, greedy, KV cache)", "",
              "| batch | prompt tokens | new tokens | time s | segments/s | new tokens/s | peak GiB |",
              "|---|---|---|---|---|---|---|"]
    for r in report["generation"]:
        if r["status"] == "ok":
            lines.append(f"| {r['batch']} | {r['prompt_tokens']} | {r['new_tokens']} | {r['time_s']:.2f} | "
                         f"{r['segments_per_s']:.2f} | {r['tokens_per_s']:.1f} | {_f(r['peak_gib'], 1)} |")
        else:
            lines.append(f"| {r['batch']} | {r['status']}: {r.get('error', '')} ||||||")
    lines += ["", "## Training (LoRA steps on one packed row, gradient checkpointing, chunked loss)", "",
              "| tokens | path | status | tokens/s | step s | first step s | peak GiB | x eager tokens/s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        eager = next((e for e in report["training"] if e["tokens"] == r["tokens"] and e["path"] == "eager"
                      and e["status"] == "ok"), None)
        ratio = r["tokens_per_s"] / eager["tokens_per_s"] if eager and r["status"] == "ok" else None
        status = r["status"] if r["status"] in ("ok", "OOM") else f"{r['status']}: {r.get('error', '')}"
        lines.append(f"| {r['tokens']:,} | {r['path']} | {status} | {_f(r.get('tokens_per_s'))} | "
                     f"{_f(r.get('step_s'), 2)} | {_f(r.get('first_step_s'), 2)} | {_f(r.get('peak_gib'), 1)} | "
                     f"{_f(ratio, 2)} |")
    lines += ["", f"Total wall time: {report['wall_s']:.0f} s", ""]
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> None:
    report["wall_s"] = time.perf_counter() - report["_start"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report), encoding="utf-8")
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    out.with_suffix(".json").write_text(json.dumps(clean, indent=2, default=str), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", help="tiny, openai/gpt-oss-20b or openai/gpt-oss-120b (random weights; "
                        "default: 20b on CUDA, tiny on CPU)")
    parser.add_argument("--lengths", type=int, nargs="+", help="packed tokens per step (default 4096 16384 "
                        "32768 65536 on CUDA, 128 256 on CPU)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--steps", type=int, default=2, help="LoRA steps per cell; the last is timed")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--loss-chunk", type=int, default=4096, help="tokens per chunk of the chunked loss")
    parser.add_argument("--equality-length", type=int)
    parser.add_argument("--gen-batches", type=int, nargs="+")
    parser.add_argument("--gen-new-tokens", type=int)
    parser.add_argument("--gen-prompt", type=int, default=96, help="longest prompt in tokens (a harmony "
                        "translation prompt of one sentence is about 60 to 100)")
    parser.add_argument("--skip-equality", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--budget-s", type=float, help="skip training cells predicted to end past this many "
                        "seconds from the start (default 450 on CUDA; 0: no limit)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.md",
                        help="the table (markdown; the same stem .json holds every number); default $OUT/gpu_check.md")
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    defaults = DEFAULTS[device]
    model_name = args.model or defaults["model"]
    lengths = args.lengths or defaults["lengths"]
    equality_length = args.equality_length or defaults["equality_length"]
    gen_batches = args.gen_batches or defaults["gen_batches"]
    gen_new_tokens = args.gen_new_tokens or defaults["gen_new_tokens"]
    budget = args.budget_s if args.budget_s is not None else defaults["budget_s"]
    dtype_name = "bfloat16" if device == "cuda" else "float32"

    import peft
    import transformers

    device_name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'x86-64'}, " \
        f"{torch.get_num_threads()} threads)"
    report: dict[str, Any] = {
        "_start": start, "model": model_name, "device_name": device_name, "equality_length": equality_length,
        "setup": {}, "attention_equality": [], "model_equality": [], "generation": [], "training": [],
    }
    print(f"gpu_check: {model_name} on {device_name}, writing {args.out}", flush=True)
    t0 = time.perf_counter()
    model, base, _ = build(model_name, device, dtype_name, args.lora_r)
    sync(device)
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
    n_trainable = sum(p.numel() for p in trainable(model))
    report["setup"] = {
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                    f"Python {platform.python_version()}",
        "model": f"{model_name}, random {dtype_name} weights built on the device in {time.perf_counter() - t0:.0f} s"
                 + (f", {weights_gib:.1f} GiB allocated with LoRA" if weights_gib is not None else ""),
        "LoRA": f"r={args.lora_r} on q/k/v/o and the experts, {N_NEW_TOKENS} new token rows; {n_trainable:,} "
                "trainable parameters",
        "training": f"{args.steps} AdamW steps per cell (the last timed), one packed row, gradient checkpointing, "
                    f"chunked loss ({args.loss_chunk} tokens per chunk) on every path",
        "note": "flex on CPU runs torch's unfused reference backward: CPU timings say nothing of the GPU"
                if device == "cpu" else "peak GiB is torch.cuda.max_memory_allocated, weights included",
    }
    write(report, args.out)

    if not args.skip_equality:
        print(f"equality at {equality_length} tokens", flush=True)
        report["attention_equality"] = attention_equality(base.config, equality_length, device)
        report["model_equality"] = model_equality(model, base, equality_length, device, args.loss_chunk)
        write(report, args.out)

    if not args.skip_generation:
        for batch in gen_batches:
            print(f"generation, batch {batch}", flush=True)
            row = guarded(partial(generation_speed, model, base, batch, gen_new_tokens, args.gen_prompt, device),
                          device)
            report["generation"].append({"batch": batch, **row})
            write(report, args.out)

    last: dict[str, tuple[int, float, float]] = {}  # path -> (length, step_s, first_step_s) of its last cell
    oom_at: dict[str, int] = {}
    for length in lengths:
        for path in args.paths:
            cell: dict[str, Any] = {"tokens": length, "path": path}
            elapsed = time.perf_counter() - start
            if path in oom_at:
                cell.update(status=f"skipped (OOM at {oom_at[path]:,})")
            elif budget and path in last:
                prev_length, prev_step, prev_first = last[path]
                # Steps scaled as attention's L², plus the first step's one-off cost (a recompilation).
                predicted = args.steps * prev_step * (length / prev_length) ** 2 + max(0.0, prev_first - prev_step)
                if elapsed + predicted > budget:
                    cell.update(status=f"skipped (time budget: ~{predicted:.0f} s predicted, "
                                f"{max(0.0, budget - elapsed):.0f} s left)")
            if "status" not in cell:
                print(f"training, {length} tokens, {path}", flush=True)
                cell.update(guarded(partial(train_steps, model, base, path, length, args.steps, device,
                                            args.loss_chunk), device))
                model.zero_grad(set_to_none=True)
                if cell["status"] == "ok":
                    last[path] = (length, cell["step_s"], cell["first_step_s"])
                elif cell["status"] == "OOM":
                    oom_at[path] = length
            report["training"].append(cell)
            write(report, args.out)
            print(f"  {cell['status']}" + (f": {cell['tokens_per_s']:,.0f} tokens/s, {cell['step_s']:.2f} s/step"
                                           if cell["status"] == "ok" else ""), flush=True)
    write(report, args.out)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
