#!/usr/bin/env bash
# Benchmark (not a test): peak RSS of `ferry list --format json`, `push --dry-run`, `validate` and
# `export --link copy` on two trees written by a real docker-registry:
#   big   one image with one BIG_MIB MiB layer (default 2048: 2 GiB);
#   many  a bulk tree of REPOS x TAGS tags, then COPIES hard-link copies of its repositories under
#         new names (c0/…, c1/…): a valid tree of REPOS x TAGS x COPIES tags (default 50,000).
# Repositories are moved under c0/ (c1/, …) so that the default mapping keeps their names: validate
# checks against a docker-registry serving the tree itself (every tag passes); push --dry-run
# plans against an empty one; the big tree is also pushed for real into that empty one.
# Peak RSS is GNU time's %M (whole process, KiB).
# Knobs (environment): BIG_MIB (2048) REPOS (100) TAGS (5) COPIES (100) JOBS (ferry -j, 4)
# BENCH_TMPDIR (/dev/shm) FERRY_BIN (a ferry binary to measure instead of building one)
# ONLY=big|many (one tree only) KEEP=1 keeps the work folder. Needs docker-registry, curl, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."

BIG_MIB=${BIG_MIB:-2048}
REPOS=${REPOS:-100}
TAGS=${TAGS:-5}
COPIES=${COPIES:-100}
JOBS=${JOBS:-4}
ONLY=${ONLY:-}
BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in docker-registry curl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-memory: needs $tool (apt-get install docker-registry curl time)" >&2; exit 2; }
done

cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
TESTKIT="$CARGO_TARGET_DIR/release/ferry-testkit"
if [ -n "${FERRY_BIN:-}" ]; then
    FERRY=$FERRY_BIN
else
    cargo build --release --quiet --bin ferry -p ferry
    FERRY="$CARGO_TARGET_DIR/release/ferry"
fi

WORK=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-memory.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "bench-memory: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# start_registry NAME ROOT: a docker-registry on a free port with its storage at ROOT; sets REG.
# A port taken between the check and the bind (other registries start on this machine) is retried.
start_registry() {
    local dir="$WORK/$1" port attempt pid
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $2
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: ferry-bench-not-a-secret
EOF
        env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
        pid=$!
        REG="127.0.0.1:$port"
        for _ in $(seq 200); do
            if curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null; then
                PIDS+=("$pid")
                return
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        grep -q "address already in use" "$dir/log" || break
    done
    echo "bench-memory: registry $1 did not start:" >&2
    cat "$dir/log" >&2
    exit 2
}

ROWS=()
# measure TREE_LABEL COMMAND_LABEL ARGS...: runs ferry once, records its peak RSS and exit code.
measure() {
    local tree=$1 what=$2
    shift 2
    local out="$WORK/run-$tree-${what// /-}"
    rm -rf "$out.dir"
    local code=0
    /usr/bin/time -f '%M %e' -o "$out.time" "$FERRY" "$@" >"$out.stdout" 2>"$out.stderr" || code=$?
    local kib secs
    # GNU time puts "Command exited with non-zero status N" first when the command fails.
    read -r kib secs < <(tail -n 1 "$out.time") || true
    kib=${kib:-0}
    ROWS+=("$(printf '%-6s %-24s %9.1f MiB %8s s   exit %s' "$tree" "$what" "$(awk -v k="$kib" 'BEGIN { print k / 1024 }')" "$secs" "$code")")
    echo "bench-memory: $tree $what: $((kib / 1024)) MiB peak, ${secs} s, exit $code" >&2
    if [ "$code" -ne 0 ]; then
        tail -n 5 "$out.stderr" >&2
    fi
}

# run_all LABEL TREE [push]: the four commands on one tree (and a real push).
run_all() {
    local label=$1 tree=$2 real_push=${3:-}
    start_registry "$label-served" "$tree"
    local served=$REG
    start_registry "$label-empty" "$WORK/$label-empty/storage"
    local empty=$REG
    measure "$label" "list --format json" list "$tree" --format json
    measure "$label" "push --dry-run" push "$tree" -d "http://$empty" --dry-run -j "$JOBS" -o "$WORK/$label-push-failed.txt"
    if [ -n "$real_push" ]; then
        measure "$label" "push" push "$tree" -d "http://$empty" -j "$JOBS" -o "$WORK/$label-push-failed.txt"
    fi
    measure "$label" "validate" validate "$tree" -d "http://$served" -j "$JOBS" -o "$WORK/$label-validate-failed.txt"
    measure "$label" "export --link copy" export "$tree" --out "$WORK/$label-export" --link copy -j "$JOBS" -o "$WORK/$label-export-failed.txt"
    rm -rf "$WORK/$label-export"
}

if [ "$ONLY" != many ]; then
    echo "bench-memory: generating one image with a $BIG_MIB MiB layer in $WORK/big" >&2
    "$TESTKIT" generate --out "$WORK/big" --scenario bulk --repositories 1 --tags-per-repo 1 \
        --base-layers 1 --base-layer-kib $((BIG_MIB * 1024)) --tmpdir "$BENCH_TMPDIR" --registry-log-level error
    V2="$WORK/big/docker/registry/v2"
    mv "$V2/repositories" "$V2/original"
    mkdir "$V2/repositories"
    mv "$V2/original" "$V2/repositories/c0"
    run_all big "$WORK/big" push
    rm -rf "$WORK/big"
fi

if [ "$ONLY" != big ]; then
    echo "bench-memory: generating $((REPOS * TAGS)) tags, then $COPIES hard-link copies of its repositories" >&2
    "$TESTKIT" generate --out "$WORK/many" --scenario bulk --repositories "$REPOS" --tags-per-repo "$TAGS" \
        --tmpdir "$BENCH_TMPDIR" --registry-log-level error
    V2="$WORK/many/docker/registry/v2"
    mv "$V2/repositories" "$V2/original"
    mkdir "$V2/repositories"
    for c in $(seq 0 $((COPIES - 1))); do
        cp -al "$V2/original" "$V2/repositories/c$c"
    done
    rm -rf "$V2/original"
    echo "bench-memory: tags in the tree: $(find "$V2/repositories" -path '*/current/link' | wc -l)" >&2
    run_all many "$WORK/many"
fi

echo
echo "bench-memory: $FERRY, -j $JOBS, $(nproc) cores, trees in $BENCH_TMPDIR; peak RSS (GNU time %M), wall seconds"
for row in "${ROWS[@]}"; do echo "  $row"; done
