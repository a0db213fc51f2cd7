#!/usr/bin/env bash
# Builds `ckpt --features cuda` on a machine with no GPU and no system CUDA toolkit, and
# bundles it for a GPU machine that has a driver and PyTorch but no Rust toolchain.
#
#   scripts/build-cuda.sh [--toolkit DIR] [--target-dir DIR] [--dist DIR] [--compute-cap N]
#
# 1. The CUDA 13.0 toolkit comes from NVIDIA's wheels on PyPI (nvcc, nvvm, crt, runtime,
#    cccl, nvrtc, cublas, curand), installed into a venv OUTSIDE the repository
#    (default $HOME/.cache/ckpt-cuda-toolkit). 13.0 and not newer: the GPU machines run
#    driver 580 (CUDA 13.0), whose PTX JIT rejects the newer PTX ISA that a 13.1+ nvcc emits,
#    and candle's kernels are shipped as PTX.
# 2. A CUDA_HOME-like tree is laid out beside the venv: bin/ include/ nvvm/ (links into the
#    wheels), lib64/ with the unversioned `.so` links the linker wants, and
#    lib64/stubs/libcuda.so, a link stub for the driver API (the driver itself is not in
#    any wheel): one dummy function per entry point that cudarc binds, SONAME libcuda.so.1,
#    so the binary binds to the real driver at run time.
# 3. `cargo build --release --features cuda` with CUDA_COMPUTE_CAP (no nvidia-smi here to
#    ask) and CUDARC_CUDA_VERSION (no guessing from `nvcc --version`), RUNPATH $ORIGIN/lib.
# 4. dist/ckpt-cuda/ (<= 64 MiB): the binary and libcurand (which PyTorch's install lacks)
#    xz-compressed, libcudart, and run.sh, which unpacks them and points the loader at the
#    driver and at PyTorch's cuBLAS before running ckpt.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLKIT="${CKPT_CUDA_TOOLKIT:-$HOME/.cache/ckpt-cuda-toolkit}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target-cuda}"
DIST="$REPO/dist/ckpt-cuda"
COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
PYTHON="${PYTHON:-python3}"

# Pinned: one CUDA 13.0 toolkit (see above); cudarc's name for it is 13000.
CUDARC_VERSION=13000
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)

die() { echo "build-cuda: error: $*" >&2; exit 1; }
say() { echo "build-cuda: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --toolkit) TOOLKIT="${2:?--toolkit needs a directory}"; shift 2 ;;
        --target-dir) TARGET_DIR="${2:?--target-dir needs a directory}"; shift 2 ;;
        --dist) DIST="${2:?--dist needs a directory}"; shift 2 ;;
        --compute-cap) COMPUTE_CAP="${2:?--compute-cap needs a number like 90}"; shift 2 ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
TOOLKIT="$(realpath -m "$TOOLKIT")"
case "$TOOLKIT/" in "$REPO"/*) die "--toolkit $TOOLKIT is inside the repository; pick a directory outside it" ;; esac
mkdir -p "$TOOLKIT"
[[ "$COMPUTE_CAP" =~ ^[0-9]+a?$ ]] || die "--compute-cap $COMPUTE_CAP: expected a number like 90"
for tool in cargo gcc g++ "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done

install_wheels() {
    local venv="$TOOLKIT/venv" stamp="$TOOLKIT/venv/.ckpt-wheels"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "${WHEELS[*]}" ]]; then
        say "toolkit wheels already in $venv"
        return
    fi
    say "installing the CUDA toolkit wheels into $venv"
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv" || die "cannot create a venv at $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${WHEELS[@]}" \
        || die "pip could not install ${WHEELS[*]}"
    echo "${WHEELS[*]}" >"$stamp"
}

# The wheels' root (nvidia/cu13: bin, include, lib, nvvm), found through Python itself.
wheel_root() {
    "$TOOLKIT/venv/bin/python" -c \
        'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))'
}

lay_out_cuda_home() {
    local src="$1" home="$TOOLKIT/cuda" lib
    [[ -x "$src/bin/nvcc" ]] || die "no nvcc in $src/bin: the nvidia-cuda-nvcc wheel is broken"
    mkdir -p "$home/lib64/stubs"
    for d in bin include nvvm; do ln -sfn "$src/$d" "$home/$d"; done
    ln -sfn lib64 "$home/lib"
    for lib in "$src"/lib/*.so.* "$src"/lib/*.a; do
        local name="${lib##*/}"
        ln -sfn "$lib" "$home/lib64/$name"
        # libfoo.so.13 -> libfoo.so: `-lfoo` only finds the unversioned name.
        [[ "$name" == *.so.* ]] && ln -sfn "$name" "$home/lib64/${name%%.so.*}.so"
    done
    return 0
}

