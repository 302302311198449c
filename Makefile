# Two commands on a fresh machine:   make demo   (the main job)   and   make test   (every test).
# Everything else here is what those two need; the virtualenv is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: demo test test-unit lint binaries images system-packages cluster-up cluster-down clean

# uv installs from its cache (~/.cache/uv) by hard links: a fresh clone gets its .venv in seconds
# once the wheels are there, where pip unpacks torch's 5 GB again (two minutes).
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml
	@echo "==> installing ttsfleet and its test/worker dependencies into $(VENV) (first run downloads torch, ~5 GB)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python -e '.[dev,worker]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# make demo ADDONS=1 also starts KEDA and Prometheus next to the cluster; ADDONS=prometheus,keda,argocd picks.
demo: system-packages $(STAMP) images
	$(VENV)/bin/python -m ttsfleet.demo $(if $(ADDONS),--with-addons$(if $(filter-out 1,$(ADDONS)),=$(ADDONS)))

# Three workers on 2 cores: most e2e time is waiting on controllers and pods (tests/conftest.py
# groups the tests so that each cluster, operator and tritonserver starts once);
# PYTEST_WORKERS=0 runs them one after another in this process.
PYTEST_WORKERS ?= 3
test: system-packages $(STAMP) lint binaries images
	$(VENV)/bin/pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup)

# Debian packages the real node needs (runc, CNI plugins, iptables, mmdebstrap, ...); instant when present.
system-packages:
	@devcluster/system-packages.sh

# Outside pytest so that the first, long build shows its progress live (seconds when cached).
binaries: $(STAMP)
	$(VENV)/bin/ttsfleet-cluster build

# The real node's container images, built offline and cached by content (seconds when cached).
images: system-packages binaries
	$(VENV)/bin/ttsfleet-cluster images

test-unit: $(STAMP)
	$(VENV)/bin/pytest -m unit

# mypy's cache outside the clone (it checks every file's hash before trusting an entry): a fresh
# clone's lint takes seconds instead of the 50 a cold cache needs.
MYPY_CACHE ?= $(HOME)/.cache/ttsfleet/mypy
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPY_CACHE_DIR=$(MYPY_CACHE) $(VENV)/bin/mypy

cluster-up: $(STAMP)
	$(VENV)/bin/ttsfleet-cluster up

cluster-down: $(STAMP)
	$(VENV)/bin/ttsfleet-cluster down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
