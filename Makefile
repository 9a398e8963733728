# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install langkit, run the whole pipeline on the built-in demo
#   make test   - create .venv, install langkit, lint (ruff), type-check (mypy), run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a GPU machine can pass e.g. TORCH_SPEC="torch==2.13.0" with its CUDA index.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo
# olah, the Hub mirror the publish tests download from, in an environment of its own: its fastapi-utils pins
# psutil < 6, which ipython (the notebook test) cannot live with. tests/test_publish_mirror.py finds it here.
OLAH_VENV ?= .venv-olah
OLAH_SPEC ?= olah>=0.5.4,<0.6

# Nothing in the demo or the tests needs the network: the gpt-oss tokenizer is rebuilt offline.
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint typecheck pytest clean mirror-env

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

mirror-env: $(OLAH_VENV)/.installed

$(OLAH_VENV)/.installed:
	$(PYTHON) -m venv $(OLAH_VENV)
	$(OLAH_VENV)/bin/python -m pip install --quiet "$(OLAH_SPEC)"
	touch $@

demo: install
	$(VENV)/bin/langkit run configs/demo.yaml --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy langkit

pytest: install mirror-env
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) $(OLAH_VENV) runs .pytest_cache .mypy_cache .ruff_cache
