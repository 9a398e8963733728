"""The run directory: where the five stages meet.

No stage reaches into another's code; each reads the files the earlier stages wrote, at the paths
named here::

    RUN/
      config.yaml                 resolved config (overrides applied)
      corpus/dataset/{train,dev,test}.parquet   the Hugging Face dataset (parquet)
      corpus/stats.json           counts read / kept / dropped by reason, per source and language
      tokenizer/tokenizer/        Hugging Face tokenizer folder (base + new merges)
      tokenizer/tokenizer/new_tokens.json   each new token with its id and constituent base ids
      tokenizer/stats.json        fertility before/after, per language
      train/adapter/              PEFT adapter (safetensors) + adapter_config.json
      train/checkpoints/step-N/   resumable checkpoints
      train/merged/               optional (train.merged_export): base + adapter merged, and the tokenizer
      train/metadata.json         steps, tokens seen, wall time, losses
      eval/report.json, report.md, human_eval.csv, human_eval_key.csv
      release/                    adapter + tokenizer + README.md model card + manifest.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("corpus", "tokenizer", "train", "eval", "release")
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the adapter's tensors, as PeftModel.save_pretrained names them
TOKENIZER_FILE = "tokenizer.json"  # the extended tokenizer's model, merges and vocabulary


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    # corpus
    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def dataset(self) -> Path:
        return self.corpus / "dataset"

    def split(self, name: str) -> Path:
        """Parquet file of one split: ``train``, ``dev`` or ``test``."""
        return self.dataset / f"{name}.parquet"

    # tokenizer
    @property
    def tokenizer_stage(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokenizer(self) -> Path:
        return self.tokenizer_stage / "tokenizer"

    @property
    def tokenizer_file(self) -> Path:
        return self.tokenizer / TOKENIZER_FILE

    @property
    def new_tokens(self) -> Path:
        return self.tokenizer / "new_tokens.json"

    # train
    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def adapter(self) -> Path:
        return self.train / "adapter"

    @property
    def adapter_weights(self) -> Path:
        return self.adapter / ADAPTER_WEIGHTS

    @property
    def checkpoints(self) -> Path:
        return self.train / "checkpoints"

    @property
    def merged(self) -> Path:
        return self.train / "merged"

    # eval
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def report(self) -> Path:
        return self.eval / "report.json"

    # publish
    @property
    def release(self) -> Path:
        return self.root / "release"

    def require(self, path: Path, made_by: str) -> Path:
        """Fail early, naming the stage to run first, when an earlier stage's output is missing."""
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the {made_by} stage into {self.root} first")
        return path
