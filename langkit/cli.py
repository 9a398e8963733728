"""The ``langkit`` command line: parse, load the config, call the stage. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from langkit.config import ConfigError, RunConfig, load_config
from langkit.utils import setup_logging


def _add_config_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    p.add_argument("config", help="YAML run config (see configs/demo.yaml)")
    p.add_argument(
        "--out", required=out_required, help="run directory (each stage writes its own folder inside it)"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=2")


def _load(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


EVAL_ACTIONS = ("suite", "tasks", "harness", "harness-tasks")
"""Words after ``langkit eval`` that name an action rather than a config file."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langkit",
        description="Adapt gpt-oss to Wolof, Baoulé, Swahili and Lingala: corpus -> tokenizer -> train -> eval -> publish.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run all five stages in order into one run directory")
    _add_config_args(p, out_required=False)
    p.add_argument("--stages", default="corpus,tokenizer,train,eval,publish", help="comma-separated subset, in order")

    corpus = sub.add_parser("corpus", help="stage 1: build the dataset from the configured sources")
    corpus_sub = corpus.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = corpus_sub.add_parser("build", help="read, normalize, deduplicate, split, write parquet")
    _add_config_args(p)
    p.add_argument(
        "--only-source",
        default="",
        metavar="NAME",
        help="write only this source's shard (one scheduler job per source); a build without it merges",
    )
    p.add_argument(
        "--executor",
        choices=["local", "datatrove"],
        default=None,
        help="where the per-source steps run (default: corpus.executor, local); same output either way",
    )
    p = corpus_sub.add_parser("sources", help="list the catalogue of known public sources (corpora/sources/)")
    p.add_argument("--lang", default=None, help="only sources with this language, e.g. wol_Latn")
    p.add_argument("--json", action="store_true", help="print the cards as JSON instead of a table")
    p.add_argument("--dir", default=None, help="catalogue folder (default: corpora/sources of this checkout)")
    p = corpus_sub.add_parser("review", help="a seeded sample of kept/dropped/quarantined records as CSV + XLSX")
    p.add_argument("target", help="YAML run config (builds the corpus into --out if needed) or a run directory")
    p.add_argument("--out", default=None, help="run directory (with a config); the sheets go to DIR/corpus/review/")
    p.add_argument("--n", type=int, default=50, help="records sampled per status (kept, dropped, quarantined)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. corpus.seed=1")

    tok = sub.add_parser("tokenizer", help="stage 2: measure and extend the gpt-oss tokenizer")
    tok_sub = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_config_args(tok_sub.add_parser("build", help="the pipeline step: extend on the run's corpus"))
    p = tok_sub.add_parser("extend", help="extend a tokenizer with BPE merges learned from text files")
    p.add_argument("--budget", type=int, required=True, help="number of new tokens, shared across languages")
    p.add_argument("--text", action="append", required=True, metavar="LANG:PATH", help="e.g. wol_Latn:wol.txt")
    p.add_argument("--out", required=True, help="output tokenizer folder")
    p.add_argument("--base", default="openai/gpt-oss-20b", help="base tokenizer: folder or Hub id")
    p.add_argument("--min-frequency", type=int, default=None, help="least count of a pair to become a token")
    p.add_argument("--balance", choices=["equal", "proportional", "relative", "none"], default=None,
                   help="share of the budget per language (default: equal)")
    p.add_argument("--language-budget", action="append", default=[], metavar="LANG=N",
                   help="fixed number of new tokens for one language; the others share the rest")
    p.add_argument("--no-pivot-guard", action="store_true", help="allow merges that change English/French")
    p.add_argument("--pivot-text", action="append", default=[], metavar="LANG:PATH",
                   help="English or French that comes with the text (e.g. the aligned side of its pairs): the "
                        "pivot guard also protects the names and words it shares with the text")
    p.add_argument("--pivot-guard-tolerance", type=float, default=None, metavar="SHARE",
                   help="protect pivot pairs and words used more often than this share of running text "
                        "(default: 1e-6; 0 protects every listed word)")
    p.add_argument("--mode", choices=["bpe", "sentencepiece"], default=None,
                   help="bpe: continued BPE on whole words (default); sentencepiece: merges inside the "
                        "pieces of a SentencePiece unigram model per language")
    p.add_argument("--no-whole-words", action="store_true",
                   help="pair merges only: never give a whole word its own token in one step")
    p.add_argument("--no-normalize", action="store_true", help="learn on the text as it is")
    p = tok_sub.add_parser("stats", help="tokens per word, chars and bytes per token, split words, premium; "
                           "cut: tokens saved against the first --tokenizer")
    p.add_argument("--tokenizer", action="append", default=None, metavar="DIR_OR_NAME",
                   help="tokenizer folder or Hub id; repeat to compare side by side (default: gpt-oss)")
    p.add_argument("--text", action="append", required=True, metavar="LANG:PATH",
                   help="e.g. wol_Latn:wol.txt; an eng_Latn (or fra_Latn) file with as many lines is taken as "
                        "aligned: the premium is tokens per English token")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart of tokens per word")
    p.add_argument("--no-normalize", action="store_true", help="measure the text as it is, not normalized")

    _add_config_args(sub.add_parser("train", help="stage 3: LoRA fine-tuning of gpt-oss"))
    p = sub.add_parser("eval", help="stage 4: translate the test split, chrF++/BLEU, human sheet; "
                       "`langkit eval suite -h`: systems on standard benchmarks; `langkit eval tasks`: their list")
    _add_config_args(p)
    p.add_argument("--ratings", nargs="+", metavar="SHEET", default=None,
                   help="instead of evaluating: read the judges' filled-in sheets (CSV or XLSX, one per judge) "
                        "with the run's key into eval/human_ratings.json")

    # `langkit eval suite|tasks|harness|harness-tasks ...`: main() routes these words to the parsers below,
    # so that `langkit eval CONFIG --out RUN` (the pipeline stage) keeps its shape.
    p = sub.add_parser("eval-suite", help=argparse.SUPPRESS, prog="langkit eval suite",
                       description="Score several systems on standard test sets (FLORES-200, NTREX-128, MAFAND-MT, "
                                   "TICO-19, or your own aligned files): chrF++, chrF, BLEU with signatures, "
                                   "intervals and paired tests, one table.")
    p.add_argument("--task", action="append", required=True, metavar="NAME_OR_FILE",
                   help="benchmark name (langkit eval tasks lists them) or a task file; repeat for several")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the test set's folder in its published layout (default: its Hub copy, if it has one)")
    p.add_argument("--system", action="append", required=True, metavar="NAME=KIND:WHAT",
                   help="NAME=run:RUN_DIR | NAME=hf:MODEL[,adapter=DIR][,tokenizer=DIR] | "
                        "NAME=openai:http://HOST:PORT/v1@MODEL | NAME=file:DIR; repeat for several")
    p.add_argument("--out", required=True, help="results folder (a rerun resumes from its cache)")
    p.add_argument("--baseline", default="", metavar="NAME", help="system the others are tested against (default: the first)")
    p.add_argument("--directions", default="", metavar="SRC-TGT,...",
                   help="e.g. eng_Latn-wol_Latn,fra_Latn-wol_Latn instead of each task's defaults")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="first N segments only, to try a set-up (0: all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for intervals and paired tests (0: none)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together by local models")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight to an endpoint")
    p.add_argument("--retries", type=int, default=4, help="retries of a failed endpoint request, with back-off")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds an endpoint request may take")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="local models' weights")
    p.add_argument("--published", action="append", default=[], metavar="FILE",
                   help="published scores to print beside (e.g. eval/published/afrobench-flores200-devtest.yaml)")
    p = sub.add_parser("eval-tasks", help=argparse.SUPPRESS, prog="langkit eval tasks",
                       description="List the benchmark task files (eval/*.yaml).")
    p = sub.add_parser("eval-harness", help=argparse.SUPPRESS, prog="langkit eval harness",
                       description="Run lm-evaluation-harness tasks (AfroBench's belebele/sib, or tasks written by "
                                   "'langkit eval harness-tasks') on a langkit run, a Hugging Face model or tiny, "
                                   "through lm-eval's hf model. Needs pip install 'langkit[harness]'.")
    p.add_argument("model", help="a langkit run directory, a Hugging Face model folder or id, or tiny")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task or group names")
    p.add_argument("--out", required=True, help="folder for results.json, results.md and samples/")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR", help="folder of task YAMLs")
    p.add_argument("--peft", default=None, metavar="DIR", help="a PEFT adapter for a Hugging Face model")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="another tokenizer for a Hugging Face model")
    p.add_argument("--chat-template", choices=["langkit", "model", "none"], default=None,
                   help="langkit: the harmony prompt langkit trains with (default for runs); model: the model's "
                        "own template; none: plain text")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--limit", type=float, default=None, help="examples per task (N, or a fraction below 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "auto"])
    p.add_argument("--no-samples", action="store_true", help="do not keep every prompt and output")
    p = sub.add_parser("eval-harness-tasks", help=argparse.SUPPRESS, prog="langkit eval harness-tasks",
                       description="Write lm-eval task YAMLs (generate_until, chrF and chrF++) for a benchmark langkit "
                                   "knows or your own aligned files, Baoulé included; run them with "
                                   "lm_eval --include_path DIR --tasks GROUP.")
    p.add_argument("--out", required=True, help="folder to write the YAMLs and their data into")
    p.add_argument("--task", default=None, metavar="NAME_OR_FILE", help="a benchmark (langkit eval tasks)")
    p.add_argument("--data", default=None, metavar="DIR", help="the benchmark's folder in its published layout")
    p.add_argument("--directions", default="", metavar="SRC-TGT,...", help="instead of the benchmark's defaults")
    p.add_argument("--direction", action="append", default=[], metavar="[TASK:]SRC-TGT=SRC_FILE,REF_FILE",
                   help="aligned files of your own (repeat); instead of --task")
    p.add_argument("--limit", type=int, default=0, help="first N segments only (0: all)")
    p.add_argument("--group", default=None, help="name of the group task that runs them all")
    p.add_argument("--max-gen-toks", type=int, default=256)

    pub = sub.add_parser("publish", help="stage 5: release folder, push to a Hub, verify downloads")
    pub_sub = pub.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = pub_sub.add_parser("build", help="write release/ (adapter, tokenizer, model card, manifest)")
    _add_config_args(p)
    p.add_argument("--push", metavar="REPO_ID", help="also upload the release to this Hub repository")
    p.add_argument("--sign-key", metavar="KEY.pem", default=None,
                   help="sign the release with this private key (model.sig; overrides publish.sign_key; an "
                        "encrypted key reads its passphrase from $LANGKIT_SIGN_PASSPHRASE or asks for it)")
    p = pub_sub.add_parser("keygen", help="make an EC P-256 key pair to sign releases with")
    p.add_argument("key", metavar="KEY.pem", help="private key file to create (mode 0600; never overwritten)")
    p.add_argument("--public", metavar="PUB.pem", default=None,
                   help="public key file to create (default KEY.pub.pem): the file to give to those who verify")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt the private key with a passphrase ($LANGKIT_SIGN_PASSPHRASE, or asked for)")
    p = pub_sub.add_parser("push", help="upload a release folder (HF_ENDPOINT picks the server)")
    p.add_argument("release", help="release folder")
    p.add_argument("repo_id", help="org/name")
    p.add_argument("--private", action="store_true")
    p.add_argument("--tag", default="", help="tag the pushed commit")
    public_key_help = "the publisher's public key: also check model.sig (an unsigned release is refused)"
    p = pub_sub.add_parser("verify", help="check a release folder against its manifest.json (and signature)")
    p.add_argument("release", help="release folder")
    p.add_argument("--public-key", metavar="PUB.pem", default=None, help=public_key_help)
    p = pub_sub.add_parser("download", help="download a release from a Hub and verify it")
    p.add_argument("repo_id", help="org/name")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--revision", default=None, help="branch, tag or commit")
    p.add_argument("--public-key", metavar="PUB.pem", default=None, help=public_key_help)
    p = pub_sub.add_parser("bundle", help="one tar file holding a release, to carry it offline")
    p.add_argument("release", help="release folder (verified first)")
    p.add_argument("--out", required=True, metavar="NAME.tar", help="bundle file to create")
    p.add_argument("--public-key", metavar="PUB.pem", default=None, help="also check the signature first")
    p = pub_sub.add_parser("unbundle", help="unpack a bundle into a folder, kept only if it verifies")
    p.add_argument("bundle", metavar="NAME.tar", help="bundle file")
    p.add_argument("--out", required=True, help="destination folder (new or empty)")
    p.add_argument("--public-key", metavar="PUB.pem", default=None, help=public_key_help)

    p = sub.add_parser("serve", help="an OpenAI-compatible chat endpoint for a run or a release (until Ctrl-C)")
    p.add_argument("target", metavar="RUN_OR_RELEASE",
                   help="a run directory, or a release folder (downloaded or unbundled: verified first)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                   help="auto: vLLM when installed with a GPU, else transformers serve")
    p.add_argument("--public-key", metavar="PUB.pem", default=None,
                   help="the publisher's public key: a release is served only if model.sig verifies with it")
    p.add_argument("--base", default=None, metavar="MODEL",
                   help="the base model's folder or Hub id (default: train.model of the release's config)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where the merged, servable folder goes (default: RELEASE-merged beside a release, "
                        "RUN/serve/model in a run)")
    p.add_argument("--device", default="auto", help="transformers serve's device: auto (cuda if any), cpu, cuda")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for the first answer")
    return parser


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))


