#!/usr/bin/env bash
# Run a sparkrec job with the project's environment, from any working directory:
#
#   ./spark-submit.sh [spark-submit options] jobs/<job>.py --conf conf/<file>.yaml [dotted.key=value ...]
#
# Without --master the job runs in local mode (local[2], or $SPARKREC_MASTER). With the usual
# spark-submit options (--master yarn|k8s://...|spark://..., --deploy-mode, --archives, --conf) it
# runs on a cluster. The sparkrec package travels to executors as a zip in --py-files. Locally,
# driver and executors use this project's .venv; on any other master the environment travels as
# an archive (make package-env: build/env.tar.gz, or $SPARKREC_ENV_ARCHIVE) that executors -- and
# in cluster mode the driver -- unpack as ./env and run (sparkrec/submit.py builds those options).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${SPARKREC_VENV:-$ROOT/.venv}
[ -x "$VENV/bin/spark-submit" ] || { echo "spark-submit.sh: no environment at $VENV; run 'make setup' first" >&2; exit 2; }
PY="$VENV/bin/python"  # this host's tools (zip, config check, options); not what the cluster runs
export PATH="$VENV/bin:$PATH"

# Package zip for executors (rebuilt each run: cheap, and never stale).
mkdir -p "$ROOT/build"
zip_path="$ROOT/build/sparkrec.zip"
(cd "$ROOT" && rm -f "$zip_path" && "$PY" -c 'import shutil; shutil.make_archive("build/sparkrec", "zip", ".", "sparkrec")')

submit_opts=()
has_master=0 has_memory=0 has_java_opts=0
while [ $# -gt 0 ] && [[ "$1" != *.py ]]; do
  case "$1" in
    --master|--master=*) has_master=1 ;;
    --driver-memory|--driver-memory=*) has_memory=1 ;;
    --driver-java-options|--driver-java-options=*) has_java_opts=1 ;;
  esac
  submit_opts+=("$1"); shift
done
[ $# -gt 0 ] || { echo "spark-submit.sh: no job given (expected jobs/<job>.py)" >&2; exit 2; }
job=$1; shift
# A job path relative to the caller's directory or to the project root both work.
[ -f "$job" ] || job="$ROOT/$job"
[ -f "$job" ] || { echo "spark-submit.sh: job $1 not found" >&2; exit 2; }

if [ $has_master = 0 ]; then
  submit_opts+=(--master "${SPARKREC_MASTER:-local[2]}")
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}  # local mode: no hostname warnings
fi
[ $has_memory = 1 ] || submit_opts+=(--driver-memory "${SPARKREC_DRIVER_MEMORY:-4g}")
# Quiet JVM logs (WARN): the job's one-line failure reason must stay the last stderr line.
[ $has_java_opts = 1 ] || submit_opts+=(--driver-java-options "-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties")

# Which Python driver and executors run, and the environment archive for non-local masters;
# refusals (no archive, unsupported deploy mode) exit 2 with a one-line reason.
plan=$("$PY" -m sparkrec.submit "${submit_opts[@]}") || exit $?
eval "$plan"

# Validate the config before any JVM starts: a bad key or type exits 2 with a one-line reason.
"$PY" -m sparkrec.cli "$(basename "$job" .py)" "$@"

# spark-submit (client mode) runs the Python driver with its stderr merged into stdout, so the
# job's one-line failure reason would not be the last stderr line the README promises. The job
# also writes it to this file (sparkrec/cli.py), and it is printed last on stderr below.
reason_file=$(mktemp "${TMPDIR:-/tmp}/sparkrec-reason.XXXXXX")
trap 'rm -f "$reason_file"' EXIT
export SPARKREC_REASON_FILE=$reason_file

"$VENV/bin/spark-submit" "${submit_opts[@]}" --py-files "$zip_path" "$job" "$@" &
child=$!
# A scheduler that stops this script (SIGTERM, Ctrl-C) stops the job with it.
trap 'kill -s TERM "$child" 2>/dev/null' TERM
trap 'kill -s INT "$child" 2>/dev/null' INT
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the real exit
  rc=0
  wait "$child" || rc=$?
done
if [ "$rc" -ne 0 ]; then
  if [ -s "$reason_file" ]; then
    cat "$reason_file" >&2
  else  # cluster deploy mode: the driver ran elsewhere and its reason is in the driver's log
    echo "spark-submit.sh: $(basename "$job") failed with exit code $rc; see the driver's log for the reason" >&2
  fi
fi
exit "$rc"
