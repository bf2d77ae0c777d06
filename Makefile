# `make test` and `make demo` bootstrap everything on a fresh clone: a .venv with the pinned torch pair
# (DESIGN §7: torch 2.14.1 + torchvision 0.29.1) and this package with the extras the job needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= dev,eval,train,dicom,judge,agree,gpu
# Re-install when the dependency declarations change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	PFMVG_NO_PROGRESS=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

demo: install
	$(PY) recipes/demo.py --out demo_out

bench: install
	$(PY) bench/bench_parser.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info .pytest_cache .ruff_cache
