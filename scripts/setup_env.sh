#!/usr/bin/env bash
# Create (or refresh) the project environment in .venv: pinned stack, petastorm, horovod, sparkrec.
# Idempotent: a second run takes seconds (pip no-ops, cached horovod wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SPARKREC_VENV:-.venv}
stamp="$VENV/.sparkrec-setup"
inputs=$(cat setup.cfg scripts/setup_env.sh scripts/build_horovod.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip wheel "setuptools>=77"
# torch==2.13.0 is pinned in setup.cfg: a loose requirement pulls a multi-GB CUDA build.
"$PY" -m pip install -q -e ".[test,s3,gcs]"
# --no-deps: petastorm declares setuptools<70, which conflicts with torch; see setup.cfg.
"$PY" -m pip install -q --no-deps petastorm==0.13.1
PYTHON="$PY" PATH="$PWD/$VENV/bin:$PATH" bash scripts/build_horovod.sh
"$PY" -c 'import petastorm, horovod.torch, pyspark, torch; print("environment ok:", "pyspark", pyspark.__version__, "torch", torch.__version__, "petastorm", petastorm.__version__)'
echo "$inputs" > "$stamp"
