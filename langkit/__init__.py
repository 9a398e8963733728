"""langkit: adapt OpenAI's open-weight gpt-oss models to African languages.

Five stages, each with one front door ``run(cfg, run_dir) -> Path``:

1. :mod:`langkit.corpus`    - load, normalize, deduplicate and split the corpora
2. :mod:`langkit.tokenizer` - measure the tokenization tax and extend gpt-oss's tokenizer
3. :mod:`langkit.train`     - LoRA fine-tuning (attention, experts, new token rows)
4. :mod:`langkit.evaluate`  - translate the test split; chrF++/BLEU; human-evaluation sheets
5. :mod:`langkit.publish`   - release folder, model card, manifest, push and verify

:mod:`langkit.pipeline` runs them in order; :mod:`langkit.config` holds their settings.
"""

__version__ = "0.1.0"
