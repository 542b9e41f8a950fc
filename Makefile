# payments-cqs developer tasks. Everything runs from the project venv in .venv.
#   make install   create .venv and install the project with the local stack and test deps
#   make test      run the whole test suite (starts the embedded servers it needs)
#   make run       run every process of the system on the embedded local stack
#   make stack     run only the local stack in the foreground (Ctrl-C stops it)
#   make lint      ruff

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= local,test

.PHONY: install test run stack lint clean

# Re-install whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

run: $(STAMP)
	$(BIN)/payments up

stack: $(STAMP)
	$(BIN)/payments stack up

lint: $(STAMP)
	$(BIN)/ruff --version >/dev/null 2>&1 || $(BIN)/python -m pip install -q -e '.[lint]'
	$(BIN)/ruff check services shared tests bench devstack

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
