#!/usr/bin/env bash
# Build the real Dockerfile and run the pipeline inside the container on CPU: prepare.py on a slice of the
# music21 corpus, a few iterations of `train.py config/gpt_tiny.py --compile=True` (torch.compile on CPU
# builds C++ kernels: an image without a C/C++ compiler fails here, as Triton would on a GPU), sample.py
# with MIDI and WAV output; then the compose route (`up -d`, `exec dev ...`, `down`) with
# docker-compose.cpu.yml: files written inside belong to the invoking user, DATA_DIR is at /data read-only.
# `make docker-test`.
#
#   bash docker_smoke_test.sh [BASE_IMAGE]          # or BASE_IMAGE=... bash docker_smoke_test.sh
#
# BASE_IMAGE     default: the Dockerfile's own (python:3.11-slim, torch installed by pip; needs a registry).
#                `local-debian`: where no image registry can be reached, make a Debian bookworm + python3
#                image here with debootstrap (needs root and Debian's debootstrap) and build on that.
# TORCH_INSTALL  pip arguments for torch when the base image has none (see the Dockerfile). Default: the
#                CPU build torch==$TORCH_VERSION, from WHEEL_DIR when there is one, else PyTorch's CPU index.
# WHEEL_DIR      a local folder of wheels (e.g. a downloaded torch CPU wheel) served to the build over
#                http://127.0.0.1:$WHEEL_PORT (default 18573; the build then runs with --network host).
#                Default: $PIP_FIND_LINKS when that is a folder, as on machines whose pip keeps wheels on disk.
# Without a reachable Docker engine it prints SKIPPED and exits 0; any failing step exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"

BASE_IMAGE="${1:-${BASE_IMAGE:-}}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"  # the torch the bare-machine route pins
SMOKE_IMAGE="music-scaling-laws:smoke"
LOCAL_DEBIAN_IMAGE="local/debian-bookworm-python:3.11"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "docker_smoke_test: $*"; }
die() { echo "docker_smoke_test: error: $*" >&2; exit 1; }

if ! command -v docker >/dev/null 2>&1; then
    say "SKIPPED: no docker command on this machine"; exit 0
fi
if ! docker_info_error=$(docker info 2>&1 >/dev/null); then
    say "SKIPPED: no Docker engine reachable (\`docker info\` failed: $(echo "$docker_info_error" | tail -n 1))"
    exit 0
fi

