#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of the client core in
# library mode, from the built lanyard-ffi library, with the workspace's own
# (pinned) uniffi-bindgen.
# Usage: scripts/bindings.sh [OUT_DIR]   (default: target/bindings)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bindings}
cargo build --release -p lanyard-ffi --lib --bin uniffi-bindgen
case "$(uname -s)" in
  Darwin) lib=target/release/liblanyard_ffi.dylib ;;
  *) lib=target/release/liblanyard_ffi.so ;;
esac
rm -rf "$out"
mkdir -p "$out"
(cd bindings && ../target/release/uniffi-bindgen generate --library "../$lib" \
  --language kotlin --language swift --language python --out-dir "../$out")
cp "$lib" "$out/"
echo "bindings: $(find "$out" -type f | sort | tr '\n' ' ')"
