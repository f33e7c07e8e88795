#!/bin/bash
# Code-login starts against the real binary, out of process, and the service's CPU per
# start with its mail included (BENCHMARKS.md, "The write path"). Needs wrk
# (apt-get install wrk) and a release build (cargo build --release).
#   benches/wrk/code-starts.sh [SECONDS] [BINARY] [CONNECTIONS]
# A fresh SQLite database each run; mail goes to a folder on /dev/shm (tmpfs), so the
# figures measure the service rather than this machine's disk.
set -eu
SECONDS_TO_RUN=${1:-10}
BIN=$(realpath "${2:-target/release/portcullis}")
CONNECTIONS=${3:-64}
HERE=$(dirname "$(realpath "$0")")
RUN=$(mktemp -d)
OUTBOX=/dev/shm/portcullis-wrk-outbox
rm -rf "$OUTBOX"
cd "$RUN"
PORTCULLIS_TRUSTED_PROXIES=127.0.0.1 PORTCULLIS_MAIL_OUTBOX=$OUTBOX \
  "$BIN" --listen 127.0.0.1:18080 --database-url "sqlite://$RUN/p.db" > out.log 2>&1 &
PID=$!
# Waits for the service to stop, so that a next run finds the port free.
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$RUN" "$OUTBOX"' EXIT
for _ in $(seq 100); do grep -q app_token out.log 2>/dev/null && break; sleep 0.1; done
APP=$(grep -oP 'app_token:?\s+\Kapp_\S+' out.log | head -1)
export APP
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
kill -0 $PID 2>/dev/null || { echo "the service did not start:"; cat out.log; exit 1; }
BEFORE=$(cpu)
OUT=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_TO_RUN}s" -s "$HERE/code-starts.lua" http://127.0.0.1:18080)
STARTS=$(echo "$OUT" | grep -oP '^\s+\K\d+(?= requests in)')
# The mail of every start, and of the first start's project, written out.
for _ in $(seq 300); do
  [ "$(ls "$OUTBOX" 2>/dev/null | wc -l)" -ge "$STARTS" ] && break
  sleep 0.1
done
AFTER=$(cpu)
echo "$OUT" | grep -E "Requests/sec|Latency|Non-2xx" || true
echo "starts=$STARTS mails=$(ls "$OUTBOX" | wc -l) cpu_us_per_start=$(( (AFTER - BEFORE) * 10000 / STARTS ))"
