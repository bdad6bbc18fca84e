#!/usr/bin/env bash
# Pack the project environment (.venv) into build/env.tar.gz for executors on other hosts
# (make package-env). ./spark-submit.sh ships it whenever the master is not local, as
# `--archives build/env.tar.gz#env`, and points driver and executors at ./env/bin/python.
#
# venv-pack keeps the venv relocatable (shebangs and activate scripts rewritten); it does not copy
# the interpreter itself, so every node needs the same Python (3.11, at the path in
# .venv/pyvenv.cfg, or give SPARKREC_PYTHON_PREFIX=<prefix on the nodes>, e.g. /usr) -- or bake the
# environment into the executor image instead (README "Cluster use").
#
# Left out, because executors never use them: the editable install of sparkrec (a path into this
# checkout: executors import sparkrec from the --py-files zip instead), pyspark's jars (the JVM
# side comes from the cluster's own Spark), C++ headers, pip. Rebuilt only when the environment
# changed since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPARKREC_VENV:-.venv}
out=${1:-build/env.tar.gz}
stamp="$VENV/.sparkrec-setup"
[ -f "$stamp" ] || { echo "package_env: no environment at $VENV; run 'make setup' first" >&2; exit 2; }
if [ -f "$out" ] && [ "$out" -nt "$stamp" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$(cat "$stamp")" ]; then
  echo "package_env: $out is up to date"
  exit 0
fi
mkdir -p "$(dirname "$out")"
site="lib/python3.*/site-packages"
prefix_args=()
[ -z "${SPARKREC_PYTHON_PREFIX:-}" ] || prefix_args=(--python-prefix "$SPARKREC_PYTHON_PREFIX")
started=$SECONDS
"$VENV/bin/venv-pack" --prefix "$VENV" --output "$out.tmp.tar.gz" --format tar.gz --force --quiet \
  --compress-level 1 "${prefix_args[@]}" \
  --exclude "$site/__editable__*" --exclude "$site/sparkrec-*.dist-info/*" \
  --exclude "$site/pyspark/jars/*" --exclude "$site/pyspark/examples/*" \
  --exclude "$site/torch/include/*" --exclude "$site/pip/*" --exclude ".sparkrec-setup"
mv "$out.tmp.tar.gz" "$out"
cp "$stamp" "$out.inputs"
echo "package_env: wrote $out ($(du -h "$out" | cut -f1), $((SECONDS - started)) s)"
