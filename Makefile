# The README's two set-up commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

# torch for the tests and training (never for the service). The default works where the
# CPU wheel is what `pip install torch==2.13.0` finds (as on this project's machines); on
# an ordinary Linux machine that pulls the multi-GB CUDA build, so take the CPU wheel from
# PyTorch's index instead:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
UV_VERSION  ?= 0.13.8

.PHONY: bench-ab serve test test-fast test-web lint wrk bench profile bench-tools test-bench-tools soak deploy-test lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The service needs no torch: the locked runtime dependencies (requirements.lock, with
# hashes: the image installs the same file), then the project itself.
$(VENV)/.serve: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	touch $@

# Tests train tiny models, so they need torch: TORCH_SPEC from TORCH_INDEX FIRST (a bare
# `torch` requirement would pull a multi-GB CUDA build), then the locked rest
# (requirements-dev.lock: runtime + every extra but gpu, torch left out) and the project
# with the extras the tests use (otel: the tracing tests' in-memory exporter).
$(VENV)/.test: pyproject.toml requirements-dev.lock | $(VENV)/bin/python
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH_SPEC)'
	$(PIP) install -r requirements-dev.lock -e '.[train,dev,otel]'
	touch $@

serve: $(VENV)/.serve
	SEQSERVE_HOST=$(HOST) SEQSERVE_PORT=$(PORT) $(PY) -m app

# PYTEST_ARGS: extra pytest arguments (CI: -m 'not browser', then `make test-web`)
test: $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast lane: the suite without the tests that train models, spawn servers or soak
# (marked `slow` by tests/conftest.py) and the browser tests; under a minute here.
test-fast: $(VENV)/.test
	$(PY) -m pytest -m 'not slow and not browser' $(PYTEST_ARGS)

# The web page in a real browser: Playwright (the dev extra) driving Debian's chromium
# (`apt-get install chromium`; CHROMIUM= another binary). Here the browser tests are
# required: without a browser they fail, where plain `make test` skips them.
CHROMIUM ?= /usr/bin/chromium
test-web: $(VENV)/.test
	SEQSERVE_BROWSER_TESTS=required SEQSERVE_CHROMIUM=$(CHROMIUM) \
		$(PY) -m pytest tests/web/test_web_static.py tests/web/test_web_browser.py

# ruff, and the lock files still pin every requirement of pyproject.toml (else `make lock`)
lint: $(VENV)/.test
	$(PY) -m ruff check app seqcore training tests bench deploy
	$(PY) deploy/image/requirements.py --check requirements.lock
	$(PY) deploy/image/requirements.py --gpu --check requirements-gpu.lock
	$(PY) deploy/image/requirements.py --extra all --exclude torch --check requirements-dev.lock

# Re-pin the lock files from pyproject.toml (needs PyPI). Existing pins are kept where
# they still fit; `make lock UPGRADE=1` takes the newest releases instead.
UV_COMPILE = $(VENV)/bin/uv pip compile --universal --python-version 3.11 --quiet \
	--native-tls --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: | $(VENV)/bin/python
	$(PIP) install uv==$(UV_VERSION)
	$(PY) deploy/image/requirements.py | $(UV_COMPILE) --generate-hashes -o requirements.lock -
	$(PY) deploy/image/requirements.py --gpu | $(UV_COMPILE) --generate-hashes -o requirements-gpu.lock -
	$(PY) deploy/image/requirements.py --extra all --exclude torch | $(UV_COMPILE) -o requirements-dev.lock -

# The LitServe peer of the benchmark runs in a venv of its own (pinned: litserve, and
# the onnxruntime and numpy the service locks), so it cannot disturb $(VENV).
LITSERVE_VENV ?= .cache/bench/litserve-venv
LITSERVE_PINS ?= litserve==0.2.19 onnxruntime==1.32.0 numpy==2.4.6
$(LITSERVE_VENV)/.ready:
	$(PYTHON) -m venv $(LITSERVE_VENV)
	$(LITSERVE_VENV)/bin/python -m pip --disable-pip-version-check -q install $(LITSERVE_PINS)
	touch $@