cleanup_steps=()
cleanup() { local i; for ((i = ${#cleanup_steps[@]} - 1; i >= 0; i--)); do eval "${cleanup_steps[i]}" || true; done; }
trap cleanup EXIT

# --- compose files: both must validate ---------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose)
else compose=(); say "no docker compose / docker-compose: compose validation and the compose route are skipped"
fi
if ((${#compose[@]})); then
    for f in docker-compose.yml docker-compose.cpu.yml; do
        "${compose[@]}" -f "$f" config -q || die "$f does not validate (${compose[*]} -f $f config)"
        say "$f validates (${compose[*]} config)"
    done
fi

# --- a base image with Python, made here (no registry needed) ----------------------------------------
if [[ "$BASE_IMAGE" == local-debian ]]; then
    BASE_IMAGE="$LOCAL_DEBIAN_IMAGE"
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "using the existing $BASE_IMAGE"
    else
        command -v debootstrap >/dev/null || die "BASE_IMAGE=local-debian needs debootstrap (apt-get install debootstrap)"
        rootfs=$(mktemp -d /tmp/smoke-rootfs.XXXXXX)
        cleanup_steps+=("rm -rf '$rootfs'")
        say "debootstrap bookworm from $DEBIAN_MIRROR into $rootfs (a few minutes)"
        debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
            || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
        rm -f "$rootfs.log"
        # This host's trust store, so that TLS to PyPI works inside as it does here (behind a proxy that
        # re-signs TLS, the container must trust the same CA the host does).
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
        say "made $BASE_IMAGE"
    fi
fi

# --- build the real Dockerfile -------------------------------------------------------------------------
build_args=()
[[ -n "$BASE_IMAGE" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
WHEEL_DIR="${WHEEL_DIR:-}"
if [[ -z "$WHEEL_DIR" && -n "${PIP_FIND_LINKS:-}" && -d "${PIP_FIND_LINKS}" ]]; then WHEEL_DIR="$PIP_FIND_LINKS"; fi
if [[ -z "${TORCH_INSTALL:-}" ]]; then
    if [[ -n "$WHEEL_DIR" ]]; then
        [[ -d "$WHEEL_DIR" ]] || die "WHEEL_DIR=$WHEEL_DIR is not a folder"
        # A fixed port: the URL is part of TORCH_INSTALL, and a changed build arg would re-run pip every time.
        port="${WHEEL_PORT:-18573}"
        python3 -m http.server "$port" --bind 127.0.0.1 --directory "$WHEEL_DIR" >/dev/null 2>&1 &
        server_pid=$!
        cleanup_steps+=("kill $server_pid")
        sleep 1
        kill -0 "$server_pid" 2>/dev/null || die "could not serve $WHEEL_DIR on 127.0.0.1:$port (in use? set WHEEL_PORT)"
        TORCH_INSTALL="torch==${TORCH_VERSION}+cpu --find-links http://127.0.0.1:$port/"
        build_args+=(--network host)
        say "serving $WHEEL_DIR to the build at http://127.0.0.1:$port/"
    else
        TORCH_INSTALL="torch==${TORCH_VERSION}+cpu --extra-index-url https://download.pytorch.org/whl/cpu"
    fi
fi
build_args+=(--build-arg "TORCH_INSTALL=$TORCH_INSTALL")
say "docker build ${build_args[*]} -t $SMOKE_IMAGE ."
docker build "${build_args[@]}" -t "$SMOKE_IMAGE" . \
    || die "docker build failed (no image registry reachable? BASE_IMAGE=local-debian makes a base image here)"
base_used="${BASE_IMAGE:-$(sed -n 's/^FROM \${BASE_IMAGE:-\(.*\)}$/\1/p' Dockerfile)}"

# --- the pipeline inside the container ----------------------------------------------------------------
# The checkout is mounted read-only at /workspace as in docker-compose.yml (so this runs the code on disk,
# and cannot write into it); everything is written under /tmp/smoke inside. No network: nothing at run time
# may need one.
say "running prepare.py -> train.py -> sample.py inside $SMOKE_IMAGE (base: $base_used)"
docker run --rm --network none -v "$PWD:/workspace:ro" -w /workspace -e WANDB_MODE=disabled \
    "$SMOKE_IMAGE" bash -euo pipefail -c '
export PYTHONDONTWRITEBYTECODE=1
S=/tmp/smoke
python -c "import torch, sys; print(\"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| cuda available:\", torch.cuda.is_available())"
for tool in abc2midi midi2abc abcm2ps fluidsynth; do command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }; done
test -f /usr/share/sounds/sf2/FluidR3_GM.sf2 || { echo "missing: the GM soundfont" >&2; exit 1; }
echo "== prepare.py (a slice of the music21 corpus)"
python prepare.py --out_dir $S/data --max_files 40 --max_scores 4 --cache_dir "" --workers 2
python -c "import json; s = json.load(open(\"$S/data/stats.json\"))[\"splits\"]; print({k: v[\"tokens\"] for k, v in s.items()}, \"tokens\")"
echo "== train.py config/gpt_tiny.py --compile=True (a few iterations on CPU, compiled by inductor)"
python train.py config/gpt_tiny.py --data_dir=$S/data --out_dir=$S/run --device=cpu --compile=True \
    --max_iters=6 --eval_interval=3 --eval_iters=2 --warmup_iters=2 --wandb_log=False | tee $S/train.out
grep -q "cpu float32 compiled" $S/train.out || { echo "train.py did not compile" >&2; exit 1; }
test -f $S/run/ckpt.pt && test -f $S/run/results.json
python -c "import json; r = json.load(open(\"$S/run/results.json\")); print(\"val_loss\", r[\"val_loss\"], \"| n_params\", r[\"n_params\"])"
echo "== sample.py (ABC -> MIDI -> WAV with abc2midi and fluidsynth)"
python sample.py --run $S/run --out_dir $S/samples --num_samples 2 --max_new_tokens 64 --seed 1 --midi --wav --device cpu
test -f $S/samples/sample_001.abc && test -f $S/samples/samples.jsonl
cat $S/samples/samples.jsonl
' || die "the pipeline failed inside the container"

# --- the compose route: up -d, exec, down --------------------------------------------------------------
if ((${#compose[@]})); then
    project="msl-smoke-$$"
    export DEV_IMAGE="$SMOKE_IMAGE"
    # as docker-compose.cpu.yml tells users to: the container runs as the invoking user, DATA_DIR at /data
    export UID GID="$(id -g)"
    DATA_DIR=$(mktemp -d /tmp/smoke-data.XXXXXX); export DATA_DIR
    cleanup_steps+=("rm -rf '$DATA_DIR'")
    echo outside >"$DATA_DIR/outside.txt"
    compose_cpu=("${compose[@]}" -f docker-compose.cpu.yml -p "$project")
    cleanup_steps+=("${compose_cpu[*]} down --timeout 5 >/dev/null 2>&1")
    say "${compose_cpu[*]} up -d --no-build (image $SMOKE_IMAGE)"
    "${compose_cpu[@]}" up -d --no-build || die "compose up failed"
    "${compose_cpu[@]}" exec -T dev python -c "import torch, music21; print('exec in the running dev service: torch', torch.__version__)" \
        || die "compose exec failed"
    # the checkout is bind-mounted: a file made on the host is there inside at once
    probe=".docker_smoke_probe_$$"
    echo "$probe" >"$probe"; cleanup_steps+=("rm -f '$PWD/$probe'")
    "${compose_cpu[@]}" exec -T dev cat "/workspace/$probe" | grep -qx "$probe" || die "the checkout is not bind-mounted at /workspace"
    # what the container writes into the checkout is the invoking user's, not root's
    written=".docker_smoke_written_$$"; cleanup_steps+=("rm -f '$PWD/$written'")
    "${compose_cpu[@]}" exec -T dev touch "/workspace/$written" || die "the container cannot write into the checkout"
    [[ "$(stat -c %u:%g "$written")" == "$(id -u):$(id -g)" ]] \
        || die "a file written inside belongs to $(stat -c %u:%g "$written"), not to $(id -u):$(id -g)"
    # DATA_DIR is at /data, read-only
    "${compose_cpu[@]}" exec -T dev cat /data/outside.txt | grep -qx outside || die "DATA_DIR is not mounted at /data"
    if "${compose_cpu[@]}" exec -T dev touch /data/written 2>/dev/null; then die "/data is writable"; fi
    say "compose: files written inside are $(id -u):$(id -g)'s; DATA_DIR is at /data, read-only"
    "${compose_cpu[@]}" down --timeout 5 || die "compose down failed"
fi

say "PASSED (base image: $base_used)"
