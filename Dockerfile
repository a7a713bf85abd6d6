# The `dev` image: every script in this repository runs in it (GPU or CPU).
#
#   docker compose up -d                                  # builds it, see docker-compose.yml
#   docker build -t music-scaling-laws:dev .              # or by hand
#   docker build --build-arg TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .
#                                                         # CPU-only: a much smaller image
#
# torch is the one version the whole repository is tested with, 2.13.0 (docs/docker.md: Makefile, CI, this
# image and the smoke test agree; requirements.txt states the oldest torch the code runs on). On the default
# base (python:3.11-slim, the Python of the tests) it comes from PyPI, whose Linux wheel is the CUDA build
# with its CUDA libraries: the host needs only the NVIDIA driver. A base that ships torch keeps its own
# (e.g. BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime); any Debian/Ubuntu base with python3 + pip
# works (docker_smoke_test.sh builds on a locally made Debian image when no registry can be reached).
# Plain Dockerfile syntax only (no BuildKit-only features), so both the legacy builder and BuildKit build it.

# No default on the ARG itself: docker-compose v1 passes an unset build arg as "", so the default lives in
# the FROM line, where it also covers "".
ARG BASE_IMAGE
FROM ${BASE_IMAGE:-python:3.11-slim}

# PIP_BREAK_SYSTEM_PACKAGES: a Debian/Ubuntu system python refuses `pip install` outside a venv (PEP 668);
# inside a single-purpose container the system python is the one we mean to fill. Ignored by conda's pip.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1

# abcmidi: abc2midi/midi2abc (ABC <-> MIDI); abcm2ps: ABC -> sheet music SVG; fluidsynth + the General MIDI
# soundfont (/usr/share/sounds/sf2/FluidR3_GM.sf2): MIDI -> WAV. procps for `ps`/`top` inside the container.
# build-essential (gcc, g++): torch.compile needs a C/C++ compiler -- Triton builds its CUDA launcher with it
# and inductor's CPU backend compiles C++ kernels -- and the runtime base images ship none ("Failed to find C
# compiler"). Both also include Python.h: python3-dev when the base's python lacks it (a Debian system python;
# the PyTorch and python:* images have it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends abcmidi abcm2ps fluidsynth fluid-soundfont-gm procps build-essential \
 && if ! python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then \
        apt-get install -y --no-install-recommends python3-dev; \
    fi \
 && rm -rf /var/lib/apt/lists/*

# The README's commands say `python`; a plain Debian base only has `python3`.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python

WORKDIR /workspace

# Dependencies in their own layer, before the code: editing a script does not re-run pip.
COPY requirements.txt /tmp/requirements.txt
# pip arguments that install torch, used only when the base image has no importable torch. Default: the
# tested version from PyPI (on Linux the CUDA build, multi-GB). CPU-only, e.g.
#   --build-arg TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# Its own pip call, so an --index-url/--find-links given here applies to torch alone. Declared here, not
# at the top: a changed build arg re-runs every RUN after its ARG, and the apt layer need not re-run.
ARG TORCH_INSTALL

RUN set -e; \
    if python -c "import torch" 2>/dev/null; then \
        python -c "import sys, torch; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); \
sys.exit(None if v >= (2, 4) else f'error: the base image has torch {torch.__version__}; this repository needs torch>=2.4')"; \
        echo "torch $(python -c 'import torch; print(torch.__version__)') comes with the base image: not reinstalled"; \
    else \
        echo "no torch in the base image: pip install ${TORCH_INSTALL:-torch==2.13.0}"; \
        pip install ${TORCH_INSTALL:-torch==2.13.0}; \
    fi; \
    grep -v -E '^torch([<>=!~ ;]|$)' /tmp/requirements.txt > /tmp/requirements-except-torch.txt; \
    pip install -r /tmp/requirements-except-torch.txt; \
    python -c "import torch, numpy, tiktoken, tokenizers, music21, pretty_midi, scipy, matplotlib, tqdm, wandb; \
print('torch', torch.__version__, '| CUDA build:', torch.version.cuda)"; \
    cc --version | head -n 1; c++ --version | head -n 1

# The code, so the image also works on its own; docker-compose.yml bind-mounts the checkout over it so
# that an edit on the host takes effect at once.
COPY . /workspace

CMD ["bash"]
