# Two commands do everything on a fresh Debian/Ubuntu machine (system packages, .venv, Python packages):
#   make demo   the main job: a small but complete scaling study on the corpus inside music21
#   make test   the test suite (what CI runs, through .ci/run); make test-fast leaves out the slow end-to-end tests
# Knobs: PYTHON (interpreter for the venv), TORCH (pip spec; the default is the CPU build on machines
# without CUDA wheels cached, and the CUDA build from PyPI elsewhere), DEMO_CONFIG, BASE_IMAGE (docker-test;
# e.g. local-debian where no image registry can be reached).
PYTHON ?= python3
# the tested torch; the Dockerfile and docker_smoke_test.sh pin the same version (docs/docker.md)
TORCH ?= torch==2.13.0
DEMO_CONFIG ?= config/study_quick.py
BASE_IMAGE ?=
VENV := .venv
PY := $(VENV)/bin/python
# Debian/Ubuntu packages: midi2abc/abc2midi, sheet music, audio rendering with a General MIDI soundfont, and the
# headless browser the test of report.html opens it in
APT_PACKAGES := abcmidi abcm2ps fluidsynth fluid-soundfont-gm python3-venv chromium

.PHONY: demo test test-fast prepare bench bench-gpu docker-test system-deps clean

demo: $(VENV)/.runtime-installed
	$(PY) study.py $(DEMO_CONFIG)

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q tests

# the quick lane while developing: every test but the end-to-end ones marked slow (pytest.ini), on two processes
# (pytest-xdist; a file's tests stay in one, so its module fixtures are made once); make test runs one at a time
test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile tests

# rebuilds data/music21 on purpose (the same bytes each time); prepare.py still refuses a folder with other files
prepare: $(VENV)/.runtime-installed
	$(PY) prepare.py --overwrite=True

bench: $(VENV)/.runtime-installed
	$(PY) bench_data.py
	$(PY) bench.py config/gpt_tiny.py
	$(PY) bench.py config/lstm_tiny.py

# issue #30's GPU figures in one command (about 8 minutes on one H100/H200; needs data/music21): train.py against
# bench.py per config with compile times, sampling tokens/s, the quick study's process overhead, as BENCHMARKS.md rows
bench-gpu: $(VENV)/.runtime-installed
	$(PY) bench_gpu.py

docker-test:
	bash docker_smoke_test.sh $(BASE_IMAGE)

# Installs the system packages that are missing; needs root (or sudo) only when something is missing.
system-deps:
	@missing=""; \
	command -v midi2abc >/dev/null && command -v abc2midi >/dev/null || missing="$$missing abcmidi"; \
	command -v abcm2ps >/dev/null || missing="$$missing abcm2ps"; \
	command -v fluidsynth >/dev/null || missing="$$missing fluidsynth"; \
	[ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing="$$missing fluid-soundfont-gm"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; \
	  elif command -v sudo >/dev/null; then echo "installing system packages:$$missing (sudo asks for your password)"; sudo="sudo"; \
	  else echo "error: missing system packages:$$missing; as root run: apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing system packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.runtime-installed: requirements.txt | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache
