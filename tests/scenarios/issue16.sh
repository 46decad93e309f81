#!/usr/bin/env bash
# Black-box scenarios of issue 16, run against a binary (release by default) and its standalone
# emulator on 127.0.0.1; prints one figure line per scenario. Not part of the test suite (the
# suite walks the same paths with assertions): this reproduces the close note's figures.
#   BIN=target/release/aos-audit-export bash tests/scenarios/issue16.sh
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/aos-audit-export}")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_emu() {
  "$BIN" emulator --listen "127.0.0.1:$port" --days 35 --records-per-day 2000 --seed 7 "$@" > "$work/emu.log" 2>&1 &
  EMU=$!
  for _ in $(seq 100); do grep -q listening "$work/emu.log" 2>/dev/null && return; sleep 0.1; done
  echo "emulator did not start" >&2; exit 1
}
stop_emu() { kill "$EMU"; wait "$EMU" 2>/dev/null || true; }

config() { # $1 = case folder, $2 = start, $3 = more [export] keys, $4 = more tables
  mkdir -p "$work/$1"
  cat > "$work/$1/config.toml" <<EOF
[auth]
token_url = "http://127.0.0.1:$port/connect/token"
client_id = "demo-client"
client_secret = "demo-secret"
[api]
base_url = "http://127.0.0.1:$port"
[export]
start = "$2"
format = "ndjson"
output = "$work/$1/out"
$3
[state]
path = "$work/$1/state/state.db"
${4:-}
EOF
}
wrote() { grep -o 'wrote [0-9]* new records' "$1" | head -1 || echo "no summary: $(tail -c 200 "$1")"; }
ex() { local c=$1; shift; "$BIN" --config "$work/$c/config.toml" "$@"; }
count() { # rows and distinct ids of an NDJSON lake
  python3 - "$1" <<'PY'
import json, pathlib, sys
ids = [json.loads(l)["_record_id"] for f in pathlib.Path(sys.argv[1]).glob("dt=*/*.ndjson") for l in open(f)]
print(f"{len(ids)} rows for {len(set(ids))} ids")
PY
}

start_emu
# 1. The state lost between two runs, shipped ConfigMap's relative start.
config lost 30d ""
ex lost run > /dev/null 2>&1
mv "$work/lost/state" "$work/lost/state.gone"
ex lost run > "$work/lost/run2.log" 2>&1
echo "1. lost state, start = 30d: $(count "$work/lost/out"); second run: $(wrote "$work/lost/run2.log")"

# 2. A filter change on a named stream.
config named 2026-11-01T00:00:00Z "" $'[[api.streams]]\nname = "main"\nproduct_types = ["Portal"]'
ex named backfill --from 2026-11-01 > /dev/null 2>&1
sed -i 's/product_types = \["Portal"\]/product_types = ["Portal", "SMP"]/' "$work/named/config.toml"
ex named run > "$work/named/run.log" 2>&1
echo "2. named stream widened: $(wrote "$work/named/run.log") (SMP's history); lake $(count "$work/named/out"); status: $(ex named status | grep -c 'not in effect') stream not in effect"

# 3. Status after a backfill alone.
config bf 2026-11-01T00:00:00Z ""
ex bf backfill --from 2026-11-10 --to 2026-11-12 > /dev/null 2>&1
echo "3. status after a backfill alone: $(ex bf status | grep -E 'exported ranges end at|nothing exported' | head -1 | cut -c1-110); gaps: $(ex bf status | grep -c 'gap:')"

# 4. The lock through a symlink, while a run holds the state.
config lock 2026-11-01T00:00:00Z ""
ln -s "$work/lock/state" "$work/lock/state-link"
stop_emu; start_emu --latency-ms 300
ex lock backfill --from 2026-11-01 > /dev/null 2>&1 &
BF=$!
sleep 1.5
set +e; AOS_EXPORT_STATE__PATH="$work/lock/state-link/state.db" ex lock run > "$work/lock/second.log" 2>&1; code=$?; set -e
echo "4. second process through a symlink: exit $code ($(head -c 90 "$work/lock/second.log"))"
wait "$BF" 2>/dev/null || true
stop_emu