def _tokenizer_stats(args: argparse.Namespace) -> None:
    from langkit.tokenizer import (
        compare_tokenizers,
        load_base_tokenizer,
        parse_text_args,
        plot_fertility,
        read_lines,
    )

    # The arguments first (files exist and are UTF-8 text), then the tokenizers, which may take a while.
    texts = parse_text_args(args.text)
    for _, path in texts:
        read_lines(path)
    names = args.tokenizer or ["openai/gpt-oss-20b"]
    tokenizers = {name: load_base_tokenizer(name) for name in names}
    rows = compare_tokenizers(tokenizers, texts, normalize=not args.no_normalize)
    if args.plot:
        plot_fertility(rows, args.plot)
    if args.json:
        sizes = {name: len(tok) for name, tok in tokenizers.items()}
        print(json.dumps({"tokenizers": sizes, "normalized": not args.no_normalize, "files": rows}, indent=2,
                         ensure_ascii=False))
        return
    for name, tok in tokenizers.items():
        print(f"tokenizer {name}: {len(tok)} ids")
    table = []
    for row in rows:
        for name, d in row["tokenizers"].items():
            table.append({"language": row["language"], "file": Path(row["path"]).name, "tokenizer": Path(name).name,
                          "lines": d["lines"], "words": d["words"], "characters": d["characters"],
                          "tokens": d["tokens"], "cut": "" if d["cut"] is None else f"{d['cut']:.1%}",
                          "tok/word": f"{d['tokens_per_word']:.3f}",
                          "char/tok": f"{d['chars_per_token']:.3f}", "byte/tok": f"{d['bytes_per_token']:.3f}",
                          "split": f"{d['split_word_share']:.1%}",
                          "premium": "" if d["premium"] is None else f"{d['premium']:.3f}" + ("*" if d["premium_via"] else ""),
                          "pairs": d["premium_lines"] or ""})
    _print_table(table, list(table[0]) if table else [])
    via_french = sorted({d["premium_factor"] for row in rows for d in row["tokenizers"].values() if d["premium_via"]})
    if via_french:
        print("premium: tokens per aligned English token on 'pairs' line pairs; *: measured against aligned French, "
              f"times {', '.join(map(str, via_french))} French tokens per English token")


