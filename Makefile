# Everything runs inside .venv; the first target that needs it creates it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	# Triton's server binary for the Triton tests (only its files are used; its Python package pins numpy < 2)
	$(BIN)/python -m pip install --no-deps 'nvidia-pytriton==0.7.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py --out $(DEMO_DIR)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# Chromium for the dashboard's browser tests, where it can be installed; never fails the build.
browser:
	-@sh tools/install_chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check linewatch tests tools

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
