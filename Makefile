# The README's two set-up commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

.PHONY: serve test test-web lint bench soak deploy-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The service needs no torch.
$(VENV)/.serve: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

# Tests train tiny models, so they need torch: the pinned CPU wheel FIRST
# (a bare `torch` requirement would pull a multi-GB CUDA build), then the rest.
$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,dev]'
	touch $@

serve: $(VENV)/.serve
	SEQSERVE_HOST=$(HOST) SEQSERVE_PORT=$(PORT) $(PY) -m app

# PYTEST_ARGS: extra pytest arguments (CI: -m 'not browser', then `make test-web`)
test: $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS)

# The web page in a real browser: Playwright (the dev extra) driving Debian's chromium
# (`apt-get install chromium`; CHROMIUM= another binary). Here the browser tests are
# required: without a browser they fail, where plain `make test` skips them.
CHROMIUM ?= /usr/bin/chromium
test-web: $(VENV)/.test
	SEQSERVE_BROWSER_TESTS=required SEQSERVE_CHROMIUM=$(CHROMIUM) \
		$(PY) -m pytest tests/test_web_static.py tests/test_web_browser.py

lint: $(VENV)/.test
	$(PY) -m ruff check app training tests bench

bench: $(VENV)/.test
	$(PY) -m bench.run

# 50,000 mixed valid/invalid requests at concurrency 64 against a real server (loopback)
soak: $(VENV)/.test
	$(PY) -m bench.soak

# Lint the deployment files, build and run the CPU image with podman, and query every
# dashboard and alert expression on a live Prometheus (docs/deploy.md). Needs root on
# Debian (it apt-installs podman, prometheus, ...); no Docker engine, loopback only.
deploy-test:
	bash deploy/deploy_test.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
