# Set-up is incremental: each step leaves a stamp in .venv and is redone only when its inputs change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
LLAMA_VERSION := 0.3.36
# A portable llama.cpp build: the native build crashes in decode on some AVX-512/AMX CPUs.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# Built wheels are kept outside the checkout so a fresh clone on the same machine skips the 10-minute build.
WHEEL_CACHE ?= $(HOME)/.cache/rag-bot/wheels/llama-cpp-python-$(LLAMA_VERSION)-portable
PYTEST_ARGS ?=
CHAT_ARGS ?=
DATA_DIR := .rag_bot

.PHONY: setup run test bench bench-scaling bench-finetune clean browser
setup: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch-$(TORCH_VERSION): | $(BIN)/python
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.llama-$(LLAMA_VERSION): | $(VENV)/.torch-$(TORCH_VERSION)
	@if ! ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "Building llama-cpp-python $(LLAMA_VERSION) from source (about 10 minutes on 2 cores)"; \
		mkdir -p $(WHEEL_CACHE) && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir \
			-w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION) || exit 1; \
	fi
	$(BIN)/pip install --quiet $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION) $(VENV)/.llama-$(LLAMA_VERSION)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The README's first command: set up, ingest the example documents, train the bootstrap scope filter
# (again only when the documents changed), then serve the chat UI on http://127.0.0.1:7860.
run: setup
	$(BIN)/rag-bot ingest examples/docs
	@$(MAKE) --no-print-directory $(DATA_DIR)/filters/rag_bot.json
	$(BIN)/rag-bot chat $(CHAT_ARGS)

$(DATA_DIR)/filters/rag_bot.json: $(wildcard examples/docs/*) rag_bot/filter.py rag_bot/filter_training.py prompts/scope_negatives.txt
	$(BIN)/rag-bot train-filter --from-corpus

# The browser test needs Debian's chromium (driven by Playwright; no browser download).
browser:
	@command -v chromium >/dev/null || { \
		echo "Installing chromium for the browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/ingest_scifact.py
	$(BIN)/python bench/retriever_latency.py
	$(BIN)/python bench/llm_latency.py

# long runs, apart: about 2 hours (200k chunks to embed) and about 1 hour
bench-scaling: setup
	$(BIN)/python bench/scaling.py

bench-finetune: setup
	$(BIN)/python bench/finetune_scifact.py

clean:
	rm -rf $(VENV) .rag_bot
