"""Benchmark of the tokenizer stage: how many tokens each language saves, what changes in English and
French, how long the extension takes and how fast the extended tokenizer encodes.

Three tokenizers in one run, on the same text:
  base      gpt-oss's o200k_harmony tokenizer
  plain     continued BPE with the same budget and data, without normalization, balancing or pivot guard
  langkit   what `langkit tokenizer extend` does (normalized text, balanced budget, pivot guard, whole words)

    python scripts/bench_tokenizer.py --budget 8000 \\
        --text wol_Latn:wol.txt --text bci_Latn:bci.txt ... \\
        --pivot eng_Latn:en.txt --pivot fra_Latn:fr.txt --holdout 0.2

With --holdout F the last F of every --text file is kept out of training and measured; --eval LANG:PATH
measures other files instead. Prints tables only; writes nothing but the two tokenizers (in a temp dir).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark never needs the network (set before transformers loads)

from langkit.config import TokenizerConfig  # noqa: E402
from langkit.tokenizer import (  # noqa: E402
    PivotGuard,
    extend_with_config,
    load_base_tokenizer,
    normalize_lines,
    parse_language_budgets,
    parse_text_args,
    read_lines,
)


def encode_all(tokenizer, lines):
    return tokenizer(list(lines), add_special_tokens=False)["input_ids"]


def count(tokenizer, lines) -> int:
    return sum(len(ids) for ids in encode_all(tokenizer, lines))


def encode_seconds(tokenizer, lines, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for line in lines:  # one call per line: what a data loader does
            tokenizer(line, add_special_tokens=False)
        best = min(best, time.perf_counter() - start)
    return best


def word_pieces(tokenizer, lines):
    """The pre-tokenized pieces of ``lines`` that hold a letter (the words; new tokens live only there)."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    # Letters are tested on the text itself: in the byte-level alphabet a space (Ġ) or a « (Â«) is a letter.
    return [piece for line in lines for piece, (start, end) in pre.pre_tokenize_str(line)
            if any(ch.isalpha() for ch in line[start:end])]


def piece_counter(tokenizer):
    """Tokens of one pre-tokenized piece (its own encode call would add nothing but time)."""
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab()
    # gpt-oss's BPE looks whole words up before merging.
    return lambda piece: 1 if piece in vocab else len(backend.model.tokenize(piece))


