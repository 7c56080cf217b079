#!/usr/bin/env bash
# Benchmark (not a test) of how long `ferry push` takes to stop when its destination fails, with
# default settings. Cases (CASES, default all three):
#   kill     a docker-registry SIGKILLed once 10 of 250 tags have arrived
#   freeze   a docker-registry SIGSTOPped during the upload of one big layer (BIG_MIB, 512)
#   silent   a server that accepts connections and never answers, from the start
# Prints, per case, the seconds from the fault to ferry's exit and its exit code. A case still
# running after LIMIT seconds (1800) is stopped and reported as such. FERRY points at another
# binary (an older build, to compare before and after); BENCH_TMPDIR (/dev/shm) holds trees and
# registries. Needs docker-registry, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-kill freeze silent}
LIMIT=${LIMIT:-1800}
BIG_MIB=${BIG_MIB:-512}
BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in docker-registry curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-stop: needs $tool" >&2; exit 2; }
done
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
TESTKIT="$CARGO_TARGET_DIR/release/ferry-testkit"
if [ -z "${FERRY:-}" ]; then
    cargo build --release --quiet --bin ferry -p ferry
    FERRY="$CARGO_TARGET_DIR/release/ferry"
fi

WORK=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-stop.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# start_registry NAME: a docker-registry on a free port; sets REG (host:port) and REG_PID.
start_registry() {
    local dir="$WORK/$1" port
    mkdir -p "$dir/storage"
    port=$(free_port)
    cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: ferry-bench-not-a-secret
YML
    env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    REG_PID=$!
    PIDS+=("$REG_PID")
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && { REG="127.0.0.1:$port"; return; }
        sleep 0.05
    done
    echo "bench-stop: registry $1 did not start" >&2
    exit 2
}

# wait_exit PID T0: waits for ferry (at most LIMIT s), prints "<seconds> s, exit <code>".
wait_exit() {
    local pid=$1 t0=$2 code=0
    for _ in $(seq $((LIMIT * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "still running after ${LIMIT} s (stopped by the benchmark)"
        return
    fi
    wait "$pid" || code=$?
    echo "$(since "$t0") s, exit $code"
}

case_kill() {
    "$TESTKIT" generate --out "$WORK/kill-tree" --scenario bulk --seed 1 --repositories 50 \
        --tags-per-repo 5 --tmpdir "$BENCH_TMPDIR" --registry-log-level error >/dev/null
    start_registry kill-dest
    "$FERRY" push "$WORK/kill-tree" -d "http://$REG" -o "$WORK/kill-failed.txt" \
        >"$WORK/kill.out" 2>"$WORK/kill.err" &
    local ferry=$!
    until [ "$(find "$WORK/kill-dest/storage" -path '*/current/link' 2>/dev/null | wc -l)" -ge 10 ]; do sleep 0.02; done
    kill -9 "$REG_PID"
    local t0
    t0=$(now)
    echo "kill:   $(wait_exit "$ferry" "$t0"); $(wc -l <"$WORK/kill-failed.txt" 2>/dev/null || echo 0) tags in the failed list"
}

case_freeze() {
    "$TESTKIT" generate --out "$WORK/big-tree" --scenario bulk --seed 2 --repositories 1 \
        --tags-per-repo 1 --base-layers 1 --base-layer-kib $((BIG_MIB * 1024)) --unique-layer-kib 1 \
        --tmpdir "$BENCH_TMPDIR" --registry-log-level error >/dev/null
    start_registry freeze-dest
    "$FERRY" push "$WORK/big-tree" -d "http://$REG" -o "$WORK/freeze-failed.txt" \
        >"$WORK/freeze.out" 2>"$WORK/freeze.err" &
    local ferry=$!
    until find "$WORK/freeze-dest/storage" -path '*/_uploads/*/data' -size +0 2>/dev/null | grep -q .; do sleep 0.01; done
    kill -STOP "$REG_PID"
    local t0
    t0=$(now)
    echo "freeze: $(wait_exit "$ferry" "$t0")"
    kill -CONT "$REG_PID"
}

case_silent() {
    local port
    port=$(free_port)
    python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$port" &
    PIDS+=($!)
    sleep 0.3
    local t0
    t0=$(now)
    "$FERRY" push testdata/registry -d "http://127.0.0.1:$port" -o "$WORK/silent-failed.txt" \
        >"$WORK/silent.out" 2>"$WORK/silent.err" &
    echo "silent: $(wait_exit $! "$t0")"
}

echo "bench-stop: $FERRY, cases: $CASES" >&2
for c in $CASES; do "case_$c"; done
