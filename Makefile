# sophia_train — common tasks. Everything runs inside a local virtualenv ($(VENV)).
#   make demo    install what training needs, prepare the embedded corpus, train a tiny GPT with Sophia-G on CPU, plot
#   make test    install the dev stack too, lint (ruff), run the test suite (CPU only)
#   make lint    ruff check (style and imports) and lint-imports (import layers, no cycle; both set in pyproject.toml)
#   make bench   step time Sophia-G vs AdamW, the Sophia update side by side, what the kernels compile to
#   make device-prep   fill .device/ (wheels, GPT-2 corpus, tiktoken cache) for bench/device_check.sh on a lent GPU
# GPU users: make install TORCH_SPEC=torch   (pip's default torch wheel is the CUDA build)

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
TORCH_SPEC  ?= torch==2.13.0
PIP_FLAGS   ?=
DEMO_ARGS   ?=
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2  # pytest-xdist processes (one torch thread each): 12.7 min vs ~20 serially on 2 cores
DEMO_OUT    ?= runs/demo

# tiktoken's GPT-2 files and a test corpus from a checkout's ../shared when present (CI, offline).
SHARED := $(abspath ../shared)
ifneq ($(wildcard $(SHARED)/tokenizers/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tokenizers/tiktoken_cache
endif
ifneq ($(wildcard $(SHARED)/data/tinyshakespeare/input.txt),)
export SOPHIA_TEST_CORPUS ?= $(SHARED)/data/tinyshakespeare/input.txt
endif

.PHONY: install install-core data demo lint test test-fast bench device-prep clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What training needs (torch and the package's own dependencies): enough for the demo.
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -e .
	touch $@

# The development stack on top: tests, linters and every optional extra the suite exercises.
$(VENV)/.installed: $(VENV)/.installed-core
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -e ".[dev]"
	touch $@

install-core: $(VENV)/.installed-core

install: $(VENV)/.installed

data/corpus/meta.json: | $(VENV)/.installed-core
	$(BIN)/python scripts/prepare_data.py corpus

data: data/corpus/meta.json

demo: install-core data
	$(BIN)/python -m sophia_train +model=tiny optim=sophia_g train.out_dir=$(DEMO_OUT) train.overwrite=true \
		train.batch_size=16 train.max_steps=1200 train.warmup_steps=100 \
		train.eval_interval=200 train.eval_iters=40 train.log_interval=50 $(DEMO_ARGS)
	@echo "--- a sample from the demo model (python scripts/sample.py $(DEMO_OUT)) ---"
	$(BIN)/python scripts/sample.py $(DEMO_OUT) --prompt "And God said" -n 240

lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: install data
	$(BIN)/python bench/bench_step_time.py
	$(BIN)/python bench/bench_sophia_update.py
	$(BIN)/python bench/compile_kernels.py

device-prep: install
	$(BIN)/python bench/device_prep.py --out .device

clean:
	rm -rf $(VENV) runs .pytest_cache
