#!/usr/bin/env bash
# Wheels for an offline GPU machine that has its own PyTorch (and numpy, h5py, pandas, matplotlib,
# pyyaml, requests, ...) but not the rest of what the package and Snakemake import:
#   bash scripts/gpu_wheels.sh [DIR] [PYTHON_VERSION]     (default .whl and 3.12)
# then, on that machine: WHEELS=DIR bash scripts/gpu_check.sh  (installs DIR/*.whl into /tmp/site).
# Run where pip reaches a package index; ~11 MB. Wheels of packages such images already hold
# are removed again: two versions of one package in one install stop pip.
set -euo pipefail
dir=${1:-.whl} py=${2:-3.12}
mkdir -p "$dir"
plat=(--only-binary=:all: --python-version "$py" --implementation cp --platform any
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# connection_pool (a Snakemake dependency) is published as a source distribution only
python3 -m pip wheel -q --no-deps "connection_pool>=0.0.3" -w "$dir"
python3 -m pip download -q "${plat[@]}" --find-links "$dir" -d "$dir" "snakemake>=9,<10" "jsonschema>=4.0" \
    "typing_extensions>=4.14"
# torch-fidelity without its dependencies (torch, torchvision, scipy, pillow: the machine's own)
python3 -m pip download -q "${plat[@]}" --no-deps -d "$dir" "torch-fidelity==0.4.0"
# pulp is only imported by Snakemake's ILP scheduler (the check runs --scheduler greedy)
for have in attrs certifi charset_normalizer idna jinja2 markupsafe packaging psutil pyyaml requests \
            tabulate urllib3 wrapt pulp; do
    rm -f "$dir/$have"-[0-9]*.whl
done
ls "$dir" | wc -l
du -sh "$dir"
