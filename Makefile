# `make test` and `make demo` bootstrap everything on a fresh clone: a .venv holding exactly the locked set of
# constraints.txt (every distribution pinned; README "Install": the lock, the tested range, how to refresh them)
# and this package, editable. torch 2.14.1 + torchvision 0.29.1 are the pair that works on these CPU machines: the
# local torch 2.13.0 CPU wheel beside PyPI's torchvision fails with "operator torchvision::nms does not exist".

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= dev,eval,train,dicom,judge,agree,rate,gpu
LOCK := constraints.txt
# The second environment: the lowest versions pyproject.toml's extras allow (requirements/lowest.in).
VENV_LOWEST ?= .venv-lowest
EXTRAS_LOWEST := dev,eval,train
LOCK_LOWEST := requirements/lowest.txt
# Re-install when the dependency declarations change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)
STAMP_LOWEST := $(VENV_LOWEST)/.installed-$(shell cat pyproject.toml $(LOCK_LOWEST) | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install install-lowest test test-lowest lint demo bench lock lock-lowest clean

install: $(STAMP)

# The lock is installed as it is (no resolution), then the package itself without dependencies: the venv holds
# the locked set and nothing else (tests/test_environment.py names any drift).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r $(LOCK)
	$(PIP) install -q --no-deps -e .
	$(PIP) check
	@rm -f $(VENV)/.installed-*
	@touch $@

install-lowest: $(STAMP_LOWEST)

$(STAMP_LOWEST): pyproject.toml $(LOCK_LOWEST)
	@test -x $(VENV_LOWEST)/bin/python || $(PYTHON) -m venv $(VENV_LOWEST)
	$(VENV_LOWEST)/bin/python -m pip --disable-pip-version-check install -q -r $(LOCK_LOWEST)
	$(VENV_LOWEST)/bin/python -m pip --disable-pip-version-check install -q --no-deps -e .
	$(VENV_LOWEST)/bin/python -m pip --disable-pip-version-check check
	@rm -f $(VENV_LOWEST)/.installed-*
	@touch $@

# Refresh the locks from a clean resolve (after changing requirements/*.in or pyproject.toml's dependencies, or to
# take newer releases): a throwaway venv installs the direct pins and the package, and its `pip freeze` is the lock.
# `make lock KEEP=1` (and `make lock-lowest KEEP=1`) resolves with the current lock as extra constraints: a newly
# added dependency gets pinned and every existing pin stays (check with `git diff constraints.txt`).
KEEP ?=
lock:
	$(PYTHON) tools/lock.py --pins requirements/direct.in --extras $(EXTRAS) --out $(LOCK) $(if $(KEEP),--keep $(LOCK))

lock-lowest:
	$(PYTHON) tools/lock.py --pins requirements/lowest.in --extras $(EXTRAS_LOWEST) --out $(LOCK_LOWEST) \
		$(if $(KEEP),--keep $(LOCK_LOWEST))

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	PFMVG_LOCK_FILE=$(LOCK) PFMVG_NO_PROGRESS=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

# The tests marked `lowest` (core, codecs/metrics, one lmms-eval CLI run, one LoRA step, adapter reload) in the
# lowest-versions environment: the lower bounds pyproject.toml claims, tested.
test-lowest: install-lowest
	PFMVG_LOCK_FILE=$(LOCK_LOWEST) PFMVG_NO_PROGRESS=1 $(VENV_LOWEST)/bin/pytest -m lowest $(PYTEST_ARGS)

demo: install
	$(PY) recipes/demo.py --out demo_out

bench: install
	$(PY) bench/bench_parser.py

clean:
	rm -rf $(VENV) $(VENV_LOWEST) demo_out build *.egg-info .pytest_cache .ruff_cache
