#!/usr/bin/env bash
# Runs the venue workload on Lanyard and on automerge-repo at the same N, back
# to back on this machine, and prints one table with the ratios.
#
#   scripts/bench-compare.sh N [extra lanyard-venue flags]
#
# AM_FLAGS adds flags to the automerge-repo runner (e.g. AM_FLAGS="--deadline-s 180").
#
# Needs Rust (cargo) and Node.js 20+ with npm. Figures land in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:?usage: scripts/bench-compare.sh N [extra lanyard-venue flags]}"
shift
out=target/bench
mkdir -p "$out"
echo "== building the release binaries" >&2
cargo build --release --bin lanyard-server --bin lanyard-venue >&2
echo "== Lanyard, $n devices" >&2
# Exit status 2 means "not every device converged": the table still shows it.
target/release/lanyard-venue --attendees "$n" --json "$out/lanyard-$n.json" \
  --plot "$out/lanyard-$n.svg" "$@" || [ $? -eq 2 ]
echo "== automerge-repo, $n devices" >&2
(
  cd tests/peers/automerge-repo
  npm install --no-audit --no-fund >&2
  node bench.mjs --attendees "$n" ${AM_FLAGS:-} --json "../../../$out/automerge-repo-$n.json" >&2 || true
)
node tests/peers/automerge-repo/compare.mjs "$out/lanyard-$n.json" "$out/automerge-repo-$n.json" \
  | tee "$out/compare-$n.md"
