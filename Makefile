# The README's two commands are `make serve` and `make test`; `make help` lists the rest.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= var
PORT ?= 8080
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test lint typecheck pytest serve bench clean browser-deps

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.py archive/_rows.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its test and bench extras

lint: $(STAMP) ## ruff lint and format check, and the import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP) ## mypy over the packages
	$(BIN)/mypy

pytest: $(STAMP) browser-deps ## the test suite only
	$(BIN)/pytest

test: lint typecheck pytest ## Install everything, then ruff, mypy and the whole test suite

# The web page's browser tests drive Debian's chromium with Playwright (which never downloads
# a browser). Installed here when missing and we are root; otherwise those tests skip and say
# how to enable them.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found: the browser tests will be skipped (apt-get install chromium)"; fi; }

# The bundled occurrence samples and three real portals' archives (an iDigBio download of
# Acer rubrum, a GBIF download, a Symbiota export) make serve's first start; 20,000
# synthetic records (fixed seed) give queries such as {"genus": "acer"} more to find.
SAMPLES := tests/fixtures/dwca/gbif-results.zip tests/fixtures/dwca/dwca-simple-test-archive.zip \
	tests/fixtures/dwca/dwca-test-default.zip $(wildcard tests/fixtures/dwca/*multimedia*.zip) \
	$(wildcard tests/fixtures/real-dwca/*.zip)
SYNTHETIC ?= 20000

serve: $(STAMP) ## Install, load the sample archives into an empty store, serve on localhost:$(PORT)
	$(BIN)/downloader ingest --data-dir $(DATA_DIR) --if-empty --synthetic $(SYNTHETIC) $(SAMPLES)
	$(BIN)/downloader serve --data-dir $(DATA_DIR) --port $(PORT)

bench: $(STAMP) ## Run the benchmarks (BENCH_ARGS=--quick for a smoke run); results go to bench/results/
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .pytest_cache .ruff_cache