def _tokenizer_extend(args: argparse.Namespace) -> None:
    from langkit.config import TokenizerConfig
    from langkit.tokenizer import (
        extend_with_config,
        load_base_tokenizer,
        parse_language_budgets,
        parse_text_args,
        read_lines,
    )

    config = TokenizerConfig(base=args.base, budget=args.budget, pivot_guard=not args.no_pivot_guard,
                             normalize=not args.no_normalize, whole_words=not args.no_whole_words)
    if args.min_frequency is not None:
        config.min_frequency = args.min_frequency
    if args.balance:
        config.balance = args.balance
    if args.mode:
        config.mode = args.mode
    if args.pivot_guard_tolerance is not None:
        config.pivot_guard_tolerance = args.pivot_guard_tolerance
    config.language_budgets.update(parse_language_budgets(args.language_budget))
    config.check("tokenizer")
    texts: dict[str, list[str]] = {}
    sources = parse_text_args(args.text)
    for language, path in sources:
        lines = read_lines(path)
        if not lines:
            raise ValueError(f"--text {language}:{path} holds no text (every line is empty)")
        texts.setdefault(language, []).extend(lines)
    pivot_texts: dict[str, list[str]] = {}
    for language, path in parse_text_args(args.pivot_text):
        if language not in {"eng_Latn", "fra_Latn"}:
            raise ValueError(f"--pivot-text {language}:{path}: the pivots are eng_Latn and fra_Latn")
        pivot_texts.setdefault(language, []).extend(read_lines(path))
    tokenizer, new_tokens = extend_with_config(load_base_tokenizer(args.base), texts, config, args.out,
                                               sources=sources + parse_text_args(args.pivot_text),
                                               pivot_texts=pivot_texts)
    print(f"wrote {args.out}: {len(tokenizer)} ids ({len(new_tokens)} new; list in {Path(args.out) / 'new_tokens.json'})")