# The serving benchmarks that users run against OpenAI-compatible servers, unchanged,
# each in a venv of its own (pinned; their own dependencies float): NVIDIA's aiperf and
# guidellm. guidellm needs torch: TORCH_SPEC from TORCH_INDEX first, as for the tests
# (a bare `torch` requirement pulls the multi-GB CUDA build).
AIPERF_VENV   ?= .cache/bench/aiperf-venv
AIPERF_PINS   ?= aiperf==0.13.0
GUIDELLM_VENV ?= .cache/bench/guidellm-venv
GUIDELLM_PINS ?= guidellm==0.8.1
$(AIPERF_VENV)/.ready:
	rm -rf $(AIPERF_VENV)
	$(PYTHON) -m venv $(AIPERF_VENV)
	$(AIPERF_VENV)/bin/python -m pip --disable-pip-version-check -q install $(AIPERF_PINS)
	touch $@
$(GUIDELLM_VENV)/.ready:
	rm -rf $(GUIDELLM_VENV)
	$(PYTHON) -m venv $(GUIDELLM_VENV)
	$(GUIDELLM_VENV)/bin/python -m pip --disable-pip-version-check -q install \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH_SPEC)'
	$(GUIDELLM_VENV)/bin/python -m pip --disable-pip-version-check -q install \
		'$(TORCH_SPEC)' $(GUIDELLM_PINS)
	touch $@
bench-tools: $(AIPERF_VENV)/.ready $(GUIDELLM_VENV)/.ready

# aiperf's and guidellm's default streamed runs against a real server, with the
# character tokenizer built from the model (bench/char_tokenizer.py); any error fails
test-bench-tools: $(VENV)/.test bench-tools
	SEQSERVE_BENCH_TOOLS=required $(PY) -m pytest tests/bench/test_bench_clients.py

# wrk, the /sentiment load generator of `make bench` and `python -m bench.profile`:
# apt-get installs it where it can (Debian/Ubuntu, as root), else a clear error.
wrk:
	@command -v wrk > /dev/null || { command -v apt-get > /dev/null && [ "$$(id -u)" = 0 ] \
	  && apt-get install -y -q wrk > /dev/null; } || command -v wrk > /dev/null || \
	  { echo "make bench needs wrk (the /sentiment load generator): install it" \
	         "(apt-get install wrk, brew install wrk) and run again" >&2; exit 1; }

# BENCH_ARGS: e.g. --quick (a smoke run of a few minutes, written to .cache/bench/)
bench: wrk $(VENV)/.test $(LITSERVE_VENV)/.ready bench-tools
	$(PY) -m bench.run $(BENCH_ARGS)

# This checkout against another commit, every request path in one interleaved run
# (bench.ab): make bench-ab BASE=<ref> [AB_ARGS='--rounds 21 --load stream:32']
BASE ?= HEAD~1
AB_DIR ?= .cache/bench/ab-base
bench-ab: wrk $(VENV)/.test
	rm -rf $(AB_DIR) && git worktree prune
	git worktree add --detach $(AB_DIR) $(BASE)
	$(PY) -m bench.ab --baseline $(AB_DIR) $(AB_ARGS); rc=$$?; \
	  git worktree remove --force $(AB_DIR); exit $$rc

# Where a short /sentiment request's time goes (py-spy under wrk load): PROFILE_ARGS=--quick
# py-spy (pinned) goes into the venv here only: the service and the tests never need it.
PY_SPY_PIN ?= py-spy==0.4.3
profile: wrk $(VENV)/.test
	test -x $(VENV)/bin/py-spy || $(PIP) install $(PY_SPY_PIN)
	$(PY) -m bench.profile $(PROFILE_ARGS)

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
