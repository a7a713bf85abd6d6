# The `dev` image: every script in this repository runs in it (GPU or CPU).
#
#   docker compose up -d                                  # builds it, see docker-compose.yml
#   docker build -t music-scaling-laws:dev .              # or by hand
#   docker build --build-arg BASE_IMAGE=python:3.11-slim \
#     --build-arg TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .   # CPU-only
#
# The default base is an official PyTorch CUDA runtime image, so the multi-GB CUDA torch comes with the
# base layers and is never reinstalled here. Any other base with python3 + pip on Debian/Ubuntu works too
# (docker_smoke_test.sh builds on a locally made Debian image when no registry can be reached); torch is
# then installed with TORCH_INSTALL.
# Plain Dockerfile syntax only (no BuildKit-only features), so both the legacy builder and BuildKit build it.

# No default on the ARG itself: docker-compose v1 passes an unset build arg as "", so the default lives in
# the FROM line, where it also covers "".
ARG BASE_IMAGE
FROM ${BASE_IMAGE:-pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime}

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
RUN apt-get update \
 && apt-get install -y --no-install-recommends abcmidi abcm2ps fluidsynth fluid-soundfont-gm procps \
 && rm -rf /var/lib/apt/lists/*

# The README's commands say `python`; a plain Debian base only has `python3`.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python

WORKDIR /workspace

# Dependencies in their own layer, before the code: editing a script does not re-run pip.
COPY requirements.txt /tmp/requirements.txt
# pip arguments that install torch, used only when the base image has no importable torch. Pin it there:
# on Linux an unpinned `torch` from PyPI is the multi-GB CUDA build. CPU-only, e.g.
#   --build-arg TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# Its own pip call, so an --index-url/--find-links given here applies to torch alone. Declared here, not
# at the top: a changed build arg re-runs every RUN after its ARG, and the apt layer need not re-run.
ARG TORCH_INSTALL

RUN set -e; \
    if python -c "import torch" 2>/dev/null; then \
        python -c "import sys, torch; sys.exit(None if torch.__version__ >= '2.4' else \
f'error: the base image has torch {torch.__version__}; this repository needs torch>=2.4')"; \
        echo "torch $(python -c 'import torch; print(torch.__version__)') comes with the base image: not reinstalled"; \
    else \
        echo "no torch in the base image: pip install ${TORCH_INSTALL:-torch}"; \
        pip install ${TORCH_INSTALL:-torch}; \
    fi; \
    grep -v -E '^torch([<>=!~ ;]|$)' /tmp/requirements.txt > /tmp/requirements-except-torch.txt; \
    pip install -r /tmp/requirements-except-torch.txt; \
    python -c "import torch, numpy, tiktoken, tokenizers, music21, pretty_midi, scipy, matplotlib, tqdm, wandb; \
print('torch', torch.__version__, '| CUDA build:', torch.version.cuda)"

# The code, so the image also works on its own; docker-compose.yml bind-mounts the checkout over it so
# that an edit on the host takes effect at once.
COPY . /workspace

CMD ["bash"]