# cudarc's Rust source, where its driver API bindings list every entry point.
cudarc_dir() {
    cargo metadata --format-version 1 --features cuda --manifest-path "$REPO/Cargo.toml" \
        | "$PYTHON" -c 'import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
print(os.path.dirname(pkgs[0]["manifest_path"]) if pkgs else "")'
}

make_driver_stub() {
    local stub="$TOOLKIT/cuda/lib64/stubs/libcuda.so" dir sys src
    dir="$(cudarc_dir)"
    [[ -n "$dir" ]] || die "cudarc is not a dependency of the cuda feature (cargo metadata)"
    sys="$dir/src/driver/sys/mod.rs"
    [[ -f "$sys" ]] || die "$sys not found: cudarc's layout changed; update make_driver_stub"
    if [[ -f "$stub" && "$stub" -nt "$sys" ]]; then return; fi
    say "making the libcuda.so link stub from $sys"
    src="$TOOLKIT/cuda/lib64/stubs/libcuda_stub.c"
    {
        echo '/* Link stub for the CUDA driver API; the real libcuda.so.1 comes with the driver. */'
        grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$sys" | sed 's/^pub unsafe fn //' | sort -u \
            | sed 's/.*/int &(void) { return 999; }/'
    } >"$src"
    [[ $(grep -c 'return 999' "$src") -gt 100 ]] || die "found too few driver functions in $sys"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$src" || die "cannot compile $src"
}

build() {
    export CUDA_HOME="$TOOLKIT/cuda" CUDA_PATH="$TOOLKIT/cuda"
    export PATH="$CUDA_HOME/bin:$PATH"
    export CUDA_COMPUTE_CAP="$COMPUTE_CAP" CUDARC_CUDA_VERSION="$CUDARC_VERSION"
    export LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
    # nvcc's helpers (cicc) load libnvvm from the wheels.
    export LD_LIBRARY_PATH="$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The bundled libraries sit in lib/ beside the binary.
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-Wl,-rpath,\$ORIGIN/lib"
    nvcc --version | grep -q "release 13.0" || die "$CUDA_HOME/bin/nvcc is not CUDA 13.0"
    say "cargo build --release --features cuda (target dir $TARGET_DIR, sm_$COMPUTE_CAP)"
    cargo build --release --features cuda --bin ckpt --manifest-path "$REPO/Cargo.toml" \
        --target-dir "$TARGET_DIR" || die "cargo build failed (see above)"
}

bundle() {
    local src="$1" bin="$TARGET_DIR/release/ckpt"
    [[ -x "$bin" ]] || die "no binary at $bin"
    say "bundling $DIST"
    rm -rf "$DIST"
    mkdir -p "$DIST/lib"
    # The bundle must fit what the GPU machines are sent (64 MiB): the binary without debug
    # info (82 MB, mostly PTX) as xz is ~14 MB; PyTorch's wheels bring no cuRAND (130 MB,
    # ~43 MB as xz). run.sh unpacks both on first use.
    objcopy --strip-debug "$bin" "$DIST/ckpt.tmp"
    xz -T0 -6 -c "$DIST/ckpt.tmp" >"$DIST/ckpt.xz"
    rm "$DIST/ckpt.tmp"
    cp -L "$src/lib/libcudart.so.13" "$DIST/lib/"
    xz -T0 -6 -c "$src/lib/libcurand.so.10" >"$DIST/lib/libcurand.so.10.xz"
    cp "$REPO/scripts/cuda-run.sh" "$DIST/run.sh"
    chmod +x "$DIST/run.sh"
    cat >"$DIST/README.txt" <<EOF
ckpt $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) built with --features cuda (CUDA 13.0, PTX for sm_${COMPUTE_CAP%a}a).
On the GPU machine: dist/ckpt-cuda/run.sh <ckpt arguments>, e.g. run.sh train ... --device cuda
run.sh finds the driver's libcuda.so.1 and PyTorch's libcublas/libcublasLt (.so.13),
unpacks ckpt.xz and lib/libcurand.so.10.xz once, and runs ckpt. \`run.sh --check\` lists what it found.
EOF
    local mib=$(( $(du -sb "$DIST" | cut -f1) / 1048576 ))
    say "bundle: $mib MiB in $DIST"
    [[ $mib -le 64 ]] || say "warning: over the 64 MiB the GPU machines can be sent"
    say "CUDA libraries it links: $(readelf -d "$bin" | grep -oE 'lib(cuda|cudart|cublas|cublasLt|curand|nvrtc)\.so\.[0-9]+' | tr '\n' ' ')"
}

install_wheels
SRC="$(wheel_root)"
lay_out_cuda_home "$SRC"
make_driver_stub
build
bundle "$SRC"
say "done: $DIST/run.sh --version"
