#!/usr/bin/env bash
# Set up .venv-peers: the environment of the peer-equivalence suite (peer_tests/), in which
# zennit, zennit-crp, captum, transformers, LXT, DIG and timm run beside this project.
#
#   bash scripts/setup-peers.sh                      # makes or reuses .venv-peers
#   PEERS_VENV=.venv-peers2 bash scripts/setup-peers.sh
#   .venv-peers/bin/python -m pytest peer_tests -q   # then run the peer suite
#
# Why a second venv: zennit imports torchvision, and PyPI's torchvision wheels do not import
# beside the CPU torch 2.13.0 of .venv. torch==2.14.1 with torchvision==0.29.1 is a matching
# pair (a CUDA build, about 5.5 GB, that runs on CPU). They are pinned and installed first,
# so that the peers' own requirement on torch cannot pull another build.
#
# Reruns are quick: when the pinned packages already have the wanted versions, pip is not
# called for them, nor for this project when this checkout is already installed in editable
# mode (FORCE=1 reinstalls it, e.g. after its dependencies changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${PEERS_VENV:-.venv-peers}
PYTHON=${PYTHON:-python3}
TORCH=2.14.1
TORCHVISION=0.29.1
PEERS=("zennit==0.5.1" "captum==0.9.0")
# zennit-crp 0.6.0 declares zennit<=0.4.6, but the parts it uses (NameMapComposite, Composite,
# RemovableHandle(List)) are unchanged in zennit 0.5.1, the version whose rules we compare
# with; so it is installed without its declared dependencies, and with its other ones.
CRP="zennit-crp==0.6.0"
CRP_DEPS=("tqdm" "matplotlib")
# LXT 2.1 (AttnLRP) patches transformers' model families; its maps are written against
# transformers 4.55 (its BERT map, a copy of a 4.4x-era modeling_bert, imports and runs on 4.55.4;
# transformers 5.0 removed find_pruneable_heads_and_indices, which it imports). It declares accelerate, bitsandbytes (GPU) and
# open_clip_torch, which neither its efficient mode (lxt.efficient) nor its explicit mode
# (lxt.explicit, traced with transformers' HFTracer) imports: installed without its declared
# dependencies, with the ones it imports (transformers, zennit, matplotlib, tabulate).
TRANSFORMERS="transformers==4.55.4"
LXT="lxt==2.1"
LXT_DEPS=("tabulate")
# DIG 1.1.0 (dive-into-graphs; its GNN-LRP, peer_tests/test_dig.py): 8 MB of pure Python whose
# declared dependencies are stale or heavy (rdkit-pypi, pyscf, hydra-core, shap, …) and whose
# GNN-LRP path imports none of them beyond what is here (torch_geometric, matplotlib, networkx):
# installed without its declared dependencies; peer_tests/dig_native.py shims the two imports
# GNN-LRP never calls (torch_sparse, rdkit) and adapts DIG's layers to PyG 2.8's names.
DIG="dive-into-graphs==1.1.0"
# timm 1.0.31 (peer_tests/test_timm.py; benchmarks/timm_survey.py): pure Python, importing torch,
# torchvision, pyyaml, huggingface_hub and safetensors, which transformers brings: installed
# without its declared dependencies.
TIMM="timm==1.0.31"

# pip install, without the notes about this machine's empty local index folders
pip_install() {
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-peers: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

# Exit status 0 when every "name==version" given is installed at that version.
have() {
    "$VENV/bin/python" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        got = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if got.split("+")[0] != want:
        sys.exit(1)
EOF
}

# torch's CUDA build fills about 6.5 GB once unpacked (.venv-peers: 6.4 GB in all): say so before pip
# fails half-way with "No space left on device" (CI on a machine whose disk was nearly full did).
need_gb=${PEERS_NEED_GB:-7}
if ! have "torch==$TORCH" "torchvision==$TORCHVISION"; then
    free_gb=$(df -Pk "$VENV" | awk 'NR == 2 { print int($4 / 1048576) }')
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "setup-peers: $VENV needs about $need_gb GB free for torch==$TORCH's CUDA build, and its disk has $free_gb GB: free some space (old clones, ~/.cache/pip) and rerun" >&2
        exit 1
    fi
    echo "setup-peers: installing torch==$TORCH torchvision==$TORCHVISION (large; the first time takes minutes)"
    pip_install "torch==$TORCH" "torchvision==$TORCHVISION"
    INSTALLED=1
fi
if ! have "${PEERS[@]}" "$CRP"; then
    echo "setup-peers: installing ${PEERS[*]} $CRP"
    pip_install "torch==$TORCH" "torchvision==$TORCHVISION" "${PEERS[@]}" "${CRP_DEPS[@]}"
    pip_install --no-deps "$CRP"
    INSTALLED=1
fi
if ! have "$TRANSFORMERS" "$LXT"; then
    echo "setup-peers: installing $TRANSFORMERS $LXT"
    pip_install "torch==$TORCH" "torchvision==$TORCHVISION" "$TRANSFORMERS" "${LXT_DEPS[@]}"
    pip_install --no-deps "$LXT"
    INSTALLED=1
fi
if ! have "$DIG"; then
    echo "setup-peers: installing $DIG (without its declared dependencies)"
    pip_install --no-deps "$DIG"
    INSTALLED=1
fi
if ! have "$TIMM"; then
    echo "setup-peers: installing $TIMM (without its declared dependencies)"
    pip_install --no-deps "$TIMM"
    INSTALLED=1
fi
# this project, editable, with its test extra (and so its verify extra); torch stays pinned so nothing is replaced.
# Skipped when this checkout is already installed editable (FORCE=1 reinstalls it).
if [ -n "${FORCE:-}" ] || ! "$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib, sys
specs = {name: importlib.util.find_spec(name) for name in ("nrm", "nrm_verify", "pytest", "hypothesis", "sympy", "tqdm")}
if any(spec is None for spec in specs.values()):
    sys.exit(1)
sys.exit(0 if pathlib.Path(specs["nrm"].origin).resolve().is_relative_to(pathlib.Path.cwd().resolve()) else 1)
EOF
then
    pip_install "torch==$TORCH" "torchvision==$TORCHVISION" -e '.[test]'
    INSTALLED=1
fi

# after an install, check that everything imports together (slow: torch's CUDA build)
if [ -n "${INSTALLED:-}" ]; then
    "$VENV/bin/python" -c "import torch, torchvision, zennit, crp.attribution, captum.attr, transformers, lxt.efficient, lxt.explicit.core, timm, nrm, nrm_verify"
fi
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
names = ["torch", "torchvision", "zennit", "zennit-crp", "captum", "transformers", "lxt", "dive-into-graphs",
         "timm", "nrm-verify"]
print("setup-peers: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
echo "setup-peers: ready in $VENV; run: $VENV/bin/python -m pytest peer_tests -q"
