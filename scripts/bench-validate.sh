#!/usr/bin/env bash
# Benchmark (not a test): whole-process time of `ferry validate` against a loop of
# `skopeo inspect --raw` per tag, on the same destination, median of 5 each (after one warm-up).
# Generates a bulk tree (REPOS x TAGS tags, at least 250), pushes it with `ferry push` into a
# fresh docker-registry (plain HTTP, free port, config in a temp dir), checks both ways see every
# tag, then times them and prints the ratio (target: ferry 10x faster or better).
# Knobs (environment): REPOS (60) TAGS (5) JOBS (ferry -j, 4) SEED (1)
# BENCH_TMPDIR (/dev/shm; Distribution fsyncs every blob) KEEP=1 keeps the work folder.
# Needs docker-registry, skopeo, curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=${REPOS:-60}
TAGS=${TAGS:-5}
JOBS=${JOBS:-4}
SEED=${SEED:-1}
BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in docker-registry skopeo curl jq; do
    command -v "$tool" >/dev/null || { echo "bench-validate: needs $tool" >&2; exit 2; }
done
if [ $((REPOS * TAGS)) -lt 250 ]; then
    echo "bench-validate: REPOS x TAGS must be at least 250" >&2
    exit 2
fi

cargo build --release --quiet --bin ferry -p ferry
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
FERRY="$CARGO_TARGET_DIR/release/ferry"
TESTKIT="$CARGO_TARGET_DIR/release/ferry-testkit"

WORK=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-validate.XXXXXX")
REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "bench-validate: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# The destination: a docker-registry like the testkit's (same cache, no upload purging).
PORT=$(free_port)
mkdir -p "$WORK/dest/storage"
cat >"$WORK/dest/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/dest/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: ferry-bench-not-a-secret
validation:
  manifests:
    urls:
      allow:
        - '^https?://'
EOF
env -u REGISTRY_HTTP_ADDR docker-registry serve "$WORK/dest/config.yml" >"$WORK/dest/log" 2>&1 &
REG_PID=$!
REG="127.0.0.1:$PORT"
for _ in $(seq 200); do
    curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && break
    sleep 0.05
done
curl -fsS -o /dev/null "http://$REG/v2/" || { echo "bench-validate: registry did not start:" >&2; cat "$WORK/dest/log" >&2; exit 2; }

echo "bench-validate: generating $((REPOS * TAGS)) tags ($REPOS repositories x $TAGS tags) in $WORK" >&2
"$TESTKIT" generate --out "$WORK/tree" --scenario bulk --seed "$SEED" \
    --repositories "$REPOS" --tags-per-repo "$TAGS" --tmpdir "$BENCH_TMPDIR" --registry-log-level error
TREE="$WORK/tree"
TRUTH="$WORK/tree.truth.json"
"$FERRY" push "$TREE" -d "http://$REG" -j 4 -o "$WORK/push-failed.txt" 2>"$WORK/push.log" ||
    { echo "bench-validate: push failed:" >&2; tail "$WORK/push.log" >&2; exit 1; }
tail -n 1 "$WORK/push.log" >&2

# Destination references, the default mapping (single-component names go under library/).
jq -r '.tags[] | [.repository, .tag] | @tsv' "$TRUTH" |
    awk -F'\t' -v reg="$REG" '{ repo = ($1 ~ /\//) ? $1 : "library/" $1; print "docker://" reg "/" repo ":" $2 }' \
        >"$WORK/refs.txt"
TAGCOUNT=$(wc -l <"$WORK/refs.txt")

cat >"$WORK/skopeo-loop.sh" <<'EOF'
#!/usr/bin/env bash
# What one does without ferry: one `skopeo inspect --raw` per tag.
set -euo pipefail
while read -r ref; do
    skopeo inspect --raw --tls-verify=false "$ref" >/dev/null
done <"$1"
EOF
chmod +x "$WORK/skopeo-loop.sh"

run_ferry() {
    "$FERRY" validate "$TREE" -d "http://$REG" -j "$JOBS" -o "$WORK/validate-failed.txt" -q
}
run_ferry_shallow() {
    "$FERRY" validate "$TREE" -d "http://$REG" -j "$JOBS" -o "$WORK/validate-failed.txt" -q --shallow
}
run_skopeo() { "$WORK/skopeo-loop.sh" "$WORK/refs.txt"; }
# CPU time (ms) the registry process has used so far: where a validation's time goes.
registry_cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$REG_PID/stat"; }

# Both must succeed before they are timed.
run_ferry || { echo "bench-validate: ferry validate did not pass" >&2; exit 1; }
[ ! -s "$WORK/validate-failed.txt" ] || { echo "bench-validate: failed list not empty" >&2; exit 1; }
run_skopeo || { echo "bench-validate: the skopeo loop failed" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_ms() { # median wall time in ms of 5 runs of "$@"; a failing run aborts
    for _ in 1 2 3 4 5; do
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "bench-validate: $* failed" >&2; exit 1; }
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000))
    done | median
}

CPU0=$(registry_cpu_ms)
REQUESTS=$("$FERRY" validate "$TREE" -d "http://$REG" -j "$JOBS" -o "$WORK/validate-failed.txt" 2>&1 | sed -n 's/.* \([0-9][0-9]*\) requests in .*/\1/p')
REG_MS=$(($(registry_cpu_ms) - CPU0))
FERRY_MS=$(time_ms run_ferry)
SHALLOW_MS=$(time_ms run_ferry_shallow)
SKOPEO_MS=$(time_ms run_skopeo)
echo
echo "bench-validate: $TAGCOUNT tags at $REG (tree and registry in $BENCH_TMPDIR), median of 5, whole process"
echo "  ferry validate -j $JOBS (tag, children, every blob) : ${FERRY_MS} ms"
echo "  ferry validate -j $JOBS --shallow (tag, children)  : ${SHALLOW_MS} ms"
echo "  skopeo inspect --raw per tag (manifest only)     : ${SKOPEO_MS} ms"
awk -v a="$SKOPEO_MS" -v b="$FERRY_MS" 'BEGIN { printf "  skopeo loop / ferry validate                     : %.1fx (target >= 10x)\n", (b > 0 ? a / b : 0) }'
awk -v a="$SKOPEO_MS" -v b="$SHALLOW_MS" 'BEGIN { printf "  skopeo loop / ferry validate --shallow           : %.1fx\n", (b > 0 ? a / b : 0) }'
echo "  one deep validation: $REQUESTS requests; the registry spent ${REG_MS} ms of CPU answering them"