def where_the_tokens_are(base, ours, train_lines, measured_lines):
    """How the measured words split into words seen in training and unseen ones, what langkit cuts in each,
    and two bounds on any extension that keeps gpt-oss's pre-tokenizer (a word is at least one token):
    'seen→1' if every seen word became one token (the rest as langkit cuts it), 'all→1' if every word did."""
    seen = set(word_pieces(base, train_lines))
    total = count(base, measured_lines)
    tally = defaultdict(int)
    base_tokens, our_tokens = piece_counter(base), piece_counter(ours)
    for piece in word_pieces(base, measured_lines):
        kind = "seen" if piece in seen else "unseen"
        b, o = base_tokens(piece), our_tokens(piece)
        tally[kind + "_words"] += 1
        tally[kind + "_base"] += b
        tally[kind + "_ours"] += o
    seen_ceiling = (tally["seen_base"] - tally["seen_words"] + tally["unseen_base"] - tally["unseen_ours"]) / total
    all_ceiling = (tally["seen_base"] + tally["unseen_base"] - tally["seen_words"] - tally["unseen_words"]) / total
    return {
        "seen share": tally["seen_base"] / total,
        "seen cut": 1 - tally["seen_ours"] / max(1, tally["seen_base"]),
        "unseen share": tally["unseen_base"] / total,
        "unseen cut": 1 - tally["unseen_ours"] / max(1, tally["unseen_base"]),
        "seen→1": seen_ceiling,
        "all→1": all_ceiling,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="append", required=True, metavar="LANG:PATH")
    parser.add_argument("--eval", action="append", default=[], metavar="LANG:PATH")
    parser.add_argument("--pivot", action="append", default=[], metavar="LANG:PATH")
    parser.add_argument("--holdout", type=float, default=0.0, help="share of each --text file measured, not trained on")
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--base", default="openai/gpt-oss-20b")
    parser.add_argument("--sentencepiece", action="store_true", help="also run langkit's SentencePiece mode")
    parser.add_argument("--balance", default="equal", choices=["equal", "proportional", "relative", "none"],
                        help="langkit's budget sharing (tokenizer.balance)")
    parser.add_argument("--language-budget", action="append", default=[], metavar="LANG=N",
                        help="langkit: fix a language's share of the budget (tokenizer.language_budgets)")
    parser.add_argument("--train-fractions", type=float, nargs="*", default=[], metavar="F",
                        help="also train plain and langkit on the first F of each training file and print the "
                             "cuts against F (how the cut grows with more text)")
    args = parser.parse_args()

    train: dict[str, list[str]] = defaultdict(list)
    held: dict[str, list[str]] = defaultdict(list)
    train_files: list[tuple[str, list[str]]] = []
    for language, path in parse_text_args(args.text):
        lines = read_lines(path)
        cut = len(lines) - int(len(lines) * args.holdout)
        train[language].extend(lines[:cut])
        held[language].extend(lines[cut:])
        train_files.append((language, lines[:cut]))
    measured = dict(held) if args.holdout else dict(train)
    if args.eval:
        measured = defaultdict(list)
        for language, path in parse_text_args(args.eval):
            measured[language].extend(read_lines(path))
    pivots: dict[str, list[str]] = defaultdict(list)
    for language, path in parse_text_args(args.pivot):
        # Aligned pivot files are held out the same way, so that names shared by parallel lines
        # (the same news story in every language) do not count as pivot damage.
        lines = read_lines(path)
        pivots[language].extend(lines[len(lines) - int(len(lines) * args.holdout):] if args.holdout else lines)

    base = load_base_tokenizer(args.base)
    out = Path(tempfile.mkdtemp(prefix="bench_tokenizer."))

    # plain: pooled continued BPE on the text as it is, with gpt-oss-style defaults and nothing of langkit's.
    plain_config = TokenizerConfig(budget=args.budget, min_frequency=2, balance="none", pivot_guard=False,
                                   words_only=False, normalize=False, whole_words=False)
    start = time.perf_counter()
    plain, _ = extend_with_config(base, train, plain_config, out / "plain")
    plain_s = time.perf_counter() - start

    config = TokenizerConfig(budget=args.budget, balance=args.balance,
                             language_budgets=parse_language_budgets(args.language_budget))
    config.check("tokenizer")
    # The pivot guard is built (or read from the cache) as part of every extension; timed alone here too.
    start = time.perf_counter()
    PivotGuard.build(base, top_n=config.pivot_guard_words, tolerance=config.pivot_guard_tolerance)
    guard_s = time.perf_counter() - start
    start = time.perf_counter()
    ours, new_tokens = extend_with_config(base, train, config, out / "langkit")
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    sp = (extend_with_config(base, train, dataclasses.replace(config, mode="sentencepiece"), out / "sentencepiece")[0]
          if args.sentencepiece else None)
    sp_s = time.perf_counter() - start

    print(f"\nbudget {args.budget} new tokens; trained on {sum(map(len, train.values()))} lines; "
          f"measured on {'held-out' if args.holdout or args.eval else 'training'} text")
    sp_head = f" {'sp-mode':>8} {'cut':>7}" if sp else ""
    print(f"\n{'language':<10} {'lines':>6} {'base':>8} {'plain':>8} {'cut':>7} {'base*':>8} {'langkit':>8} {'cut':>7} "
          f"{'vs raw':>7}{sp_head}")
    for language in sorted(measured):
        raw = measured[language]
        norm = normalize_lines(raw, language)
        b, p = count(base, raw), count(plain, raw)
        bn, o = count(base, norm), count(ours, norm)
        sp_cells = f" {count(sp, norm):>8} {1 - count(sp, norm) / bn:>7.1%}" if sp else ""
        print(f"{language:<10} {len(raw):>6} {b:>8} {p:>8} {1 - p / b:>7.1%} {bn:>8} {o:>8} {1 - o / bn:>7.1%} "
              f"{1 - o / b:>7.1%}{sp_cells}")
    print("(base/plain on the text as it is; base*/langkit on normalized text, as the model sees it; "
          "'vs raw': langkit on normalized text against base on the text as it is)")

    if args.holdout or args.eval:
        print("\nWhere the measured tokens are (normalized text; shares of the base tokens): words seen in training "
              "and unseen ones, langkit's cut on each, and the cut if every seen word / every word became one token")
        columns = ("seen share", "seen cut", "unseen share", "unseen cut", "seen→1", "all→1")
        print(f"{'language':<10} " + " ".join(f"{c:>12}" for c in columns))
        for language in sorted(measured):
            row = where_the_tokens_are(base, ours, normalize_lines(train.get(language, []), language),
                                       normalize_lines(measured[language], language))
            print(f"{language:<10} " + " ".join(f"{row[c]:>12.1%}" for c in columns))

    if pivots:
        print(f"\n{'pivot':<10} {'lines':>6} {'base':>8} {'plain Δ':>8} {'changed':>8} {'langkit Δ':>10} {'changed':>8}")
        for language, lines in sorted(pivots.items()):
            ids_base, ids_plain, ids_ours = encode_all(base, lines), encode_all(plain, lines), encode_all(ours, lines)
            total = sum(map(len, ids_base))
            dp = sum(map(len, ids_plain)) / total - 1
            do = sum(map(len, ids_ours)) / total - 1
            cp = sum(a != b for a, b in zip(ids_base, ids_plain, strict=True)) / len(lines)
            co = sum(a != b for a, b in zip(ids_base, ids_ours, strict=True)) / len(lines)
            print(f"{language:<10} {len(lines):>6} {total:>8} {dp:>+8.2%} {cp:>8.2%} {do:>+10.3%} {co:>8.2%}")

    if args.train_fractions:
        print("\nCut against the share of the training text used (the first F of each file; same measured text; "
              "langkit on normalized text against base on it, plain on the text as it is)")
        languages = sorted(measured)
        print(f"{'F':>5} {'method':<8} " + " ".join(f"{lang:>9}" for lang in languages))
        for fraction in sorted(args.train_fractions):
            part: dict[str, list[str]] = defaultdict(list)
            for language, lines in train_files:
                part[language].extend(lines[:int(len(lines) * fraction)])
            tokenizers = {
                "plain": (extend_with_config(base, part, plain_config, out / f"plain-{fraction}")[0], False),
                "langkit": (extend_with_config(base, part, config, out / f"langkit-{fraction}")[0], True),
            }
            for method, (tokenizer, normalized) in tokenizers.items():
                cells = []
                for language in languages:
                    text = normalize_lines(measured[language], language) if normalized else measured[language]
                    cells.append(f"{1 - count(tokenizer, text) / count(base, text):>9.1%}")
                print(f"{fraction:>5.2f} {method:<8} " + " ".join(cells))

    sample = [line for lines in measured.values() for line in lines]
    t_base, t_ours = encode_seconds(base, sample), encode_seconds(ours, sample)
    print(f"\npivot guard: {guard_s:.1f} s to build or read from the cache")
    print(f"extension time: plain {plain_s:.1f} s, langkit {ours_s:.1f} s (includes normalization; the pivot guard "
          f"read from the cache) = {guard_s + ours_s:.1f} s with the guard above"
          + (f", sentencepiece mode {sp_s:.1f} s" if sp else ""))
    print(f"encoding {len(sample)} lines one by one: base {t_base:.3f} s, langkit {t_ours:.3f} s, "
          f"speed ratio {t_base / t_ours:.2f}x")
    print(f"new tokens: {len(new_tokens)}; tokens: {out}")


if __name__ == "__main__":
    main()
