#!/usr/bin/env bash
# Regenerate every parity fixture under tests/fixtures/ with the pinned transformers reference.
#
# Needs the reference venv at .venv-ref (see the setup notes: transformers==5.24.0, torch==2.15.0,
# torchvision, Pillow, numpy, safetensors, tokenizers). CI never runs this: it only reads the
# committed fixtures. Usage: scripts/make_fixtures.sh [fixture-script-name ...]   e.g. `llava`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OCULAR_REF_VENV:-$ROOT/.venv-ref}"
if [[ ! -f "$VENV/bin/activate" ]]; then
    echo "error: no reference venv at $VENV (set OCULAR_REF_VENV or create .venv-ref)" >&2
    exit 1
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

# Deterministic, quiet, CPU-only reference runs.
export CUDA_VISIBLE_DEVICES=""
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}"
export PYTHONHASHSEED=0

cd "$ROOT"
python -c 'import transformers, torch; print(f"transformers {transformers.__version__}, torch {torch.__version__}")'

scripts=()
if [[ $# -gt 0 ]]; then
    for name in "$@"; do scripts+=("scripts/fixtures/${name%.py}.py"); done
else
    for f in scripts/fixtures/*.py; do
        [[ "$(basename "$f")" == _* ]] && continue  # helper modules
        scripts+=("$f")
    done
fi

for f in "${scripts[@]}"; do
    echo "== $f"
    python "$f"
done
