#!/usr/bin/env bash
# Build Horovod 0.28.1 (the last release) for the active Python environment and install it.
#
# Why a recipe: Horovod's CMake forces -std=c++14 but torch >= 2.1 headers need C++17, so the
# PyPI sdist does not build as shipped. A compiler wrapper rewrites the flag. The built wheel is
# cached per (variant, torch version) so a second set-up installs it in seconds.
#
# Environment:
#   HOROVOD_GPU_OPERATIONS=NCCL   GPU build for cluster nodes with CUDA + NCCL (default: CPU/Gloo)
#   SPARKREC_WHEEL_CACHE          wheel cache folder (default: ~/.cache/sparkrec/wheels)
set -euo pipefail

PY=${PYTHON:-python}
HVD_VERSION=0.28.1
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
VARIANT=${HOROVOD_GPU_OPERATIONS:+gpu-$HOROVOD_GPU_OPERATIONS}
VARIANT=${VARIANT:-cpu}
CACHE=${SPARKREC_WHEEL_CACHE:-$HOME/.cache/sparkrec/wheels}/horovod-$HVD_VERSION-$VARIANT-torch$TORCH_VERSION
mkdir -p "$CACHE"

if ! ls "$CACHE"/horovod-*.whl >/dev/null 2>&1; then
  echo "building horovod $HVD_VERSION ($VARIANT, torch $TORCH_VERSION); a few minutes on 2 cores (4 min measured here)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  real_cxx=$(command -v "${CXX:-g++}")
  cat > "$work/cxx17" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in -std=c++14|-std=gnu++14) a=-std=c++17 ;; esac
  args+=("\$a")
done
exec "$real_cxx" "\${args[@]}"
WRAP
  chmod +x "$work/cxx17"
  # Horovod's build needs these importable without build isolation (it builds against the
  # installed torch). cmake < 4: CMake 4 refuses the cmake_minimum_required(<3.5) in Horovod's
  # vendored third_party/gloo.
  "$PY" -m pip install -q "cmake>=3.18,<4" cloudpickle psutil pyyaml packaging cffi wheel
  CXX="$work/cxx17" \
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_CPU_OPERATIONS=GLOO \
  MAKEFLAGS="-j$(nproc)" \
    "$PY" -m pip wheel --no-deps --no-build-isolation --no-cache-dir \
      -w "$work/out" "horovod==$HVD_VERSION"
  cp "$work"/out/horovod-*.whl "$CACHE"/
fi

"$PY" -m pip install -q --no-deps --force-reinstall "$CACHE"/horovod-*.whl
horovodrun --check-build
