# The README's commands. Each target installs what it needs into .venv (torch CPU wheel first).
VENV    ?= .venv
PY      := $(VENV)/bin/python
LAKE    ?= lakehouse
PORT    ?= 3000
PYTEST_ARGS ?=

.PHONY: setup setup-test demo test bench ui browser clean

# uv resolves and downloads in parallel: the dependencies installed in 11.5 s against 1 min 50 s with pip (same
# versions). torch stays pip's (uv does not read the local wheel); uv keeps the installed 2.13.0 as it is.
# pip takes over where uv cannot run (e.g. an index that only pip is configured for).
install = $(VENV)/bin/uv pip install -q --python $(PY) $(1) || $(PY) -m pip install -q $(1)

setup: $(VENV)/.installed

# The runtime (what `make demo` and `make ui` need); `make test` adds the test tools on top.
$(VENV)/.installed: pyproject.toml
	@echo "setup [1/4] virtual environment in $(VENV)"
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "setup [2/4] upgrading pip, installing uv"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q uv || echo "uv unavailable: pip installs everything (about 2 minutes more)"
	@echo "setup [3/4] installing torch 2.13.0 (CPU wheel, the largest: about half a minute)"
	$(PY) -m pip install -q torch==2.13.0
	@echo "setup [4/4] installing desi-ard and its dependencies (dagster, deltalake, polars, astropy, ...)"
	$(call install,-e .)
	touch $@
	@echo "setup done: $(VENV) is ready (make demo, make ui; make test adds the test tools)"

setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "setup: test tools (pytest, hypothesis, xdist, desispec as the reference reader, moto for S3)"
	$(call install,-e ".[test]")
	touch $@

# Headless Chromium for the UI test (Debian package); skipped quietly where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the UI test will be skipped"; }

demo: setup
	@echo "demo: mock survey + every stage into $(LAKE)/ (a few minutes on 2 cores; ends with the checks table)"
	$(VENV)/bin/desi-ard demo --lakehouse $(LAKE)
	@echo "demo: the three science cases on the demo lakehouse (figures in $(LAKE)/figures)"
	$(PY) -m examples --lakehouse $(LAKE) --out $(LAKE)/figures

test: setup-test browser
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup-test
	$(PY) bench/machine_speed.py
	$(PY) bench/ingest.py
	$(PY) bench/anomaly_score.py
	$(PY) bench/anomaly_injection.py
	$(PY) bench/readers.py
	$(PY) bench/physics.py
	$(PY) bench/cosmic_web.py
	$(PY) bench/embed.py
	$(PY) bench/embedding_ceiling.py
	$(PY) bench/embedding_readouts.py --lakehouse $(LAKE)
	$(PY) bench/embedding_training_step.py
	$(PY) bench/vector_search.py
	$(PY) bench/api.py
	$(PY) bench/mock_vs_real.py
	$(PY) bench/stellar_populations.py

ui: setup
	mkdir -p $(LAKE)/.dagster
	test -f $(LAKE)/.dagster/dagster.yaml || printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > $(LAKE)/.dagster/dagster.yaml
	DAGSTER_HOME=$(abspath $(LAKE))/.dagster DESI_ARD_LAKEHOUSE=$(abspath $(LAKE)) \
	  DESI_ARD_ARCHIVE=$(abspath $(LAKE))/archive $(VENV)/bin/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

clean:
	rm -rf $(LAKE)/delta $(LAKE)/models $(LAKE)/plots $(LAKE)/.dagster
