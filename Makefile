# `make demo` and `make test` create or reuse .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

# torch goes first, alone: the exact pin resolves to the local CPU wheel, while letting the
# resolver pick it alongside ray would pull several GB of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/s2s prepare \
	    --input data/sample/en-it/train.tsv \
	    --valid data/sample/en-it/dev.tsv \
	    --test data/sample/en-it/test.tsv \
	    --output demo-output/dataset \
	    tokenizer.vocab_size=4000
	$(VENV)/bin/s2s train \
	    --data demo-output/dataset \
	    --output demo-output/train \
	    --workers 2 \
	    preset=transformer-small max_steps=300 log_every=10 \
	    optim.lr=1e-3 schedule.warmup_steps=100 batching.max_tokens=2048 \
	    validation.every_steps=100 validation.decode_sentences=100 checkpoint.every_steps=100
	$(VENV)/bin/s2s translate \
	    --model demo-output/train/model \
	    --input demo-output/dataset/test \
	    --output demo-output/translations \
	    --id-column id \
	    --workers 2 \
	    --unit-mb 0.01 \
	    --overwrite \
	    --show 5

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/prepare.py
	$(PIP) install -q -c constraints.txt transformers ctranslate2
	$(PY) bench/train_throughput.py
	$(PY) bench/generate.py
	$(PY) bench/bulk.py

clean:
	rm -rf demo-output bench/out