# 5. Each bounds reading and a spelling switch: the same lake as the plain server.
for flags in "" "--precision seconds" "--start-exclusive --end-exclusive --precision millis" "--start-exclusive --precision seconds"; do
  c="b$(echo "$flags" | tr -dc 'a-z' | head -c 20)"
  start_emu $flags
  config "$c" 2026-11-20T00:00:00Z 'window = "1h"'
  set +e; ex "$c" run > "$work/$c/run.log" 2>&1; code=$?; set -e
  stop_emu
  start_emu $flags --omit-nulls --reverse-keys --respell --pretty
  set +e; ex "$c" reconcile --from 2026-11-20 > "$work/$c/rec.log" 2>&1; set -e
  stop_emu
  echo "5. bounds [${flags:-inclusive, tick}]: run exit $code, $(count "$work/$c/out"); re-read in another spelling: $(wrote "$work/$c/rec.log")"
done

# 6. Records without actionTime: one at a window bound, and identical copies at two instants of a
#    day, the second arriving late, found by a `reconcile --from 7d` whose first window begins
#    mid-day (inside the day's window that wrote the first copy).
day=$(date -u -d '7 days ago' +%Y-%m-%d)
arrive=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
{
  echo "{\"servedAt\": \"${day}T00:00:00Z\", \"record\": {\"actionName\": \"NoTime\", \"objectName\": \"at-a-bound\"}}"
  echo "{\"servedAt\": \"${day}T00:00:30Z\", \"record\": {\"actionName\": \"NoTime\", \"objectName\": \"twin\"}}"
  echo "{\"servedAt\": \"$(date -u -d '7 days ago 2 hours' +%Y-%m-%dT%H:%M:%SZ)\", \"record\": {\"actionName\": \"NoTime\", \"objectName\": \"twin\"}, \"arrivesAt\": \"$arrive\"}"
  echo "{\"servedAt\": \"${day}T05:00:00Z\", \"record\": {\"actionName\": \"Collide\", \"actionTime\": \"${day}T05:00:00Z\", \"_record_id\": \"mine\", \"_ingested_at\": \"theirs\", \"_record_id_\": 1}}"
} > "$work/extras.ndjson"
start_emu --extra-records "$work/extras.ndjson"
config late "$(date -u -d '12 days ago' +%Y-%m-%d)T00:00:00Z" $'window = "1d"\nlag = "0s"'
ex late run > /dev/null 2>&1
while [ "$(date -u +%s)" -lt "$(date -u -d "$arrive" +%s)" ]; do sleep 1; done
ex late reconcile --from 7d > "$work/late/rec.log" 2>&1
twins() {
  python3 - "$1" <<'PY'
import json, pathlib, sys
rows = [json.loads(l) for f in pathlib.Path(sys.argv[1]).glob("dt=*/*.ndjson") for l in open(f)]
n = lambda name: sum(1 for r in rows if r.get("objectName") == name)
print(f"at-a-bound {n('at-a-bound')} of 1, twin {n('twin')} of 2")
PY
}
echo "6. records without actionTime: reconcile --from 7d $(wrote "$work/late/rec.log"); $(twins "$work/late/out")"

# 7. A record with keys named like the exporter's columns: every NDJSON line has unique keys, and
#    later runs pass.
dupkeys=$(python3 - "$work/late/out" <<'PY'
import json, pathlib, sys
bad = 0
def hook(pairs):
    global bad
    keys = [k for k, _ in pairs]
    bad += len(keys) != len(set(keys))
    return dict(pairs)
lines = [l for f in pathlib.Path(sys.argv[1]).glob("dt=*/*.ndjson") for l in open(f)]
for l in lines:
    json.loads(l, object_pairs_hook=hook)
coll = [json.loads(l) for l in lines if '"Collide"' in l]
print(f"{len(lines)} lines, {bad} with a repeated key; the colliding record's keys: {sorted(k for k in coll[0] if k.startswith('_'))}")
PY
)
set +e; ex late run > "$work/late/run2.log" 2>&1; code=$?; ex late reconcile --from 7d > "$work/late/rec2.log" 2>&1; code2=$?; set -e
echo "7. key collision: $dupkeys; next run exit $code, reconcile exit $code2 ($(wrote "$work/late/rec2.log"))"
stop_emu
