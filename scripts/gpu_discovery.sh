#!/usr/bin/env bash
# Spark resource discovery script for GPUs (spark.worker.resource.gpu.discoveryScript,
# spark.executor.resource.gpu.discoveryScript): prints the GPUs this host has, as Spark expects:
#   {"name": "gpu", "addresses": ["0", "1"]}
set -euo pipefail
addresses=$( (nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true) | tr -d ' ' | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
