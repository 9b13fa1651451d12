# `make demo` and `make test` create or reuse .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test test-fast lint bench bench-scale bench-quality bench-gpu clean

venv: $(STAMP)

# torch goes first, alone: the exact pin resolves to the local CPU wheel, while letting the
# resolver pick it alongside ray would pull several GB of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[test,ct2]"
	touch $(STAMP)

# make demo [TASK=translate|summarize] [QUICK=1] [CLEAN=1]; S2S_DEMO_S3=1 writes to a local S3 server.
TASK ?= translate
demo: $(STAMP)
	$(VENV)/bin/s2s demo --task $(TASK) $(if $(filter-out 0,$(QUICK)),--quick) $(if $(filter-out 0,$(CLEAN)),--clean)

test: $(STAMP)
	$(MAKE) lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=30

# ruff on all Python code, mypy on the pure library (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check s2s_core pipelines bench tests
	$(VENV)/bin/mypy s2s_core

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/prepare.py
	$(PIP) install -q -c constraints.txt transformers accelerate
	$(PY) bench/train_throughput.py
	$(PY) bench/generate.py
	$(PY) bench/bulk.py

# Corpus scale: prepare and train on 1x/4x/16x the en-it train (about 30 minutes on 2 idle cores,
# 3 GB of disk under bench/out/scale, kept as a cache). Not part of `make bench`.
bench-scale: $(STAMP)
	$(PY) bench/prepare.py --scale 1,4,16 --language-id
	$(PY) bench/train_scale.py --scales 1,4,16 --steps 30

# Two hours at the default: M minutes of training for ours, then for Hugging Face's Seq2SeqTrainer.
MINUTES ?= 60
bench-quality: $(STAMP)
	$(PIP) install -q -c constraints.txt transformers accelerate
	$(PY) bench/quality.py --minutes $(MINUTES)

# On a GPU machine: transformer-base bf16 training, torch vs CTranslate2 float16 translation.
bench-gpu: $(STAMP)
	$(PY) bench/gpu.py

clean:
	rm -rf demo-output bench/out
