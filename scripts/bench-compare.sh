#!/usr/bin/env bash
# Runs the venue workload on Lanyard and on automerge-repo at the same N, back
# to back on this machine, with the same agenda and the same schedule
# changes, and prints one table with the ratios.
#
#   scripts/bench-compare.sh N [extra lanyard-venue flags]
#
# The agenda is lanyard-venue's (workload v2: the real FOSDEM 2025 schedule by
# default; --agenda FILE for another, --agenda synthetic [--sessions S] for v1).
# lanyard-venue imports it with the project's importer and writes the sessions
# and the seed's changes as plain JSON (target/bench/agenda-*.json), which the
# automerge-repo runner reads with --agenda-json.
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
cargo build --release -p lanyard-server -p lanyard-tests --bin lanyard-server --bin lanyard-venue >&2
echo "== the agenda, as Lanyard's importer reads it" >&2
agenda="$out/agenda-$n.json"
target/release/lanyard-venue "$@" --write-agenda-json "$agenda"
echo "== Lanyard, $n devices" >&2
# Exit status 2 means "not every device converged": the table still shows it.
target/release/lanyard-venue --attendees "$n" --json "$out/lanyard-$n.json" \
  --plot "$out/lanyard-$n.svg" "$@" || [ $? -eq 2 ]
# The runner must make the changes of the same seed and count as lanyard-venue.
seed=1 changes=10
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --seed) seed="${args[i + 1]:-1}" ;;
    --seed=*) seed="${args[i]#--seed=}" ;;
    --changes) changes="${args[i + 1]:-10}" ;;
    --changes=*) changes="${args[i]#--changes=}" ;;
  esac
done
echo "== automerge-repo, $n devices (log: $out/automerge-repo-$n.log)" >&2
# No stale figures: a runner that crashes writes none, and the table says so.
rm -f "$out/automerge-repo-$n.json"
(
  cd tests/peers/automerge-repo
  npm install --no-audit --no-fund >&2
  node bench.mjs --attendees "$n" --seed "$seed" --changes "$changes" \
    --agenda-json "../../../$agenda" ${AM_FLAGS:-} \
    --json "../../../$out/automerge-repo-$n.json" 2>&1 | tee "../../../$out/automerge-repo-$n.log" >&2 || true
)
node tests/peers/automerge-repo/compare.mjs "$out/lanyard-$n.json" "$out/automerge-repo-$n.json" \
  | tee "$out/compare-$n.md"
