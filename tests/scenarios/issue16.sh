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
