"""Benchmark of translation throughput for `langkit eval`: segments per second on the tiny gpt-oss model,

  local      langkit.evaluate.translate (HF generate in this process) at batch sizes 1, 8, 32
  endpoint   the openai:URL@MODEL system against a real local server (transformers serve, CPU) on the same
             weights, at concurrency 1 and 8 (and, with --continuous-batching, a second server started with
             transformers serve's --continuous-batching)

all in one run, each with its ratio to local batch size 1. Every segment is generated to the same length
(the tiny model's weights are random, so it rarely stops early; the table shows the tokens produced).

    python scripts/bench_eval.py                       # 64 generated French sentences, 32 new tokens each
    python scripts/bench_eval.py --segments 128 --max-new-tokens 64 --threads 1 --continuous-batching
    python scripts/bench_eval.py --text sentences.txt  # one segment per line instead

--threads N sets torch's threads here and OMP_NUM_THREADS for the server, so both sides get the same cores.
Prints a table; writes nothing but the served model folder (in a temp dir).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark never needs the network (set before transformers loads)

SUBJECTS = ["Le pêcheur", "Ma grand-mère", "Le maître d'école", "La vendeuse de mangues", "Notre voisin",
            "Le chauffeur du car", "La sage-femme", "Le chef du village"]
VERBS = ["a vendu", "cherche", "a réparé", "apporte", "attend", "a oublié", "prépare", "montre"]
OBJECTS = ["le filet près du fleuve", "trois sacs de riz au marché", "la pirogue avant la pluie",
           "une lettre pour la mairie", "le repas du soir", "la clé de la maison", "les médicaments du dispensaire",
           "un cadeau pour les enfants"]


def generated_sentences(count: int) -> list[str]:
    """``count`` distinct French sentences built from the lists above (written for this benchmark)."""
    combos = itertools.product(SUBJECTS, VERBS, OBJECTS)
    return [f"{s} {v} {o}." for s, v, o in itertools.islice(combos, count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=64, help="segments to translate per setting")
    parser.add_argument("--text", type=Path, help="read segments from this file (one per line) instead")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length, in tokens")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--source", default="fra_Latn")
    parser.add_argument("--target", default="wol_Latn")
    parser.add_argument("--repeats", type=int, default=2, help="time each setting this many times, keep the best")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for each side (0: torch's default)")
    parser.add_argument("--continuous-batching", action="store_true",
                        help="also measure a server started with transformers serve's --continuous-batching")
    args = parser.parse_args()

    import torch

    from langkit.evaluate import one_line, translate
    from langkit.evaluate.endpoint import EndpointSystem
    from langkit.models import build_random_model
    from langkit.serve import start_server, write_servable
    from langkit.tokenizer import load_base_tokenizer

    if args.text:
        texts = [line.strip() for line in args.text.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = texts[: args.segments] if args.segments else texts
    else:
        texts = generated_sentences(args.segments)
    if args.threads:
        torch.set_num_threads(args.threads)
    server_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    model, tokenizer = build_random_model("tiny"), load_base_tokenizer()
    model.config.use_cache = True
    n, src, tgt, new = len(texts), args.source, args.target, args.max_new_tokens
    rows: list[tuple[str, str, float, int]] = []  # (system, setting, seconds, tokens of the outputs re-encoded)

    def tokens(outputs: list[str]) -> int:  # both sides as the suite writes them: one line each
        return sum(len(tokenizer(one_line(o), add_special_tokens=False)["input_ids"]) for o in outputs)

    translate(model, tokenizer, src, tgt, texts[:2], max_new_tokens=new, batch_size=2)  # warm-up
    for batch in args.batch_sizes:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs = translate(model, tokenizer, src, tgt, texts, max_new_tokens=new, batch_size=batch)
            best = min(best, time.perf_counter() - start)
        rows.append(("local HF generate", f"batch {batch}", best, tokens(outputs)))
        print(f"  local batch {batch}: {rows[-1][2]:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        folder = write_servable(model, tokenizer, Path(tmp) / "model")
        del model
        servers = [("transformers serve", [])]
        if args.continuous_batching:
            servers.append(("transformers serve --continuous-batching", ["--continuous-batching"]))
        for label, extra in servers:
            with start_server(folder, env=server_env, extra_args=extra) as server:
                for concurrency in args.concurrency:
                    outputs_by_index: dict[int, str] = {}
                    with EndpointSystem("bench", server.base_url, server.model, concurrency=concurrency,
                                        max_tokens=new) as system:
                        system.translate(src, tgt, list(enumerate(texts[:2])), lambda i, o: None)  # warm-up
                        seconds = float("inf")
                        for _ in range(args.repeats):
                            start = time.perf_counter()
                            system.translate(src, tgt, list(enumerate(texts)), outputs_by_index.__setitem__)
                            seconds = min(seconds, time.perf_counter() - start)
                    outputs = [outputs_by_index[i] for i in range(n)]
                    rows.append((f"endpoint ({label})", f"concurrency {concurrency}", seconds, tokens(outputs)))
                    print(f"  {label}, concurrency {concurrency}: {seconds:.1f} s", flush=True)

    baseline = n / rows[0][2]
    threads = args.threads or torch.get_num_threads()
    print(f"\n{n} segments {src}->{tgt}, up to {new} new tokens each, tiny gpt-oss model on CPU, {threads} thread(s), "
          f"best of {args.repeats}\n")
    print(f"| {'system':<52} | {'setting':<14} | {'seconds':>8} | {'tokens out':>10} | {'segments/s':>10} | "
          f"{'vs batch 1':>10} |")
    print(f"|{'-' * 54}|{'-' * 16}|{'-' * 9}:|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|")
    for system_name, setting, seconds, answer_tokens in rows:
        rate = n / seconds
        print(f"| {system_name:<52} | {setting:<14} | {seconds:8.2f} | {answer_tokens:10d} | {rate:10.2f} | "
              f"{rate / baseline:9.2f}x |")


if __name__ == "__main__":
    main()
