#!/usr/bin/env bash
# Set up a virtual environment for nrm-verify: torch 2.13.0 first (the CPU wheel that pip
# finds on this machine), then the project in editable mode with its test extra (which
# includes the verify extra: sympy, hypothesis, tqdm; the core nrm needs only torch and numpy).
#
#   bash scripts/setup.sh                 # makes or reuses .venv
#   VENV=.venv-ci bash scripts/setup.sh   # another folder (CI uses .venv-ci)
#
# Reruns are cheap: an existing venv is reused and pip skips what is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
# torch is pinned and installed on its own first: a bare "torch" requirement could pull a
# multi-GB CUDA build, while torch==2.13.0 resolves to the CPU wheel here.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "setup: $("$VENV/bin/python" -c 'import torch, nrm; print(f"torch {torch.__version__}, nrm {nrm.__version__}")') in $VENV"
# the peer environment (.venv-peers: zennit, zennit-crp, captum) for peer_tests/, run by tests/test_peers.py
bash scripts/setup-peers.sh
