#!/usr/bin/env bash
# Creates the bench-only peer environment bench/.peers-venv (git-ignored) with TRAK's
# `traker` and `dattri`, next to the CPU torch the project uses. The project never imports
# these at run time; bench/sketch.py runs them in this venv through bench/peers/project.py.
#
#   bash bench/peers/setup.sh            # idempotent; prints one status line per peer
#
# Both peers are installed with --no-deps: traker's and dattri's declared dependencies pull
# torchvision (and through it a multi-GB CUDA torch); their projectors need only torch and
# numpy (and a few small pure-Python packages listed below).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PEERS_VENV:-$here/../.peers-venv}"
python="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || { echo "peers: cannot create venv at $venv" >&2; exit 1; }
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# CPU torch pinned (a local wheel here); never an unpinned torch (that pulls a CUDA build)
"${pip[@]}" "torch==$torch_version" numpy || { echo "peers: torch==$torch_version could not be installed" >&2; exit 1; }
"${pip[@]}" --no-deps traker || echo "peers: traker could not be installed" >&2
"${pip[@]}" --no-deps dattri || echo "peers: dattri could not be installed" >&2
# small runtime deps the peers import at module level (pure Python or already-wheeled)
"${pip[@]}" tqdm scipy || true
"$venv/bin/python" - <<'PY'
import importlib
for name, module in [("traker", "trak.projectors"), ("dattri", "dattri.func.projection")]:
    try:
        importlib.import_module(module)
        print(f"peers: {name} ok")
    except Exception as error:  # report, don't fail: the bench skips a peer with a note
        print(f"peers: {name} import failed: {type(error).__name__}: {error}")
PY
