"""The Docker route, read from its files (no Docker engine is needed; `make docker-test` builds and runs the
image where there is one): one torch version everywhere, what torch.compile needs in the image, the compose
service writing as the invoking user with outside data read-only at /data."""
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def read(name):
    return (REPO / name).read_text()


def test_one_torch_version_in_makefile_dockerfile_smoke_test_and_docs():
    tested = re.search(r"^TORCH \?= torch==(\S+)$", read("Makefile"), re.M).group(1)
    dockerfile = read("Dockerfile")
    assert re.findall(r"\$\{TORCH_INSTALL:-torch==([^}]+)\}", dockerfile) == [tested, tested]
    assert re.search(r'^TORCH_VERSION="\$\{TORCH_VERSION:-([^}]+)\}"', read("docker_smoke_test.sh"), re.M).group(1) \
        == tested
    assert f"torch=={tested}" in read("docs/docker.md")
    floor = re.search(r"^torch>=(\d+)\.(\d+)$", read("requirements.txt"), re.M).groups()
    assert f"v >= ({floor[0]}, {floor[1]})" in dockerfile and f"torch>={'.'.join(floor)}" in dockerfile


def test_image_has_a_compiler_and_the_smoke_test_compiles():
    apt = re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", read("Dockerfile")).group(1).split()
    assert "build-essential" in apt
    smoke = read("docker_smoke_test.sh")
    assert re.search(r"python train\.py config/gpt_tiny\.py [^\n]*--compile=True", smoke)
    assert 'grep -q "cpu float32 compiled"' in smoke
    assert subprocess.run(["bash", "-n", str(REPO / "docker_smoke_test.sh")]).returncode == 0


def test_compose_service_writes_as_the_user_and_mounts_outside_data_read_only():
    dev = yaml.safe_load(read("docker-compose.cpu.yml"))["services"]["dev"]
    assert dev["user"] == "${UID:-0}:${GID:-0}"
    assert ".:/workspace" in dev["volumes"] and "${DATA_DIR:-.}:/data:ro" in dev["volumes"]
    assert "HOME=/tmp" in dev["environment"]  # an id without a passwd entry still gets writable caches
    gpu = yaml.safe_load(read("docker-compose.yml"))["services"]["dev"]
    assert gpu["extends"] == {"file": "docker-compose.cpu.yml", "service": "dev"}
    assert ".env" in read(".gitignore").split()
