#!/bin/sh
# Compiles the eBPF programs: `build.sh OUT_DIR` writes OUT_DIR/<name>.bpf.o for every
# bpf/<name>.bpf.c; `build.sh --check` rebuilds into a temporary directory and fails when a
# committed bpf/<name>.bpf.o differs (run by .ci/run; commit the output of `build.sh bpf`).
#
# The output is reproducible: paths are made relative (-fdebug-prefix-map) and DWARF is stripped.
# BTF (.BTF, .BTF.ext) stays: aya reads the BTF-defined maps from it and the kernel needs it for
# the socket-storage map.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}

build() {
  out=$1
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  cd "$here"
  for src in *.bpf.c; do
    obj="$out/${src%.c}.o"
    "$CLANG" -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -fdebug-prefix-map="$here"=. \
      -Wall -Werror -c "$src" -o "$obj.tmp"
    "$STRIP" --strip-debug "$obj.tmp"
    mv "$obj.tmp" "$obj"
  done
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  build "$tmp"
  status=0
  for obj in "$tmp"/*.bpf.o; do
    name=$(basename "$obj")
    if ! cmp -s "$obj" "$here/$name"; then
      echo "ebpf/bpf/$name is stale: run 'sh ebpf/bpf/build.sh ebpf/bpf' and commit it" >&2
      status=1
    fi
  done
  exit $status
fi
build "${1:?usage: build.sh OUT_DIR | --check}"
