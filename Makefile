# Two commands for a fresh clone: `make run` and `make test`. Both create the project
# virtualenv (.venv) and install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first, pinned, so that requirements.txt's range installs nothing more.
# On this CPU-only development machine kind the pip configuration serves the CPU wheel of
# this version; on a GPU server PyPI serves the CUDA build of the same version.
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install browser run test bench bench-api bench-parallel clean-db tiny-checkpoint

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: install
	$(PY) manage.py run_service

# The job page's browser test (tests/test_page_browser.py) drives Debian's Chromium: installed
# here when missing and this user may (root, or sudo without a password), else it says how.
# A failed install is not fatal here: the test then fails under CI and is skipped elsewhere.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "make browser: Chromium is missing; install it with: sudo apt-get install chromium"; exit 0; fi; \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "make browser: Chromium is missing; install it with your package manager"; exit 0; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	  || echo "make browser: could not install Chromium (the browser test will say so)"; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/daemon_overhead.py

bench-api: install
	$(PY) bench/api_load.py

bench-parallel: install
	$(PY) bench/parallel_traffic.py

tiny-checkpoint: install
	$(PY) manage.py create_tiny_checkpoint var/tiny-wan-i2v
