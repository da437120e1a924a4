#!/usr/bin/env bash
# Walks through the README's round trip with the real binaries: a server on
# loopback, an organizer and an attendee using the `lanyard` command.
# Usage: scripts/smoke.sh [BIN_DIR]   (default: target/debug, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug}
if [ ! -x "$bin/lanyard" ] || [ ! -x "$bin/lanyard-server" ]; then
  cargo build -p lanyard-server -p lanyard-cli
fi
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

"$bin/lanyard-server" serve --data "$work/server" --listen 127.0.0.1:0 > "$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q "pin" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(grep -o 'listening on [0-9.:]*' "$work/server.out" | awk '{print $3}')
[ -n "$addr" ] || fail "server did not report its address: $(cat "$work/server.out" "$work/server.err")"
echo "smoke: server on $addr"

org_link=$("$bin/lanyard-server" invite --data "$work/server" --event conf --role organizer --user org --server "$addr")
ann_link=$("$bin/lanyard-server" invite --data "$work/server" --event conf --role attendee --user ann --server "$addr")
org() { "$bin/lanyard" --home "$work/org" "$@"; }
ann() { "$bin/lanyard" --home "$work/ann" "$@"; }

org join "$org_link" >/dev/null
org event --name "Conf 2026" --timezone America/New_York >/dev/null
org session add --id t1 --title "Keynote" --room "Hall A" \
  --start 2026-06-10T09:00 --end 2026-06-10T10:00 --speaker "Ann Example" >/dev/null
org sync
ann join "$ann_link" >/dev/null
ann sync
ann agenda --json | grep -Eq '"start": ?"2026-06-10T09:00:00-04:00"' || fail "agenda times not in the event zone: $(ann agenda --json)"
ann note t1 "Ask about offline sync"
ann sync
if ann session cancel t1 2>"$work/err"; then fail "an attendee cancelled a session"; fi
grep -q "organizers only" "$work/err" || fail "no 'organizers only' error: $(cat "$work/err")"
org session move t1 --room "Hall B" >/dev/null
org sync
ann sync
ann agenda --json | grep -Eq '"room": ?"Hall B"' || fail "the move did not reach the attendee"
ann status --json | grep -Eq '"pending_changes": ?0' || fail "attendee has pending changes: $(ann status --json)"
# A real frab export replaces the hand-made agenda (t1 is cancelled, not deleted).
org import "tests/data/schedules/frab-camp2019.json" --json > "$work/import.json"
grep -Eq '"sessions": ?79' "$work/import.json" || fail "import: $(cat "$work/import.json")"
org sync
ann sync
[ "$(ann agenda --json | grep -c '"id"')" -eq 80 ] || fail "the imported agenda did not reach the attendee"
ann export --format ics --output "$work/ann.ics" 2>/dev/null
[ "$(grep -c '^BEGIN:VEVENT' "$work/ann.ics")" -eq 80 ] || fail "export: $(head -c 400 "$work/ann.ics")"

kill -TERM "$server_pid"
wait "$server_pid" || fail "server did not exit cleanly on SIGTERM"
server_pid=
if ann sync --timeout 2 2>"$work/err"; then fail "sync succeeded with no server"; fi
[ "$(wc -l < "$work/err")" -eq 1 ] || fail "the failure is not one line: $(cat "$work/err")"
echo "smoke: offline sync error: $(cat "$work/err")"
echo "smoke: 1 passed, 0 failed"
