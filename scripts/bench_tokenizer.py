"""Benchmark of the tokenizer stage: how many tokens each language saves, what changes in English and
French, how long the extension takes and how fast the extended tokenizer encodes.

Three tokenizers per budget, in one run, on the same text:
  base      gpt-oss's o200k_harmony tokenizer
  plain     continued BPE with the same budget and data, without normalization, balancing or pivot guard
  langkit   what `langkit tokenizer extend` does (normalized text, balanced budget, pivot guard, whole words)

    python scripts/bench_tokenizer.py --budget 8000 16000 32000 --holdout 0.2 \\
        --text wol_Latn:flores.wol --text wol_Latn:news.wol --text bci_Latn:bci.txt ... \\
        --pivot eng_Latn:flores.eng --pivot eng_Latn:news.eng --pivot fra_Latn:flores.fra ...

Each --text file is one domain: the cut is printed per file and per language. With --holdout F the last F
of every --text and --pivot file is kept out of training and measured; --eval LANG:PATH measures other
files instead. The training part of the --pivot files is the pivot text that comes with the corpus (the
aligned side of its pairs): langkit's pivot guard reads it as `langkit tokenizer extend --pivot-text` and the
pipeline's stage do (--no-pivot-text: the frequency lists alone). The English and French lines that
change are counted on the held-out part. Prints tables only; writes nothing but the tokenizers (in a temp
dir). Timings are wall-clock on whatever else the machine is doing: compare the ratios within one run.
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

from langkit import tokenizer as tokenizer_module  # noqa: E402
from langkit.config import TokenizerConfig  # noqa: E402
from langkit.corpus.langid import FunctionWordIdentifier  # noqa: E402
from langkit.languages import TARGET_LANGUAGES  # noqa: E402
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


def cut(base, tokenizer, lines) -> float:
    b = count(base, lines)
    return 1 - count(tokenizer, lines) / b if b else 0.0


def pivot_change(base, tokenizer, lines) -> tuple[float, float]:
    """(share of lines whose tokens change, relative change of the token count)."""
    ids_base, ids_other = encode_all(base, lines), encode_all(tokenizer, lines)
    total = sum(map(len, ids_base))
    changed = sum(a != b for a, b in zip(ids_base, ids_other, strict=True))
    return changed / max(1, len(lines)), sum(map(len, ids_other)) / max(1, total) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="append", required=True, metavar="LANG:PATH",
                        help="training text; one file per domain (FLORES, news...): cuts are printed per file")
    parser.add_argument("--eval", action="append", default=[], metavar="LANG:PATH")
    parser.add_argument("--pivot", action="append", default=[], metavar="LANG:PATH",
                        help="English or French aligned with some --text file (held out like it)")
    parser.add_argument("--no-pivot-text", action="store_true",
                        help="langkit's pivot guard uses the frequency lists only, not the --pivot training part")
    parser.add_argument("--pivot-text-ratio", type=float, default=None, metavar="R",
                        help="the pivot guard's refusal ratio for the pivot text (default: langkit's "
                             "PIVOT_TEXT_RATIO)")
    parser.add_argument("--holdout", type=float, default=0.0, help="share of each --text file measured, not trained on")
    parser.add_argument("--budget", type=int, nargs="+", default=[8000], metavar="N",
                        help="one or more budgets, e.g. --budget 8000 16000 32000")
    parser.add_argument("--base", default="openai/gpt-oss-20b")
    parser.add_argument("--sentencepiece", action="store_true", help="also run langkit's SentencePiece mode")
    parser.add_argument("--balance", default="equal", choices=["equal", "proportional", "relative", "none"],
                        help="langkit's budget sharing (tokenizer.balance)")
    parser.add_argument("--language-budget", action="append", default=[], metavar="LANG=N",
                        help="langkit: fix a language's share of the budget (tokenizer.language_budgets)")
    parser.add_argument("--train-fractions", type=float, nargs="*", default=[], metavar="F",
                        help="also train plain and langkit on the first F of each training file and print the "
                             "cuts against F at the first budget (how the cut grows with more text)")
    args = parser.parse_args()
    if args.pivot_text_ratio is not None:
        tokenizer_module.PIVOT_TEXT_RATIO = args.pivot_text_ratio

    def split(lines):
        cut_at = len(lines) - int(len(lines) * args.holdout)
        return lines[:cut_at], lines[cut_at:]

    train: dict[str, list[str]] = defaultdict(list)
    train_files: list[tuple[str, list[str]]] = []
    domains: list[tuple[str, str, list[str]]] = []  # (language, file name, measured lines)
    for language, path in parse_text_args(args.text):
        trained, held = split(read_lines(path))
        train[language].extend(trained)
        train_files.append((language, trained))
        domains.append((language, path.name, held if args.holdout else trained))
    if args.eval:
        domains = [(language, path.name, read_lines(path)) for language, path in parse_text_args(args.eval)]
    measured: dict[str, list[str]] = defaultdict(list)
    for language, _, lines in domains:
        measured[language].extend(lines)
    pivots: dict[str, list[str]] = defaultdict(list)
    pivot_train: dict[str, list[str]] = defaultdict(list)
    foreign: dict[str, int] = defaultdict(int)
    identifier = FunctionWordIdentifier()
    for language, path in parse_text_args(args.pivot):
        # Aligned pivot files are held out the same way: their training part goes with the training text
        # (the pivot guard may read it), their last part is where pivot damage is counted. Lines that the
        # built-in identifier takes for a target language (left untranslated in the pivot file: MAFAND's
        # French has Wolof lines) are not pivot text, and are left out of the count.
        trained, held = split(read_lines(path))
        pivot_train[language].extend(trained)
        for line in held if args.holdout else trained:
            if identifier.predict(line)[0] in TARGET_LANGUAGES:
                foreign[language] += 1
            else:
                pivots[language].append(line)
    pivot_texts = {} if args.no_pivot_text else dict(pivot_train)

    base = load_base_tokenizer(args.base)
    out = Path(tempfile.mkdtemp(prefix="bench_tokenizer."))
    start = time.perf_counter()
    guard_config = TokenizerConfig()
    PivotGuard.build(base, top_n=guard_config.pivot_guard_words, tolerance=guard_config.pivot_guard_tolerance)
    guard_s = time.perf_counter() - start

    def plain_config(budget: int) -> TokenizerConfig:
        # pooled continued BPE on the text as it is, with gpt-oss-style defaults and nothing of langkit's
        return TokenizerConfig(budget=budget, min_frequency=2, balance="none", pivot_guard=False,
                               words_only=False, normalize=False, whole_words=False)

    def our_config(budget: int) -> TokenizerConfig:
        config = TokenizerConfig(budget=budget, balance=args.balance,
                                 language_budgets=parse_language_budgets(args.language_budget))
        config.check("tokenizer")
        return config

    normalized = {language: normalize_lines(lines, language) for language, lines in measured.items()}
    norm_domains = [(language, name, normalize_lines(lines, language)) for language, name, lines in domains]
    norm_pivots = {language: normalize_lines(lines, language) for language, lines in pivots.items()}
    results = {}
    for budget in args.budget:
        start = time.perf_counter()
        plain, _ = extend_with_config(base, train, plain_config(budget), out / f"plain-{budget}")
        plain_s = time.perf_counter() - start
        start = time.perf_counter()
        ours, new_tokens = extend_with_config(base, train, our_config(budget), out / f"langkit-{budget}",
                                              pivot_texts=pivot_texts)
        ours_s = time.perf_counter() - start
        sp = (extend_with_config(base, train, dataclasses.replace(our_config(budget), mode="sentencepiece"),
                                 out / f"sentencepiece-{budget}", pivot_texts=pivot_texts)[0]
              if args.sentencepiece else None)
        results[budget] = {
            "plain": plain, "langkit": ours, "sp": sp, "new": len(new_tokens), "plain_s": plain_s, "ours_s": ours_s,
            "domains": [(cut(base, plain, raw), cut(base, ours, norm), cut(base, sp, norm) if sp else None)
                        for (_, _, raw), (_, _, norm) in zip(domains, norm_domains, strict=True)],
            "languages": {language: (cut(base, plain, measured[language]), cut(base, ours, normalized[language]),
                                     cut(base, sp, normalized[language]) if sp else None) for language in measured},
            # pivot damage: plain on the text as it is, langkit on normalized text (what each learned from)
            "pivots": {language: (pivot_change(base, plain, pivots[language]),
                                  pivot_change(base, ours, norm_pivots[language])) for language in pivots},
        }
        print(f"budget {budget}: plain {plain_s:.1f} s, langkit {ours_s:.1f} s ({len(new_tokens)} new tokens)",
              flush=True)

    budgets = args.budget
    where = "held-out" if args.holdout or args.eval else "training"
    print(f"\nTokens saved against gpt-oss's tokenizer on {where} text, per file (domain) and per language; trained on "
          f"{sum(map(len, train.values()))} lines ({', '.join(f'{k} {len(v)}' for k, v in sorted(train.items()))}); "
          "plain on the text as it is, langkit on normalized text against gpt-oss on it"
          + (f"; langkit's pivot guard also reads {sum(map(len, pivot_texts.values()))} lines of pivot text"
             if pivot_texts else ""))
    kinds = ["plain", "langkit"] + (["sp-mode"] if args.sentencepiece else [])
    header = "| text | lines | " + " | ".join(f"{kind} {b // 1000}k" if b % 1000 == 0 else f"{kind} {b}"
                                             for b in budgets for kind in kinds) + " |"
    print("\n" + header)
    print("|---|---|" + "---|" * (len(budgets) * len(kinds)))

    def cells(values_per_budget) -> str:
        return " | ".join(f"{v:.1%}" if v is not None else "" for values in values_per_budget
                          for v in values[:len(kinds)])

    for i, (language, name, lines) in enumerate(domains):
        print(f"| {language} {name} | {len(lines)} | " + cells(results[b]["domains"][i] for b in budgets) + " |")
    for language in sorted(measured):
        print(f"| **{language}** (all) | {len(measured[language])} | "
              + cells(results[b]["languages"][language] for b in budgets) + " |")
    for language in sorted(pivots):
        print(f"| {language} lines changed | {len(pivots[language])} | " + " | ".join(
            f"{results[b]['pivots'][language][k][0]:.2%}" + " |" * (k == 1 and len(kinds) - 2)
            for b in budgets for k in range(2)) + " |")
        print(f"| {language} tokens | | " + " | ".join(
            f"{results[b]['pivots'][language][k][1]:+.3%}" + " |" * (k == 1 and len(kinds) - 2)
            for b in budgets for k in range(2)) + " |")
    if foreign:
        print("(pivot lines taken for a target language by the built-in identifier, left out: "
              + ", ".join(f"{language} {n}" for language, n in sorted(foreign.items())) + ")")
    print("| extension seconds | | " + " | ".join(
        f"{results[b]['plain_s']:.0f}" + f" | {results[b]['ours_s']:.0f}" + " |" * (len(kinds) - 2) for b in budgets)
        + " |")

    largest = results[budgets[-1]]
    ours = largest["langkit"]
    if args.holdout or args.eval:
        print(f"\nWhere the measured tokens are at budget {budgets[-1]} (normalized text; shares of the base tokens): "
              "words seen in training and unseen ones, langkit's cut on each, and the cut if every seen word / every "
              "word became one token")
        columns = ("seen share", "seen cut", "unseen share", "unseen cut", "seen→1", "all→1")
        print(f"{'language':<10} " + " ".join(f"{c:>12}" for c in columns))
        for language in sorted(measured):
            row = where_the_tokens_are(base, ours, normalize_lines(train.get(language, []), language),
                                       normalized[language])
            print(f"{language:<10} " + " ".join(f"{row[c]:>12.1%}" for c in columns))

    if args.train_fractions:
        budget = budgets[0]
        print(f"\nCut against the share of the training text used at budget {budget} (the first F of each file; "
              "same measured text; langkit on normalized text against base on it, plain on the text as it is)")
        languages = sorted(measured)
        print(f"{'F':>5} {'method':<8} " + " ".join(f"{lang:>9}" for lang in languages))
        for fraction in sorted(args.train_fractions):
            part: dict[str, list[str]] = defaultdict(list)
            for language, lines in train_files:
                part[language].extend(lines[:int(len(lines) * fraction)])
            tokenizers = {
                "plain": (extend_with_config(base, part, plain_config(budget), out / f"plain-{fraction}")[0], False),
                "langkit": (extend_with_config(base, part, our_config(budget), out / f"langkit-{fraction}",
                                               pivot_texts=pivot_texts)[0], True),
            }
            for method, (tokenizer, is_normalized) in tokenizers.items():
                row_cells = [f"{cut(base, tokenizer, normalized[lang] if is_normalized else measured[lang]):>9.1%}"
                             for lang in languages]
                print(f"{fraction:>5.2f} {method:<8} " + " ".join(row_cells))

    sample = [line for lines in measured.values() for line in lines]
    t_base, t_ours = encode_seconds(base, sample), encode_seconds(ours, sample)
    print(f"\npivot guard: {guard_s:.1f} s to build or read from the cache (read from the cache by every extension)")
    print(f"encoding {len(sample)} lines one by one: base {t_base:.3f} s, langkit {budgets[-1]} {t_ours:.3f} s, "
          f"speed ratio {t_base / t_ours:.2f}x")
    print(f"tokenizers: {out}")


if __name__ == "__main__":
    main()
