# Every target bootstraps its own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench models image-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,tflite-runtime]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/blurcam run --web 127.0.0.1:8080 --state-dir .state

test: $(STAMP)
	./tools/system-deps.sh
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/blurcam bench

clean:
	rm -rf $(VENV) .state .pytest_cache
