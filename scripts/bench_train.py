#!/usr/bin/env python
"""Training throughput and peak memory: transformers' eager baseline against langkit's long-context path.

    .venv/bin/python scripts/bench_train.py                      # CPU: tiny gpt-oss, 512 / 2,048 / 8,192 tokens
    .venv/bin/python scripts/bench_train.py --include-eager-8k   # also eager at 8,192 (the issue saw 24 GB)
    python scripts/bench_train.py --device cuda --model openai/gpt-oss-20b   # GPU: 20b, random bf16, 4k / 16k

Paths: ``eager`` is transformers' eager gpt-oss attention with the model's own loss (all logits at once);
``langkit`` is ``train.attention=langkit_sink`` + ``train.chunked_loss``. Both train the same PEFT model as
the train stage (LoRA on q/k/v/o and on the experts, 64 new-token rows trainable in embed_tokens and
lm_head), one AdamW step per batch of one sequence of random token ids, loss on every token. Then packed
vs padded batches (``train.packing``) on a length-skewed data set, both paths, counting useful
(non-padding) tokens per second.

Each configuration runs in a subprocess of its own: peak memory is that process's maximum resident set
(``wait4``'s rusage; on CUDA ``torch.cuda.max_memory_allocated``), and on CPU the subprocess runs under an
address-space limit (``RLIMIT_AS``, ``--mem-limit-gb``), so a baseline that runs out of memory fails alone
("OOM") instead of taking the machine down. Timings are of the steps after ``--warmup`` steps; the
model build is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N_NEW_TOKENS = 64
DEFAULT_LENGTHS = {"cpu": [512, 2048, 8192], "cuda": [4096, 16384]}
EAGER_8K_LIMIT = 8192  # eager at this length and above is opt-in on CPU (--include-eager-8k)


# --------------------------------------------------------------------------------------------------
# Worker: one configuration, in its own process
# --------------------------------------------------------------------------------------------------


def _build(spec: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    import torch
    from peft import get_peft_model

    from langkit.attention import set_attention
    from langkit.config import TrainConfig
    from langkit.models import build_random_model, resize_for_new_tokens
    from langkit.tokenizer import BASE_VOCAB_SIZE, NewToken
    from langkit.train import lora_config

    device = spec["device"]
    base = build_random_model(spec["model"], dtype=spec["dtype"], device=None if device == "cpu" else device)
    # New tokens as a real run has them: rows appended, trainable through PEFT's wrappers.
    new = [NewToken(BASE_VOCAB_SIZE + i, f"t{i}", f"t{i}", ("a", "b"), [1000 + i, 2000 + i], 1)
           for i in range(N_NEW_TOKENS)]
    new_ids = resize_for_new_tokens(base, BASE_VOCAB_SIZE + N_NEW_TOKENS, new)
    set_attention(base, spec["attention"])
    if spec["gradient_checkpointing"]:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train = TrainConfig(model=spec["model"], dtype=spec["dtype"], lora_r=spec["lora_r"], lora_alpha=2 * spec["lora_r"],
                        attention=spec["attention"], chunked_loss=spec["chunked"])
    torch.manual_seed(0)
    model = get_peft_model(base, lora_config(train, new_ids)).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, train, params


def _step(model: Any, batch: dict[str, Any], optimizer: Any, params: list[Any], train: Any) -> float:
    import torch

    from langkit.loss import causal_lm_loss

    start = time.perf_counter()
    loss = causal_lm_loss(model, batch, train.loss_chunk_size) if train.chunked_loss else model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def skewed_lengths(n: int, max_length: int, seed: int = 0) -> list[int]:
    """Lengths of a length-skewed data set: three in four examples short (16-96 tokens, a sentence pair in a
    harmony prompt), one in four long (a quarter to all of ``max_length``, a document)."""
    rng = random.Random(seed)
    return [rng.randint(16, 96) if rng.random() < 0.75 else rng.randint(max_length // 4, max_length) for _ in range(n)]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from langkit.harmony import IGNORE_INDEX, Example
    from langkit.train import ExampleStream, next_batch

    torch.manual_seed(0)
    model, train, params = _build(spec)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    device = spec["device"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result: dict[str, Any] = {}
    if spec["mode"] == "fixed":
        length = spec["length"]
        ids = torch.randint(0, 200_000, (1, length), device=device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        times = [_step(model, batch, optimizer, params, train) for _ in range(spec["warmup"] + spec["repeats"])]
        timed = times[spec["warmup"]:]
        result.update(step_s=statistics.mean(timed), tokens_per_s=length / statistics.mean(timed))
    else:  # one pass over a length-skewed data set, padded or packed
        lengths = skewed_lengths(spec["examples"], spec["max_length"])
        rng = random.Random(1)
        examples = []
        for n in lengths:
            ids = [rng.randrange(200_000) for _ in range(n)]
            prompt = int(0.4 * n)  # translation-like: no loss on the prompt
            examples.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
        train.packing = spec["mode"] == "packed"
        train.batch_size = spec["batch_size"]
        train.max_length = spec["max_length"]
        window = getattr(model.get_base_model().config, "sliding_window", None)

        def run_pass(steps: int | None) -> tuple[int, int, int, int, float]:
            stream = ExampleStream(len(examples), seed=0)
            done = tokens = slots = n_steps = 0
            elapsed = 0.0
            while stream.epoch == 0 and (steps is None or n_steps < steps):
                batch = next_batch(stream, examples, train, pad_id=0, sliding_window=window)
                inputs = {k: (v.to(device) if not isinstance(v, dict) else {n: m.to(device) for n, m in v.items()})
                          for k, v in batch.inputs.items()}
                elapsed += _step(model, inputs, optimizer, params, train)
                done, tokens, slots, n_steps = done + batch.examples, tokens + batch.tokens, slots + batch.slots, n_steps + 1
            return done, tokens, slots, n_steps, elapsed

        run_pass(spec["warmup"])
        examples_done, tokens, slots, steps, elapsed = run_pass(None)
        result.update(examples=examples_done, useful_tokens=tokens, slots=slots, steps=steps, time_s=elapsed,
                      efficiency=tokens / slots, useful_tokens_per_s=tokens / elapsed)
    if device == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    result["status"] = "ok"
    return result


def _run_worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["device"] == "cpu":
        import torch

        torch.set_num_threads(spec["threads"]) if spec["threads"] else None
    try:
        result = worker(spec)
    except (MemoryError, RuntimeError) as err:  # torch's CPU and CUDA allocators raise RuntimeError subclasses
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        result = {"status": "OOM", "error": str(err).splitlines()[0][:200]}
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# Parent: spawn, measure, print
# --------------------------------------------------------------------------------------------------


def spawn(spec: dict[str, Any], mem_limit_gb: float | None) -> dict[str, Any]:
    """Run one configuration in a subprocess; its result, peak RSS (GB) and wall time."""
    def limit() -> None:
        if mem_limit_gb:
            size = int(mem_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=env, preexec_fn=limit)
        assert proc.stdout is not None
        out = proc.stdout.read()  # to the end: the child never blocks on a full pipe
        # wait4, not Popen.wait: it gives this child's own rusage (RUSAGE_CHILDREN is a max over all of them).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        err = stderr.read()
    line = next((raw for raw in out.splitlines() if raw.startswith("RESULT ")), None)
    if line is not None:
        result = json.loads(line[len("RESULT "):])
    elif proc.returncode < 0:
        result = {"status": f"killed (signal {-proc.returncode})"}
    else:
        tail = err.strip().splitlines()[-1:] or ["no output"]
        result = {"status": "OOM" if "memory" in tail[0].lower() else "failed", "error": tail[0][:200]}
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # Linux: KiB
    result["wall_s"] = time.perf_counter() - start
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _peak(result: dict[str, Any], device: str) -> float:
    return float(result["peak_gb"] if device == "cuda" and "peak_gb" in result else result["peak_rss_gb"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", default="tiny", help="tiny, openai/gpt-oss-20b or openai/gpt-oss-120b "
                        "(built with random weights, nothing downloaded)")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default: 512 2048 8192 on CPU, "
                        "4096 16384 on CUDA)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--include-eager-8k", action="store_true",
                        help="also run the eager baseline at 8,192 tokens and more on CPU (needs > 24 GB: it "
                        "fails as OOM at --mem-limit-gb)")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0,
                        help="address-space limit of each CPU subprocess (0: none)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto",
                        help="recompute each layer in backward (auto: on for CUDA, where 20b at 16k needs it)")
    parser.add_argument("--packing-examples", type=int, default=24)
    parser.add_argument("--packing-max-length", type=int, default=0, help="default: 512 on CPU, 4096 on CUDA")
    parser.add_argument("--skip-packing", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _run_worker(args.worker)
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here")

    device = args.device
    lengths = args.lengths or DEFAULT_LENGTHS[device]
    dtype = "float32" if device == "cpu" else "bfloat16"
    checkpointing = args.gradient_checkpointing == "on" or (args.gradient_checkpointing == "auto" and device == "cuda")
    mem_limit = args.mem_limit_gb if device == "cpu" and args.mem_limit_gb > 0 else None
    base = dict(model=args.model, device=device, dtype=dtype, lora_r=args.lora_r, warmup=args.warmup,
                repeats=args.repeats, threads=args.threads, gradient_checkpointing=checkpointing)
    paths = {"eager": dict(attention="eager", chunked=False), "langkit": dict(attention="langkit_sink", chunked=True)}

    import torch

    threads = args.threads or torch.get_num_threads()
    where = f"CPU, {threads} threads" if device == "cpu" else torch.cuda.get_device_name(0)
    print(f"# {args.model} (random weights, vocabulary 201,088 + {N_NEW_TOKENS} new rows), {dtype}, {where}; "
          f"LoRA r={args.lora_r} on q/k/v/o and experts; gradient checkpointing {'on' if checkpointing else 'off'}; "
          f"{args.warmup} warm-up + {args.repeats} timed steps of 1 sequence"
          + (" (no warm-up at 8,192 and up)" if device == "cpu" else ""))
    if mem_limit:
        print(f"# each configuration in its own process, address space limited to {mem_limit:g} GB")
    results: list[dict[str, Any]] = []
    print()
    print(f"{'path':<9} {'tokens':>7} {'tokens/s':>10} {'step s':>8} {'peak GB':>8}  status")
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for length in lengths:
        for name, path in paths.items():
            spec = dict(base, **path, mode="fixed", length=length)
            if device == "cpu" and length >= 8192:
                spec["warmup"] = 0  # a minute a step on 2 cores; the first step's one-off costs are small here
            if name == "eager" and device == "cpu" and length >= EAGER_8K_LIMIT and not args.include_eager_8k:
                result: dict[str, Any] = {"status": "skipped (--include-eager-8k)"}
            else:
                result = spawn(spec, mem_limit)
            by[(name, length)] = result
            results.append({"spec": spec, "result": result})
            ok = result["status"] == "ok"
            print(f"{name:<9} {length:>7,} {_fmt(result.get('tokens_per_s') if ok else None):>10} "
                  f"{_fmt(result.get('step_s') if ok else None, 2):>8} "
                  f"{_fmt(_peak(result, device) if 'peak_rss_gb' in result else None, 2):>8}  {result['status']}",
                  flush=True)

    print()
    for length in lengths:
        eager, ours = by[("eager", length)], by[("langkit", length)]
        if eager["status"] == "ok" and ours["status"] == "ok":
            print(f"at {length:,}: langkit {ours['tokens_per_s'] / eager['tokens_per_s']:.2f}x eager's tokens/s, "
                  f"{_peak(ours, device) / _peak(eager, device):.2f}x its peak memory")
    ok_lengths = [n for n in lengths if by[("langkit", n)]["status"] == "ok"]
    if len(ok_lengths) >= 2:
        lo, hi = ok_lengths[-2], ok_lengths[-1]
        growth = _peak(by[("langkit", hi)], device) / _peak(by[("langkit", lo)], device)
        print(f"langkit peak memory {lo:,} -> {hi:,} tokens: x{growth:.2f} for x{hi / lo:g} tokens "
              f"(target on CPU, 2,048 -> 8,192: at most x4)")
        print(f"langkit peak at {hi:,} tokens: {_peak(by[('langkit', hi)], device):.2f} GB "
              f"(targets: tiny at 8,192 on CPU under 6 GB; gpt-oss-20b at 16k on an H200 under 80 GB)")

    if not args.skip_packing:
        max_length = args.packing_max_length or (512 if device == "cpu" else 4096)
        lengths_data = skewed_lengths(args.packing_examples, max_length)
        print()
        print(f"# packed vs padded: a pass over {args.packing_examples} examples of {min(lengths_data)}-"
              f"{max(lengths_data)} tokens (mean {statistics.mean(lengths_data):.0f}; 40% of each is an unlabelled "
              f"prompt); padded: 4 examples per step; packed: 2 rows of up to {max_length:,} tokens per step "
              "(its last step may run into the next pass)")
        print(f"{'path':<9} {'mode':<7} {'steps':>5} {'useful tok':>10} {'efficiency':>10} {'useful tok/s':>12} "
              f"{'peak GB':>8}  status")
        packed_vs: dict[tuple[str, str], dict[str, Any]] = {}
        for name, path in paths.items():
            for mode, batch_size in (("padded", 4), ("packed", 2)):
                spec = dict(base, **path, mode=mode, examples=args.packing_examples, max_length=max_length,
                            batch_size=batch_size)
                result = spawn(spec, mem_limit)
                packed_vs[(name, mode)] = result
                results.append({"spec": spec, "result": result})
                ok = result["status"] == "ok"
                print(f"{name:<9} {mode:<7} {result.get('steps', '-'):>5} {result.get('useful_tokens', '-'):>10} "
                      f"{_fmt(result.get('efficiency') if ok else None, 3):>10} "
                      f"{_fmt(result.get('useful_tokens_per_s') if ok else None):>12} "
                      f"{_fmt(_peak(result, device), 2):>8}  {result['status']}", flush=True)

        def speed(name: str, mode: str) -> float | None:
            result = packed_vs[(name, mode)]
            return float(result["useful_tokens_per_s"]) if result["status"] == "ok" else None

        for label, (num, den) in {
            "langkit packed / eager padded (the padded baseline)": (("langkit", "packed"), ("eager", "padded")),
            "langkit packed / langkit padded": (("langkit", "packed"), ("langkit", "padded")),
            "eager packed / eager padded": (("eager", "packed"), ("eager", "padded")),
        }.items():
            a, b = speed(*num), speed(*den)
            if a and b:
                print(f"useful tokens/s, {label}: {a / b:.2f}x (target: packed at least 1.5x padded)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
