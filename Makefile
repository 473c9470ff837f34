# Set-up and the two entry points of README.md. The environment is made from pyproject.toml
# alone, so a fresh clone needs nothing installed by hand.
VENV ?= .venv
PY := $(VENV)/bin/python
# Test worker processes; each module's tests stay in one worker, which owns its module fixtures.
TEST_WORKERS ?= 2

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

.PHONY: install run test
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/crawl2chat run --preset tiny

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
