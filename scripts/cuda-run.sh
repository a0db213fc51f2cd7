#!/usr/bin/env bash
# Runs the CUDA build of ckpt (bundled by scripts/build-cuda.sh as dist/ckpt-cuda/run.sh)
# on a GPU machine that has the NVIDIA driver and PyTorch but no CUDA toolkit.
#
#   run.sh [ckpt arguments...]     run ckpt
#   run.sh --check                 show where each CUDA library is found, then nvidia-smi
#
# The binary needs, at load time: libcuda.so.1 (the driver's), libcudart.so.13 and
# libcurand.so.10 (in lib/ beside it; ckpt and curand are xz-compressed in the bundle,
# to fit the 64 MiB that the GPU machines are sent, and unpacked on first use), libcublas.so.13 and libcublasLt.so.13 (not bundled: 600 MB; taken from
# PyTorch's nvidia-* wheels, found through the `python3` on PATH or $PYTHON).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
# Where ckpt.xz and lib/*.xz are unpacked: beside them, or $TMPDIR if the bundle is read-only.
ROOT="$HERE"
[[ -w "$HERE" && -w "$HERE/lib" ]] || ROOT="${TMPDIR:-/tmp}/ckpt-cuda-$(id -u)"

die() { echo "ckpt-cuda: error: $*" >&2; exit 1; }

# xz-compressed files are unpacked once (again when the bundle is newer).
unpack() {
    local z="$1" out="$2"
    [[ -s "$out" && "$out" -nt "$z" ]] && return 0
    mkdir -p "$(dirname "$out")"
    if command -v xz >/dev/null; then
        xz -dc "$z" >"$out.part"
    else
        "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$z" "$out.part"
    fi || die "cannot unpack $z into $out"
    chmod +x "$out.part"
    mv "$out.part" "$out"
}

unpack_all() {
    local z
    [[ -e "$HERE/ckpt.xz" ]] && unpack "$HERE/ckpt.xz" "$ROOT/ckpt"
    for z in "$HERE"/lib/*.xz; do
        [[ -e "$z" ]] && unpack "$z" "$ROOT/lib/$(basename "$z" .xz)"
    done
    [[ -x "$ROOT/ckpt" ]] || die "no ckpt binary in $ROOT (nor ckpt.xz in $HERE)"
}

# PyTorch's CUDA libraries: site-packages/nvidia/*/lib (cu13/lib holds cuBLAS) and torch/lib.
torch_lib_dirs() {
    command -v "$PY" >/dev/null || return 0
    "$PY" - <<'EOF' 2>/dev/null || true
import glob, importlib.util, os
dirs = []
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations or []) if spec else []:
    dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
spec = importlib.util.find_spec("torch")
if spec and spec.origin:
    dirs.append(os.path.join(os.path.dirname(spec.origin), "lib"))
print(":".join(d for d in dirs if os.path.isdir(d)))
EOF
}

unpack_all
TORCH_LIBS="$(torch_lib_dirs)"
# Ours first (the toolkit the kernels were built with), then PyTorch's, then the caller's.
export LD_LIBRARY_PATH="$HERE/lib:$ROOT/lib${TORCH_LIBS:+:$TORCH_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if command -v ldd >/dev/null; then
    missing="$(ldd "$ROOT/ckpt" | awk '/not found/ {print $1}' | tr '\n' ' ')"
    if [[ -n "$missing" ]]; then
        hint=""
        [[ "$missing" == *libcuda.so.1* ]] && hint+=" libcuda.so.1 comes with the NVIDIA driver: this machine has none (no GPU?); use a CPU build of ckpt here."
        [[ "$missing" == *cublas* ]] && hint+=" cuBLAS 13 comes from PyTorch's nvidia-cublas wheel: none found through $PY (set PYTHON, or LD_LIBRARY_PATH to a dir with libcublas.so.13)."
        die "missing CUDA libraries: $missing(searched $LD_LIBRARY_PATH and the system's).$hint"
    fi
fi

if [[ "${1:-}" == "--check" ]]; then
    ldd "$ROOT/ckpt" | grep -E 'cuda|cublas|curand|nvrtc'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
    exec "$ROOT/ckpt" --version
fi
exec "$ROOT/ckpt" "$@"
