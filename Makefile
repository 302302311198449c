# Two commands on a fresh machine:   make demo   (the main job)   and   make test   (every test).
# Everything else here is what those two need; the virtualenv is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: demo test test-unit lint binaries images system-packages cluster-up cluster-down clean

$(STAMP): pyproject.toml
	@echo "==> installing ttsfleet and its test/worker dependencies into $(VENV) (first run downloads torch, ~5 GB)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --progress-bar off -e '.[dev,worker]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# make demo ADDONS=1 also starts KEDA and Prometheus next to the cluster; ADDONS=prometheus,keda,argocd picks.
demo: system-packages $(STAMP) images
	$(VENV)/bin/python -m ttsfleet.demo $(if $(ADDONS),--with-addons$(if $(filter-out 1,$(ADDONS)),=$(ADDONS)))

# Two workers (tests/conftest.py groups the tests so that each cluster, operator and tritonserver
# starts once); PYTEST_WORKERS=0 runs them one after another in this process.
PYTEST_WORKERS ?= 2
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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

cluster-up: $(STAMP)
	$(VENV)/bin/ttsfleet-cluster up

cluster-down: $(STAMP)
	$(VENV)/bin/ttsfleet-cluster down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