def _corpus_sources(args: argparse.Namespace) -> None:
    from langkit.corpus.catalog import cards_for, load_catalog
    from langkit.languages import get_language

    if args.lang:
        get_language(args.lang)  # an unknown code is an error, not an empty list
    cards = cards_for(load_catalog(args.dir), args.lang)
    if args.json:
        print(json.dumps([c.to_dict() for c in cards], indent=2, ensure_ascii=False))
        return
    columns = ["id", "languages", "license", "redistribution", "use", "where"]
    rows = [
        [c.id, " ".join(c.languages), c.license, c.redistribution + (" (verify)" if c.verify else ""),
         "eval" if c.eval_only else "", c.hf_id or c.url or "-"]
        for c in cards
    ]  # fmt: skip
    widths = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(cards)} sources; (verify): a fact on the card is unchecked, see its notes (--json)")


def _corpus_review(args: argparse.Namespace) -> None:
    from langkit import pipeline
    from langkit.corpus.review import write_review

    target = Path(args.target)
    if target.is_dir():
        root = target
    else:
        if not args.out:
            raise ConfigError("langkit corpus review CONFIG needs --out RUN_DIR (or give a run directory)")
        root = Path(args.out)
        if not (root / "corpus" / "stats.json").is_file():
            pipeline.run_stage("corpus", load_config(target, args.overrides), root)
    for path in write_review(root, n=args.n, seed=args.seed):
        print(path)


