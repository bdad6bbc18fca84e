#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 for tests: one master and N workers (1 core each, own
# work and local dirs), separate processes run from the pinned pyspark's Spark.
#
#   scripts/local_cluster.sh start    # prints the master URL (spark://127.0.0.1:<port>)
#   scripts/local_cluster.sh stop     # stops every process it started, removes the workers' dirs
#   scripts/local_cluster.sh status
#
# Workers behave like hosts without this checkout: each runs in a private mount namespace
# (unshare --mount) with an empty tmpfs over the checkout and over the venv, a clean environment,
# and a copy of Spark outside both. Executors can therefore only run from what the application
# ships (spark-submit.sh: the environment archive and the --py-files zip). Needs root (or
# unprivileged user namespaces) for unshare/mount; Linux only.
#
# Settings (environment): SPARKREC_CLUSTER_DIR (state, default /tmp/sparkrec-cluster),
# SPARKREC_CLUSTER_PORT (master port, default 7177; web UI at port+1), SPARKREC_CLUSTER_WORKERS
# (default 2), SPARKREC_CLUSTER_WORKER_MEMORY (default 3g), SPARKREC_CLUSTER_GPUS (GPUs per
# worker, default 0: with N > 0 each worker offers N GPUs, found by scripts/gpu_discovery.sh, and
# N cores so one task per GPU fits).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "${SPARKREC_VENV:-$ROOT/.venv}" && pwd)
STATE=${SPARKREC_CLUSTER_DIR:-/tmp/sparkrec-cluster}
PORT=${SPARKREC_CLUSTER_PORT:-7177}
WORKERS=${SPARKREC_CLUSTER_WORKERS:-2}
MEMORY=${SPARKREC_CLUSTER_WORKER_MEMORY:-3g}
GPUS=${SPARKREC_CLUSTER_GPUS:-0}
UI=$((PORT + 1))
MASTER="spark://127.0.0.1:$PORT"

case "$STATE/" in "$ROOT"/*|"$VENV"/*)
  echo "local_cluster: SPARKREC_CLUSTER_DIR=$STATE must lie outside the checkout and the venv (workers cannot see those)" >&2; exit 2 ;;
esac

alive_workers() {
  "$VENV/bin/python" - "$UI" <<'EOF' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as r:
    print(json.load(r).get("aliveworkers", 0))
EOF
}

spark_home() {
  # A copy of the pinned pyspark's Spark (its jars and launch scripts) outside checkout and venv.
  local src version home
  src=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  version=$("$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)')
  home="$STATE/spark-$version"
  if [ ! -f "$home/.complete" ]; then
    rm -rf "$home" && mkdir -p "$home"
    cp -a "$src/bin" "$src/sbin" "$src/jars" "$home/"
    [ ! -d "$src/conf" ] || cp -a "$src/conf" "$home/"
    touch "$home/.complete"
  fi
  echo "$home"
}

close_inherited_fds() {
  # Run in the subshell that becomes a cluster process: the cluster outlives this script and
  # must not keep the caller's open files, e.g. the lock file of `flock lockfile pytest`, which
  # would stay held for as long as the cluster runs.
  local fd
  for fd in $(ls "/proc/$BASHPID/fd"); do
    [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true
  done
}

start() {
  if [ -f "$STATE/master.pid" ] && kill -0 "$(cat "$STATE/master.pid")" 2>/dev/null; then
    echo "local_cluster: already running at $MASTER (stop it first)" >&2; exit 1
  fi
  mkdir -p "$STATE"
  local home java_home
  home=$(spark_home)
  java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
  # Every process gets this environment only: nothing that names the checkout or the venv.
  local base_env=(env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=$HOME"
                  "JAVA_HOME=$java_home" "SPARK_HOME=$home" "SPARK_LOCAL_IP=127.0.0.1" "LANG=C.UTF-8"
                  "SPARK_LOG_DIR=$STATE/logs" "SPARK_NO_DAEMONIZE=1")
  (close_inherited_fds; exec setsid "${base_env[@]}" "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$PORT" --webui-port "$UI") >"$STATE/master.log" 2>&1 < /dev/null &
  echo $! > "$STATE/master.pid"

  local hide=("$ROOT")
  case "$VENV/" in "$ROOT"/*) ;; *) hide+=("$VENV") ;; esac
  # Finished applications' dirs (an unpacked environment each) go after 60 s, as on a real cluster.
  local cores=1 gpu_opts="-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval=30 -Dspark.worker.cleanup.appDataTtl=60"
  if [ "$GPUS" -gt 0 ]; then
    cores=$GPUS
    gpu_opts="$gpu_opts -Dspark.worker.resource.gpu.amount=$GPUS -Dspark.worker.resource.gpu.discoveryScript=$STATE/gpu_discovery.sh"
    cp "$ROOT/scripts/gpu_discovery.sh" "$STATE/gpu_discovery.sh"
  fi
  for i in $(seq 1 "$WORKERS"); do
    local dir="$STATE/worker-$i"
    rm -rf "$dir" && mkdir -p "$dir/work" "$dir/local"
    # A private mount namespace: the tmpfs mounts below exist for this worker and its executors only.
    (close_inherited_fds; exec setsid "${base_env[@]}" "SPARK_LOCAL_DIRS=$dir/local" "SPARK_WORKER_OPTS=$gpu_opts" \
      unshare --mount --propagation private bash -c '
        home=$1 dir=$2 master=$3 cores=$4 memory=$5; shift 5
        for path in "$@"; do mount -t tmpfs -o size=1m,mode=0555 sparkrec-hidden "$path"; done
        exec "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores "$cores" \
          --memory "$memory" --work-dir "$dir/work" --webui-port 0 "$master"' \
      worker "$home" "$dir" "$MASTER" "$cores" "$MEMORY" "${hide[@]}") >"$STATE/worker-$i.log" 2>&1 < /dev/null &
    echo $! > "$STATE/worker-$i.pid"
  done

  local deadline=$((SECONDS + 90))
  until [ "$(alive_workers)" -ge "$WORKERS" ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "local_cluster: $(alive_workers) of $WORKERS workers registered within 90 s; logs in $STATE" >&2
      tail -n 20 "$STATE/master.log" "$STATE"/worker-*.log >&2 || true
      stop; exit 1
    fi
    sleep 1
  done
  echo "$MASTER"
}

stop() {
  local pidfile pid
  for pidfile in "$STATE"/worker-*.pid "$STATE"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # Each process leads its own session (setsid): its group holds its executors and Python workers.
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pidfile in "$STATE"/worker-*.pid "$STATE"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  rm -rf "$STATE"/worker-*/  # executors' working dirs hold an unpacked environment each
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) echo "$MASTER: $(alive_workers) workers alive" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
