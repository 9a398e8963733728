"""The bridge to EleutherAI's lm-evaluation-harness (lm-eval 0.4.x, the optional extra ``harness``).

Two ways across:

* :func:`run_harness` runs lm-eval tasks (its own, e.g. AfroBench's ``belebele``/``sib`` subtasks, or
  local ones through ``include_path``) on a langkit run directory, a Hugging Face model folder or id
  (optionally with a PEFT adapter), or ``tiny``, through lm-eval's ``hf`` model (``HFLM``). A langkit run
  is loaded as the train stage loads it (:func:`langkit.train.load_adapted_model`: the extended
  tokenizer, the base's embeddings resized for it, then the adapter) and handed to ``HFLM`` as a ready
  model object with its tokenizer object. ``HFLM``'s own ``peft=`` only applies when ``pretrained`` is a
  name (it is ignored for a model object), and its resize would give the new tokens transformers' default
  rows instead of langkit's mean-of-sub-tokens rows, so it is not used for runs.
* :func:`write_lm_eval_tasks` writes self-contained lm-eval task YAMLs (``generate_until``, scored with
  lm-eval's corpus-level ``chrf`` = sacrebleu ``CHRF()``, word order 0, as AfroBench reports, and
  ``chrf++`` = ``CHRF(word_order=2)``) for aligned test files langkit knows, Baoulé included, plus one
  data file per direction (JSON lines) and a group YAML, for ``lm_eval --include_path DIR``.

Prompts: the task's text is :func:`langkit.harmony.translation_request`. With ``chat_template="langkit"``
(the default for runs and ``tiny``) the tokenizer renders it in langkit's harmony format with langkit's
system message, exactly the prompt the run was trained on (:func:`langkit.harmony.render_prompt`).

Outputs of :func:`run_harness` in ``out_dir``::

    results.json        lm-eval's results (per-sample logs left out), plus a "langkit" entry naming the
                        system, its files' digests and the sacrebleu signatures of chrf/chrf++
    results.md          a short table: task, n, metric, value, stderr
    samples/TASK.jsonl  with ``log_samples``: every document, prompt, raw and filtered output
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langkit.evaluate.benchmarks import read_segments
from langkit.harmony import SYSTEM_MESSAGE, translation_request
from langkit.languages import get_language
from langkit.utils import get_logger, sha256_file

log = get_logger("evaluate.harness")

HARNESS_EXTRA = "pip install 'langkit[harness]'  (lm-eval>=0.4,<0.5)"
CHAT_TEMPLATES = ("langkit", "model", "none")
# A translation is one line; the answer ends at harmony's <|return|> (or <|end|>) or at the line's end.
DEFAULT_UNTIL = ("<|return|>", "<|end|>", "\n")
DEFAULT_GROUP = "langkit_translation"
TRANSLATION_METRICS = ("chrf", "chrf++")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise ImportError(f"the lm-evaluation-harness bridge needs lm-eval: {HARNESS_EXTRA}") from None
    return lm_eval


# --------------------------------------------------------------------------------------------------
# (b) task YAMLs for langkit's aligned test sets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HarnessDirection:
    """One translation direction to write as an lm-eval task: its lm-eval task name, the FLORES-style
    codes of its languages, and its aligned files (one segment per line, UTF-8)."""

    task: str
    source_language: str
    target_language: str
    source: Path
    reference: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "reference", Path(self.reference))


def parse_direction(spec: str) -> HarnessDirection:
    """A direction from the command line: ``[TASK:]SRC-TGT=SOURCE_FILE,REFERENCE_FILE``, e.g.
    ``fra_Latn-bci_Latn=test.fra,test.bci`` (task ``langkit_fra_Latn-bci_Latn``)."""
    head, eq, files = spec.partition("=")
    task, colon, pair = head.rpartition(":")
    src, dash, tgt = pair.partition("-")
    source, comma, reference = files.partition(",")
    if not (eq and dash and comma and src and tgt and source and reference) or (colon and not task):
        raise ValueError(f"direction {spec!r}: expected [TASK:]SRC-TGT=SOURCE_FILE,REFERENCE_FILE, "
                         "e.g. fra_Latn-bci_Latn=test.fra,test.bci")
    get_language(src), get_language(tgt)
    return HarnessDirection(task or f"langkit_{src}-{tgt}", src, tgt, Path(source), Path(reference))


def _aligned(direction: HarnessDirection) -> list[tuple[str, str]]:
    sources, references = read_segments(direction.source), read_segments(direction.reference)
    if len(sources) != len(references):
        raise ValueError(f"{direction.task}: {direction.source} has {len(sources)} lines but {direction.reference} "
                         f"has {len(references)}; the files must be line-aligned")
    if not sources:
        raise ValueError(f"{direction.task}: {direction.source} has no segments")
    return list(zip(sources, references, strict=True))


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Strings with line breaks in double quotes ("...\n\n{{source}}"): one line, easy to read.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)


def write_lm_eval_tasks(
    directions: Iterable[HarnessDirection | Sequence[Any]],
    out_dir: str | Path,
    *,
    group: str = DEFAULT_GROUP,
    max_items: int | None = None,
    max_gen_toks: int = 256,
    until: Sequence[str] = DEFAULT_UNTIL,
) -> Path:
    """Write one lm-eval task per direction into ``out_dir`` and a group ``group`` running them all.

    ``directions``: :class:`HarnessDirection` or tuples ``(task, source_language, target_language,
    source_file, reference_file)``. Per direction: ``TASK.jsonl`` (one document per aligned pair: ``id``,
    ``source``, ``target`` and both language codes; the first ``max_items`` pairs when given) and
    ``TASK.yaml`` (greedy ``generate_until`` up to ``max_gen_toks`` new tokens or a string of ``until``;
    metrics ``chrf`` and ``chrf++``). The YAMLs name their data file by absolute path, so they run from
    any working directory: ``lm_eval --include_path OUT_DIR --tasks GROUP`` (after moving the folder,
    write it again). Returns ``out_dir``.

    Files that are missing or not line-aligned, unknown language codes and task names lm-eval cannot take
    are refused (``FileNotFoundError``/``ValueError`` naming them) before anything is written."""
    items = [d if isinstance(d, HarnessDirection) else HarnessDirection(*d) for d in directions]
    if not items:
        raise ValueError("no directions to write")
    names = [d.task for d in items] + [group]
    for name in names:
        if not _TASK_NAME.match(name):
            raise ValueError(f"task or group name {name!r}: use letters, digits, '_', '-' and '.' only")
    if len(set(names)) != len(names):
        raise ValueError(f"task and group names must be distinct, got {names}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if max_gen_toks < 1:
        raise ValueError(f"max_gen_toks must be >= 1, got {max_gen_toks}")
    pairs = {}
    for d in items:
        get_language(d.source_language), get_language(d.target_language)  # ValueError listing the known codes
        if d.source_language == d.target_language:
            raise ValueError(f"{d.task}: source and target language are both {d.source_language}")
        pairs[d.task] = _aligned(d)[:max_items]
    return _write_tasks(items, pairs, out_dir, group=group, max_gen_toks=max_gen_toks, until=until)


def write_benchmark_tasks(
    benchmark: str | Path,
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    directions: Sequence[str] = (),
    limit: int = 0,
    group: str | None = None,
    max_gen_toks: int = 256,
    until: Sequence[str] = DEFAULT_UNTIL,
) -> Path:
    """:func:`write_lm_eval_tasks` for a benchmark langkit knows (``eval/*.yaml``: FLORES-200, NTREX-128,
    MAFAND-MT, TICO-19, or a task file of your own aligned files, Baoulé included), read as
    ``langkit eval suite`` reads it (``data``: its folder in the published layout; ``directions``:
    ``src-tgt`` names instead of its defaults; ``limit``: first segments). Tasks are named
    ``langkit_{benchmark}_{src}-{tgt}``, the group ``langkit_{benchmark}`` unless ``group`` is given."""
    from langkit.evaluate.benchmarks import load_benchmark, load_benchmark_directions

    bench = load_benchmark(benchmark)
    loaded = load_benchmark_directions(bench, data, only=directions, limit=limit)
    where = str(data) if data is not None else f"the Hub copy of {bench.name}"
    items, pairs = [], {}
    for d in loaded:
        name = f"langkit_{bench.name}_{d.name}"
        items.append(HarnessDirection(name, d.source_language, d.target_language, Path(where), Path(where)))
        pairs[name] = list(zip(d.sources, d.references, strict=True))
    return _write_tasks(items, pairs, out_dir, group=group or f"langkit_{bench.name}", max_gen_toks=max_gen_toks,
                        until=until)


def _write_tasks(items: Sequence[HarnessDirection], pairs: dict[str, list[tuple[str, str]]], out_dir: str | Path, *,
                 group: str, max_gen_toks: int, until: Sequence[str]) -> Path:
    names = [d.task for d in items] + [group]
    for name in names:
        if not _TASK_NAME.match(name):
            raise ValueError(f"task or group name {name!r}: use letters, digits, '_', '-' and '.' only")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for d in items:
        data = out / f"{d.task}.jsonl"
        with data.open("w", encoding="utf-8") as f:
            for i, (src, ref) in enumerate(pairs[d.task]):
                doc = {"id": i, "source": src, "target": ref,
                       "source_language": d.source_language, "target_language": d.target_language}
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        src_name, tgt_name = get_language(d.source_language).english_name, get_language(d.target_language).english_name
        config = {
            "task": d.task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "output_type": "generate_until",
            # langkit's own instruction (harmony.translation_request), the source filled in by Jinja.
            "doc_to_text": translation_request(d.source_language, d.target_language, "{{source}}"),
            "doc_to_target": "{{target}}",
            "generation_kwargs": {"until": list(until), "do_sample": False, "max_gen_toks": max_gen_toks},
            # lm-eval's corpus-level sacrebleu metrics: CHRF() (chrF2, word order 0) and CHRF(word_order=2).
            "metric_list": [{"metric": m, "aggregation": m, "higher_is_better": True} for m in TRANSLATION_METRICS],
            "metadata": {
                "version": 1.0,
                "source_language": d.source_language,
                "target_language": d.target_language,
                "description": f"{src_name} to {tgt_name}, {len(pairs[d.task])} segments from {d.source} / "
                               f"{d.reference}; written by langkit",
            },
        }
        (out / f"{d.task}.yaml").write_text(
            f"# lm-eval task written by langkit: {d.source_language} -> {d.target_language}\n" + _yaml(config),
            encoding="utf-8",
        )
    group_config = {
        "group": group,
        "task": [d.task for d in items],
        # Each direction's corpus chrF/chrF++, then their plain mean over directions.
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": False}
                                  for m in TRANSLATION_METRICS],
        "metadata": {"version": 1.0},
    }
    (out / f"{group}.yaml").write_text("# lm-eval group written by langkit\n" + _yaml(group_config), encoding="utf-8")
    (out / "README.md").write_text(_tasks_readme(items, group, out), encoding="utf-8")
    log.info("wrote %d lm-eval tasks and group %s to %s", len(items), group, out)
    return out


def _tasks_readme(items: Sequence[HarnessDirection], group: str, out: Path) -> str:
    rows = "\n".join(f"| `{d.task}` | `{d.source_language}` | `{d.target_language}` | {d.source} | {d.reference} |"
                     for d in items)
    return (
        f"# lm-eval tasks written by langkit\n\n"
        f"Run them all (group `{group}`) or one by name:\n\n"
        f"```bash\nlm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks {group} "
        f"--apply_chat_template --log_samples --output_path results/\n```\n\n"
        "Each task asks for a translation with langkit's instruction (\"Translate from X to Y.\" then a blank "
        "line and the source), greedy, and scores the outputs with lm-eval's corpus-level `chrf` (sacrebleu "
        "`CHRF()`, chrF2 with word order 0, what AfroBench reports) and `chrf++` (`CHRF(word_order=2)`, "
        "what FLORES/NLLB report). The data files are named by absolute path: write the folder again "
        "(`langkit eval harness-tasks`) after moving it.\n\n"
        "| task | source | target | source file | reference file |\n|---|---|---|---|---|\n"
        f"{rows}\n"
    )


# --------------------------------------------------------------------------------------------------
# (a) running lm-eval tasks on a langkit run or a Hugging Face model
# --------------------------------------------------------------------------------------------------


@dataclass
class HarnessSystem:
    """A model ready for lm-eval: ``pretrained`` a model object or a name, with its tokenizer."""

    name: str
    pretrained: Any
    tokenizer: Any = None
    peft: str | None = None
    chat_template: str = "langkit"
    provenance: dict[str, Any] = field(default_factory=dict)


def _is_run_dir(path: Path) -> bool:
    from langkit.rundir import RunDir

    run = RunDir(path)
    return run.config.is_file() and run.adapter.is_dir()


def load_system(model: str | Path, *, peft: str | Path | None = None, tokenizer: str | Path | None = None,
                chat_template: str | None = None, device: str | None = None) -> HarnessSystem:
    """The system named by ``model``: a langkit run directory (its config, extended tokenizer and
    adapter), ``tiny``, or a Hugging Face model folder or id (``peft``: an adapter folder or id;
    ``tokenizer``: another tokenizer than the model's). ``chat_template``: ``langkit`` (langkit's harmony
    rendering and system message: the default for runs and ``tiny``), ``model`` (the tokenizer's own
    template: the default for Hugging Face models) or ``none`` (the task's text as it is)."""
    from langkit.models import TINY

    if chat_template is not None and chat_template not in CHAT_TEMPLATES:
        raise ValueError(f"chat_template must be one of {', '.join(CHAT_TEMPLATES)}, got {chat_template!r}")
    name = str(model)
    if name != TINY and _is_run_dir(Path(name)):
        if peft is not None or tokenizer is not None:
            raise ValueError(f"{name} is a langkit run: its adapter and tokenizer come from the run, "
                             "do not pass peft or tokenizer")
        from langkit.config import load_config
        from langkit.rundir import RunDir
        from langkit.train import load_adapted_model

        run = RunDir(Path(name))
        cfg = load_config(run.config)
        loaded, tok = load_adapted_model(run, cfg, device=device)
        provenance = {
            "kind": "langkit-run", "run_dir": str(run.root.resolve()), "base_model": cfg.train.model,
            "adapter": str(run.adapter), "tokenizer": str(run.tokenizer),
            "adapter_sha256": sha256_file(run.adapter_weights) if run.adapter_weights.is_file() else None,
            "tokenizer_sha256": sha256_file(run.tokenizer_file) if run.tokenizer_file.is_file() else None,
        }
        return HarnessSystem(name, loaded, tok, chat_template=chat_template or "langkit", provenance=provenance)
    if name == TINY:
        if peft is not None:
            raise ValueError("the tiny model takes no adapter here: make a langkit run and pass its directory")
        from langkit.models import build_random_model
        from langkit.tokenizer import load_base_tokenizer

        loaded = build_random_model(TINY)
        if device is not None:
            loaded.to(device)
        tok = load_base_tokenizer() if tokenizer is None else _load_tokenizer(str(tokenizer))
        return HarnessSystem(name, loaded, tok, chat_template=chat_template or "langkit",
                             provenance={"kind": "tiny", "base_model": TINY})
    if Path(name).exists() and not (Path(name) / "config.json").is_file():
        raise ValueError(f"{name} is neither a langkit run directory (config.yaml + train/adapter/) nor a "
                         "Hugging Face model folder (config.json)")
    # A Hugging Face model: lm-eval loads it by name (device, dtype, its peft= and resize apply).
    tok = _load_tokenizer(str(tokenizer) if tokenizer is not None else name)
    provenance = {"kind": "hf", "base_model": name, "adapter": str(peft) if peft else None,
                  "tokenizer": str(tokenizer) if tokenizer else name}
    return HarnessSystem(name, name, tok, peft=str(peft) if peft else None,
                         chat_template=chat_template or "model", provenance=provenance)


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _hflm(system: HarnessSystem, *, batch_size: int, device: str | None, dtype: str | None,
          max_length: int | None) -> Any:
    _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    tokenizer = system.tokenizer
    if system.chat_template == "langkit" and tokenizer is not None:
        from langkit.tokenizer import HARMONY_CHAT_TEMPLATE

        tokenizer.chat_template = HARMONY_CHAT_TEMPLATE
    kwargs: dict[str, Any] = {"tokenizer": tokenizer, "batch_size": batch_size, "max_length": max_length,
                              # langkit's prompts start with <|start|>, never with a BOS token.
                              "add_bos_token": False if system.chat_template == "langkit" else None}
    if isinstance(system.pretrained, str):
        kwargs.update(pretrained=system.pretrained, peft=system.peft, device=device or _default_device(),
                      dtype=dtype or "auto")
    else:
        kwargs["pretrained"] = system.pretrained
        system.pretrained.eval()
    return HFLM(**kwargs)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_harness(
    model: str | Path | HarnessSystem,
    tasks: Sequence[str],
    out_dir: str | Path,
    *,
    include_path: str | Path | Sequence[str | Path] | None = None,
    include_defaults: bool = True,
    peft: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    log_samples: bool = True,
    bootstrap_iters: int = 100_000,
    seed: int = 0,
) -> Path:
    """Run lm-eval ``tasks`` (names, groups or globs lm-eval knows, plus those under ``include_path``)
    on ``model`` (see :func:`load_system`; or a :class:`HarnessSystem` already loaded) and write
    ``results.json``, ``results.md`` and, with ``log_samples``, ``samples/TASK.jsonl`` into ``out_dir``.

    ``include_defaults=False`` looks only under ``include_path``. ``limit``: documents per task (a fraction when < 1); ``bootstrap_iters``: lm-eval's stderr resamples
    (0: none; it takes at most 100 for chrF/BLEU). Offline use: local tasks through ``include_path``
    with ``dataset_path: json`` (see :func:`write_lm_eval_tasks`) and ``HF_HUB_OFFLINE=1``.
    Returns ``out_dir``."""
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ValueError("no tasks to run")
    system = model if isinstance(model, HarnessSystem) else load_system(
        model, peft=peft, tokenizer=tokenizer, chat_template=chat_template, device=device)
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    for p in paths:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"include_path {p}: no such folder")
    manager = None
    if paths:  # indexing lm-eval's own ~15,000 tasks takes seconds: skip it when the local ones suffice
        manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
        if include_defaults and any(not manager.match_tasks([t]) for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=[str(p) for p in paths] or None, include_defaults=include_defaults)
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        where = f" (include_path: {', '.join(str(p) for p in paths)})" if paths else ""
        raise ValueError(f"lm-eval knows no task {', '.join(unknown)}{where}")
    lm = _hflm(system, batch_size=batch_size, device=device, dtype=dtype, max_length=max_length)
    log.info("lm-eval %s on %s", ", ".join(tasks), system.name)
    results = simple_evaluate(
        model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, log_samples=log_samples,
        bootstrap_iters=bootstrap_iters, task_manager=manager,
        apply_chat_template=system.chat_template != "none",
        system_instruction=SYSTEM_MESSAGE if system.chat_template == "langkit" else None,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )
    if results is None:  # a non-zero rank of a distributed run
        return Path(out_dir)
    return write_results(results, out_dir, system)


def _signatures() -> dict[str, str]:
    from sacrebleu.metrics import CHRF

    signatures = {}
    for name, metric in (("chrf", CHRF()), ("chrf++", CHRF(word_order=2))):
        metric.corpus_score(["x"], [["x"]])  # a signature names the number of references: lm-eval's one
        signatures[name] = str(metric.get_signature())
    return signatures


def write_results(results: dict[str, Any], out_dir: str | Path, system: HarnessSystem) -> Path:
    """Write lm-eval's ``results`` (as ``simple_evaluate`` returns them) into ``out_dir``."""
    from lm_eval.utils import handle_non_serializable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", None) or {}
    body = dict(results)
    config = body.get("config")
    if isinstance(config, dict) and not config.get("model"):  # lm-eval leaves both blank for a model object
        config["model"], config["model_args"] = "hf", config.get("model_args") or {"pretrained": system.name}
    body["langkit"] = {"system": system.name, "chat_template": system.chat_template, **system.provenance,
                       "sacrebleu_signatures": _signatures()}
    (out / "results.json").write_text(
        json.dumps(body, indent=2, ensure_ascii=False, default=handle_non_serializable) + "\n", encoding="utf-8")
    if samples:
        (out / "samples").mkdir(exist_ok=True)
        for task, rows in samples.items():
            with (out / "samples" / f"{task}.jsonl").open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=handle_non_serializable) + "\n")
    (out / "results.md").write_text(results_markdown(body), encoding="utf-8")
    log.info("lm-eval results written to %s", out)
    return out


def results_markdown(results: dict[str, Any]) -> str:
    """A short table of lm-eval's results: one row per task (and group) and metric."""
    n = results.get("n-samples", {})
    rows = []
    for section in ("results", "groups"):
        for task, metrics in sorted((results.get(section) or {}).items()):
            if section == "groups" and task in (results.get("results") or {}):
                continue
            for key, value in metrics.items():
                if not isinstance(value, (int, float)) or "_stderr," in key or key in ("alias", "sample_len"):
                    continue
                metric, _, filt = key.partition(",")
                stderr = metrics.get(f"{metric}_stderr,{filt}")
                err = f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "–"
                count = (n.get(task) or {}).get("effective", metrics.get("sample_len", ""))
                rows.append(f"| {task} | {count} | {metric} | {value:.4f} | {err} |")
    meta = results.get("langkit", {})
    lines = [
        f"# lm-eval results: {meta.get('system', '?')}",
        "",
        f"lm-eval {results.get('lm_eval_version', '?')}, chat template: {meta.get('chat_template', '?')}.",
        "",
        "| task | n | metric | value | stderr |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    sigs = meta.get("sacrebleu_signatures") or {}
    if sigs:
        lines += ["chrf and chrf++ are lm-eval's corpus-level sacrebleu scores; signatures: "
                  + "; ".join(f"{k} `{v}`" for k, v in sigs.items()), ""]
    return "\n".join(lines)
