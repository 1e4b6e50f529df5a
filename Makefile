# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration e2e up bench bench-quick schemas clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing devtrail and its dependencies into $(VENV) (first run takes a minute)..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install -qq -e '.[pipeline,embedded,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/devtrail demo --events 20000 --duplicate-rate 0.05 --invalid 6 --data-dir .devtrail/demo

up: $(STAMP)
	$(BIN)/devtrail up

test: lint unit integration e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The tests under steady load with kills (marked `heavy`) run in a second pytest process beside
# the others, each process with its own broker and PostgreSQL: they wait on pipelines more than
# they use the CPU, and the whole suite takes about two thirds of the time it takes in one process.
integration: $(STAMP)
	@heavy_log=$$(mktemp); \
	echo "integration: the heavy tests run beside the others; their output follows at the end"; \
	$(BIN)/pytest tests/integration -q -m heavy --durations=8 -p no:cacheprovider >$$heavy_log 2>&1 & heavy=$$!; \
	$(BIN)/pytest tests/integration -q -m "not heavy" --durations=12; light=$$?; \
	wait $$heavy; heavy_status=$$?; \
	echo "--- the heavy integration tests (steady load, kills):"; cat $$heavy_log; rm -f $$heavy_log; \
	test $$light -eq 0 && test $$heavy_status -eq 0

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q --durations=10

bench: $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[pipeline,embedded,dev,bench]'
	$(BIN)/devtrail bench

bench-quick: $(STAMP)
	$(BIN)/devtrail bench --quick

schemas: $(STAMP)
	$(BIN)/devtrail schemas export docs/schemas
	$(BIN)/devtrail schemas docs docs/events.md

clean:
	rm -rf .devtrail build *.egg-info .mypy_cache .ruff_cache .pytest_cache
