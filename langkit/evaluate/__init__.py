"""Stage 4: translate the held-back test split both ways, score it, and export a blinded human-eval sheet.

The task (which split, which directions, which metrics) is ``eval/translation.yaml``, read by
:func:`load_task`. For every target language of the run and both directions (pivot -> language,
language -> pivot), each system translates the first ``eval.max_items`` aligned pairs by greedy decoding
in harmony format (:func:`translate`); :func:`score` gives chrF++ (the primary metric, as FLORES/NLLB
report it), chrF and BLEU, each with its sacrebleu signature. Systems: ``langkit`` (base + extended
tokenizer + the trained adapter) and, with ``eval.compare_base``, ``base`` (no adapter, base tokenizer).

Outputs in ``RUN/eval/``::

    outputs/{system}.{src}-{tgt}.{src,hyp,ref}   one segment per line: rescore with sacrebleu's own CLI
    report.json          scores + signatures per system and direction (the publish stage reads it)
    report.md            the same as a table
    human_eval.csv       blinded, shuffled sheet for judges (item_id, source, output, reference, adequacy, fluency)
    human_eval.xlsx      the same sheet for Excel
    human_eval_key.csv   item_id -> system, direction, languages, test id (keep it away from the judges)
    human_eval_README.md how to rate

:func:`import_ratings` reads a filled-in sheet back with its key and averages the ratings.
"""

from langkit.evaluate.generation import decode_answer, stop_token_ids, translate
from langkit.evaluate.human import (
    HUMAN_RATINGS_NAME,
    KEY_COLUMNS,
    RATING_COLUMNS,
    SHEET_COLUMNS,
    RatingsError,
    Translation,
    import_ratings,
    import_run_ratings,
    write_human_eval,
)
from langkit.evaluate.metrics import METRICS, paired_test, score
from langkit.evaluate.report import report_markdown
from langkit.evaluate.stage import evaluate_system, run
from langkit.evaluate.tasks import (
    DEFAULT_TASK_FILE,
    DIRECTIONS,
    Direction,
    Task,
    default_task,
    load_directions,
    load_task,
    one_line,
)

__all__ = [
    "DEFAULT_TASK_FILE", "DIRECTIONS", "HUMAN_RATINGS_NAME", "KEY_COLUMNS", "METRICS", "RATING_COLUMNS",
    "SHEET_COLUMNS", "Direction", "RatingsError", "Task", "Translation", "decode_answer", "default_task",
    "evaluate_system", "import_ratings", "import_run_ratings", "load_directions", "load_task", "one_line",
    "paired_test", "report_markdown", "run", "score", "stop_token_ids", "translate", "write_human_eval",
]