def _describe_run(root: Path) -> None:
    print(f"\nRun directory: {root.resolve()}")
    descriptions = {
        "config.yaml": "the resolved config this run used",
        "corpus": "dataset/{train,dev,test}.parquet + README.md card and plots, stats.json, dropped/quarantined records",
        "tokenizer": "tokenizer/ (extended gpt-oss tokenizer + new_tokens.json), stats.json (fertility)",
        "train": "adapter/ (LoRA, safetensors), checkpoints/, train_log.jsonl, metadata.json",
        "eval": "report.json / report.md (chrF++, BLEU, signatures), human_eval.csv/.xlsx + key",
        "release": "adapter + tokenizer + README.md model card + manifest.json (verify with langkit publish verify)",
        "signing": "THROWAWAY key pair that signed release/model.sig (publish.sign_key: throwaway; demo only: "
                   "verify with --public-key signing/throwaway.pub.pem)",
    }
    for name, text in descriptions.items():
        if (root / name).exists():
            print(f"  {name:<12} {text}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse stops filling a positional list once an option has come between (CONFIG --out DIR k=v),
    # so key=value overrides that follow an option arrive as unknown arguments: take them back here.
    argv = list(sys.argv[1:] if argv is None else argv)
    # `langkit eval suite ...` -> the hidden `eval-suite` parser (see build_parser)
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            if word == "eval" and i + 1 < len(argv) and argv[i + 1] in EVAL_ACTIONS:
                argv[i : i + 2] = [f"eval-{argv[i + 1]}"]
            break
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.quiet:
        os.environ["LANGKIT_NO_PROGRESS"] = "1"
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return _dispatch(args)
    except (ConfigError, OSError, ValueError) as err:  # bad input: a message, not a traceback
        print(f"langkit: error: {err}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from langkit import pipeline

    if args.command == "run":
        cfg = _load(args)
        out = args.out or pipeline.default_run_dir(cfg)
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        run_dir = pipeline.run_pipeline(cfg, out, stages)
        _describe_run(run_dir.root)
    elif args.command == "eval-suite":
        return _eval_suite(args)
    elif args.command == "eval-tasks":
        _eval_tasks()
    elif args.command == "eval-harness":
        _eval_harness(args)
    elif args.command == "eval-harness-tasks":
        _eval_harness_tasks(args)
    elif args.command == "eval" and args.ratings:
        _eval_ratings(args)
    elif args.command in ("train", "eval"):
        print(pipeline.run_stage(args.command, _load(args), args.out))
    elif args.command == "corpus":
        if args.action == "sources":
            _corpus_sources(args)
        elif args.action == "review":
            _corpus_review(args)
        else:
            cfg = _load(args)
            if args.only_source:
                cfg.corpus.only_source = args.only_source
            if args.executor:
                cfg.corpus.executor = args.executor
            print(pipeline.run_stage("corpus", cfg, args.out))
    elif args.command == "tokenizer":
        if args.action == "build":
            print(pipeline.run_stage("tokenizer", _load(args), args.out))
        elif args.action == "extend":
            _tokenizer_extend(args)
        else:
            _tokenizer_stats(args)
    elif args.command == "publish":
        return _publish(args)
    elif args.command == "serve":
        return _serve(args)
    return 0


def _eval_suite(args: argparse.Namespace) -> int:
    from langkit.evaluate.suite import SuiteConfig, SuiteError, run_suite
    from langkit.evaluate.systems import GenerationSettings

    for name, value in (("--limit", args.limit), ("--bootstrap", args.bootstrap)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for name, value in (("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size),
                        ("--concurrency", args.concurrency), ("--timeout", args.timeout)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                  concurrency=args.concurrency, retries=args.retries, timeout=args.timeout,
                                  dtype=args.dtype)
    directions = [d.strip() for d in args.directions.split(",") if d.strip()]
    try:
        path = run_suite(SuiteConfig(tasks=args.task, systems=args.system, out=Path(args.out), data=args.data,
                                     baseline=args.baseline, directions=directions, limit=args.limit,
                                     bootstrap=args.bootstrap, generation=settings, published=args.published))
    except SuiteError as err:  # a system that failed mid-run: what it finished is cached
        print(f"langkit: {err}", file=sys.stderr)
        return 1
    print((path.parent / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {path.parent}: results.json, results.md, results.csv, results.png, outputs/")
    return 0


def _eval_harness(args: argparse.Namespace) -> None:
    from langkit.evaluate.harness import run_harness

    limit = None if args.limit is None else int(args.limit) if args.limit >= 1 else args.limit
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    out = run_harness(args.model, tasks, args.out, include_path=args.include_path or None, peft=args.peft,
                      tokenizer=args.tokenizer, chat_template=args.chat_template, num_fewshot=args.num_fewshot,
                      limit=limit, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                      log_samples=not args.no_samples)
    print((Path(out) / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {out}")


def _eval_harness_tasks(args: argparse.Namespace) -> None:
    from langkit.evaluate.harness import parse_direction, write_benchmark_tasks, write_lm_eval_tasks

    if bool(args.task) == bool(args.direction):
        raise ValueError("give either --task (a benchmark) or --direction (your own aligned files)")
    if args.task:
        directions = [d.strip() for d in args.directions.split(",") if d.strip()]
        out = write_benchmark_tasks(args.task, args.out, data=args.data, directions=directions, limit=args.limit,
                                    group=args.group, max_gen_toks=args.max_gen_toks)
    else:
        kwargs = {"group": args.group} if args.group else {}
        out = write_lm_eval_tasks([parse_direction(d) for d in args.direction], args.out,
                                  max_items=args.limit or None, max_gen_toks=args.max_gen_toks, **kwargs)
    print(f"wrote lm-eval tasks into {out}: run them with lm_eval --include_path {out} --tasks GROUP "
          f"(see {Path(out) / 'README.md'})")


def _eval_tasks() -> None:
    from langkit.evaluate.benchmarks import benchmark_files, load_benchmark

    rows = []
    for name, path in benchmark_files().items():
        bench = load_benchmark(path)
        rows.append({"task": name, "title": bench.title, "licence": bench.license or "-",
                     "hub": bench.hub.get("dataset", "-") if bench.hub else "-",
                     "directions": " ".join(d.replace("_Latn", "") for d in bench.directions)})
    _print_table(rows, ["task", "title", "licence", "hub", "directions"])


def _eval_ratings(args: argparse.Namespace) -> None:
    from langkit.evaluate import HUMAN_RATINGS_NAME, import_run_ratings
    from langkit.rundir import RunDir

    run_dir = RunDir(Path(args.out))
    ratings = import_run_ratings(run_dir, args.ratings)
    table = [{"system": system, "direction": direction, "sheets": c["sheets"], "rated": c["rated"],
              "blank": c["blank"], "adequacy": "-" if c["adequacy"] is None else f"{c['adequacy']:.2f}",
              "fluency": "-" if c["fluency"] is None else f"{c['fluency']:.2f}"}
             for system, directions in ratings["pooled"].items() for direction, c in directions.items()]
    _print_table(table, list(table[0]) if table else [])
    print(f"wrote {run_dir.eval / HUMAN_RATINGS_NAME} ({len(args.ratings)} sheet(s))")


def _publish(args: argparse.Namespace) -> int:
    from langkit import publish

    try:
        return _publish_action(args)
    except publish.PublishError as err:  # a release that does not verify, a refused push
        print(f"langkit: {err}", file=sys.stderr)
        return 1


def _publish_action(args: argparse.Namespace) -> int:
    from langkit import pipeline, publish

    if args.action == "build":
        cfg = _load(args)
        if args.push:
            cfg.publish.repo_id = args.push
        if args.sign_key:
            cfg.publish.sign_key = args.sign_key
        if cfg.publish.sign_key and cfg.publish.sign_key != publish.THROWAWAY:
            _ask_passphrase(Path(cfg.publish.sign_key))
        print(pipeline.run_stage("publish", cfg, args.out))
    elif args.action == "keygen":
        if args.encrypt and not os.environ.get(publish.PASSPHRASE_ENV):
            _ask_passphrase(None)
            if not os.environ.get(publish.PASSPHRASE_ENV):
                raise publish.KeyFileError(f"--encrypt needs a passphrase: set {publish.PASSPHRASE_ENV} (or run "
                                           "on a terminal to be asked); nothing was written")
        pair = publish.generate_key_pair(Path(args.key), args.public,
                                         passphrase=None if args.encrypt else b"")
        print(f"private key: {pair.private_key} (keep it secret, readable by you only"
              f"{', encrypted' if args.encrypt else ''})")
        print(f"public key:  {pair.public_key} (give it to those who verify your releases)")
        print(f"fingerprint: {pair.fingerprint}")
        print(f"sign with:   langkit publish build CONFIG --out RUN --sign-key {pair.private_key}")
    elif args.action == "push":
        print(publish.push_release(Path(args.release), args.repo_id, private=args.private, tag=args.tag))
    elif args.action == "verify":
        report = publish.verify_release(Path(args.release), args.public_key)
        print(report.summary())
        return 0 if report.ok else 1
    elif args.action == "download":
        print(publish.download_release(args.repo_id, Path(args.out), revision=args.revision,
                                       public_key=args.public_key).summary())
    elif args.action == "bundle":
        print(publish.bundle_release(Path(args.release), Path(args.out), public_key=args.public_key))
    elif args.action == "unbundle":
        print(publish.unbundle_release(Path(args.bundle), Path(args.out), public_key=args.public_key).summary())
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Serve in the foreground until Ctrl-C (or SIGTERM), then stop the server and what it started."""
    import signal
    import time

    from langkit import publish
    from langkit.publish.serve import first_request, serve
    from langkit.serve import ServerError

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and a service manager's stop: the server is stopped too (SIGINT is set here as well, since a shell
    # that starts a job in the background has it ignored)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        server, cfg = serve(args.target, host=args.host, port=args.port, backend=args.backend,
                            public_key=args.public_key, base=args.base, out_dir=args.out, device=args.device,
                            startup_timeout=args.startup_timeout)
    except (publish.PublishError, ServerError) as err:  # a release that does not verify, a server that fails
        print(f"langkit: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(first_request(server.base_url, server.model, cfg.languages), flush=True)
        while server.running:
            time.sleep(0.5)
        print(f"langkit: the {server.backend} server stopped (exit code {server.process.returncode}); its log "
              f"({server.log_path}) ends:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the server", flush=True)
        return 0
    finally:
        server.stop()


def _ask_passphrase(key: Path | None) -> None:
    """An encrypted key's passphrase, asked for on a terminal when $LANGKIT_SIGN_PASSPHRASE is not set (never
    an argument: other users of the machine can read those). ``key`` None: a new key's, asked twice."""
    import getpass

    from langkit import publish

    if os.environ.get(publish.PASSPHRASE_ENV) or not sys.stdin.isatty():
        return
    if key is not None and not (key.is_file() and publish.is_encrypted_key_file(key)):
        return
    secret = getpass.getpass(f"passphrase for {key}: " if key else "passphrase for the new key: ")
    if key is None and getpass.getpass("again: ") != secret:
        raise publish.KeyFileError("the two passphrases differ: nothing was written")
    os.environ[publish.PASSPHRASE_ENV] = secret


if __name__ == "__main__":
    sys.exit(main())
