# rotorec: `make demo` runs the main job end to end, `make test` lints and runs the tests
# (`make test-fast`: lint and the tests not marked slow, about a minute).
# Both create the virtual environment .venv on first use (CPU torch unless TORCH says otherwise).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo
PYTEST_ARGS ?= -n 2

.PHONY: demo lint test test-fast bench-features clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)/run $(DEMO)/report
	$(BIN)/rotorec synth --out $(DEMO)/synth --preset small --seed 0 --users 1000
	$(BIN)/rotorec prepare --input $(DEMO)/synth --out $(DEMO)/prepared --max-len 100 --windows all
	$(BIN)/rotorec train --data $(DEMO)/prepared --config configs/tiny.yaml --out $(DEMO)/run
	$(BIN)/rotorec evaluate --run $(DEMO)/run --data $(DEMO)/prepared --out $(DEMO)/report
	@echo "report: $(DEMO)/report/report.md (metrics.json, reliability plots)"
	$(BIN)/rotorec --log-level WARNING serve --run $(DEMO)/run --sample-feed $(DEMO)/prepared
	@echo "serve it: $(BIN)/rotorec serve --run $(DEMO)/run  (then POST /v1/rank; OpenAPI at /docs)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-test loop: lint, then every test but the `slow` ones (rotorec subprocesses, servers, training).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" -n 2

bench-features: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis .ruff_cache
