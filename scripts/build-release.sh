#!/usr/bin/env bash
# Builds what berth ships into target/dist (or OUT_DIR): berthd, and berth-shim as a static PIE.
# Usage: scripts/build-release.sh [OUT_DIR]   Prints OUT_DIR.
#
# berth-shim runs once per pod. Linked statically it maps no ld.so, libc.so or libgcc_s: each
# shim kept their relocated data privately and had libc's text mapped in full by fault-around
# (docs/performance.md, "berth-shim's memory, by mapping"). It stays position-independent, so
# ASLR still places its code. The shim is built for an explicit --target so the static link
# flags reach only it: with --target, cargo gives RUSTFLAGS to neither build scripts nor
# proc macros. A plain `cargo build` still makes a dynamically linked shim (tests use that one).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/dist}
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p cri-server --bin berthd
# The caller's flags are kept, with the static link added (CARGO_ENCODED_RUSTFLAGS, when set,
# is what cargo reads instead of RUSTFLAGS).
if [[ -n ${CARGO_ENCODED_RUSTFLAGS:-} ]]; then
    export CARGO_ENCODED_RUSTFLAGS="$CARGO_ENCODED_RUSTFLAGS"$'\x1f-C\x1ftarget-feature=+crt-static'
else
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
fi
cargo build --release --locked -p runtime-core --bin berth-shim --target "$host"
shim=target/$host/release/berth-shim
if readelf -lW "$shim" | grep -q 'Requesting program interpreter'; then
    echo "build-release: $shim is dynamically linked" >&2
    exit 1
fi
mkdir -p "$out"
install -m 0755 target/release/berthd "$shim" "$out/"
echo "$out"
