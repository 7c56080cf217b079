#!/usr/bin/env bash
# Benchmark (not a test) of `ferry push` from registry tarballs. Generates a bulk tree (images
# sharing base layers) with a real docker-registry, tars it (`tar cf`, `tar czf`), then times,
# each into a fresh docker-registry, ROUNDS times in turn (whole process, wall clock and peak RSS
# from GNU time):
#   plain     ferry push tree.tar                  (read in place: no extraction, no cache)
#   gz        ferry push tree.tar.gz --cache-dir C (one streaming pass into a fresh cache folder)
#   folder    ferry push TREE                      (the extracted folder, the baseline)
#   xzf+push  tar xzf tree.tar.gz -C X && ferry push X   (what people do today)
# and prints the medians and the ratios against the targets (plain <= 1.1x folder; gz < xzf+push).
# Knobs (environment): REPOS (60) TAGS (4) BASE_LAYERS (12) BASE_KIB (16384) UNIQUE_KIB (2048)
# JOBS (4) SEED (1) ROUNDS (5) BENCH_TMPDIR (/dev/shm: tree, archives, caches and destinations;
# Distribution fsyncs every blob, so a disk folder measures the disk) KEEP=1 keeps the work folder.
# Needs docker-registry, curl, jq, gzip and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=${REPOS:-60}
TAGS=${TAGS:-4}
BASE_LAYERS=${BASE_LAYERS:-12}
BASE_KIB=${BASE_KIB:-16384}
UNIQUE_KIB=${UNIQUE_KIB:-2048}
JOBS=${JOBS:-4}
SEED=${SEED:-1}
ROUNDS=${ROUNDS:-5}
BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in docker-registry curl jq gzip /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-tarball: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin ferry -p ferry
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
FERRY="$CARGO_TARGET_DIR/release/ferry"
TESTKIT="$CARGO_TARGET_DIR/release/ferry-testkit"

WORK=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-tarball.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "bench-tarball: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# start_registry NAME: a docker-registry on a free port with a fresh storage folder; sets REG.
# A port taken between the check and the bind is retried with another.
start_registry() {
    local attempt
    for attempt in 1 2 3; do
        try_registry "$1" && return
    done
    echo "bench-tarball: registry $1 did not start:" >&2
    cat "$WORK/$1/log" >&2
    exit 2
}

try_registry() {
    local name=$1 dir="$WORK/$1" port pid
    mkdir -p "$dir/storage"
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
    rootdirectory: $dir/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: ferry-bench-not-a-secret
validation:
  manifests:
    urls:
      allow:
        - '^https?://'
EOF
    env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    echo "$pid" >"$dir/pid"
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && { REG="127.0.0.1:$port"; return 0; }
        sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    return 1
}

# stop_registry NAME: stops it, waits for it to exit, removes its storage (after it was checked).
stop_registry() {
    local dir="$WORK/$1" pid
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

dest_repo() { case $1 in */*) echo "$1" ;; *) echo "library/$1" ;; esac; }

echo "bench-tarball: generating $((REPOS * TAGS)) images ($REPOS repositories x $TAGS tags, $BASE_LAYERS shared base layers of $BASE_KIB KiB, own layers of $UNIQUE_KIB KiB) in $WORK" >&2
"$TESTKIT" generate --out "$WORK/tree" --scenario bulk --seed "$SEED" \
    --repositories "$REPOS" --tags-per-repo "$TAGS" --base-layers "$BASE_LAYERS" \
    --base-layer-kib "$BASE_KIB" --unique-layer-kib "$UNIQUE_KIB" --tmpdir "$BENCH_TMPDIR" \
    --registry-log-level error
TREE="$WORK/tree"
TRUTH="$WORK/tree.truth.json"
IMAGES=$(jq '.tags | length' "$TRUTH")
UNIQUE_BYTES=$(jq '[.tags[].blobs[]] | unique_by(.digest) | map(.size) | add' "$TRUTH")
tar -cf "$WORK/tree.tar" -C "$TREE" .
tar -czf "$WORK/tree.tar.gz" -C "$TREE" .
TAR_BYTES=$(stat -c %s "$WORK/tree.tar")
GZ_BYTES=$(stat -c %s "$WORK/tree.tar.gz")
echo "bench-tarball: $IMAGES images, $UNIQUE_BYTES unique blob bytes; tar $TAR_BYTES bytes, tar.gz $GZ_BYTES bytes" >&2

# Checks that every tag is at the destination $1 with its digest.
verify() {
    local host=$1 bad=0 ref repo tag digest got
    while IFS=$'\t' read -r repo tag digest; do
        got=$(curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json' \
            "http://$host/v2/$(dest_repo "$repo")/manifests/$tag" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}')
        [ "$got" = "$digest" ] || { bad=$((bad + 1)); ref="$repo:$tag"; }
    done < <(jq -r '.tags[] | [.repository, .tag, .digest] | @tsv' "$TRUTH")
    if [ "$bad" -ne 0 ]; then echo "bench-tarball: $bad tags missing or wrong at $host (e.g. $ref)" >&2; exit 1; fi
}

# timed NAME CMD...: runs CMD under GNU time into a fresh registry ($REG is set before CMD is
# expanded, so CMD refers to it as "\$REG"); appends seconds and peak KiB to NAME's lists.
declare -A SECS KIB
timed() {
    local name=$1
    shift
    start_registry "dest-$name"
    local cmd=${*//@REG@/$REG}
    /usr/bin/time -f '%e %M' -o "$WORK/time.txt" sh -c "$cmd" >"$WORK/$name.log" 2>&1 ||
        { echo "bench-tarball: $name failed:" >&2; tail "$WORK/$name.log" >&2; exit 1; }
    verify "$REG"
    stop_registry "dest-$name"
    read -r s k <"$WORK/time.txt"
    SECS[$name]="${SECS[$name]:-} $s"
    KIB[$name]="${KIB[$name]:-} $k"
}

PUSH="$FERRY push -j $JOBS -o $WORK/failed.txt -d http://@REG@"
for round in $(seq "$ROUNDS"); do
    echo "bench-tarball: round $round of $ROUNDS" >&2
    timed plain "$PUSH $WORK/tree.tar"
    rm -rf "$WORK/cache"
    timed gz "$PUSH $WORK/tree.tar.gz --cache-dir $WORK/cache"
    rm -rf "$WORK/cache"
    timed folder "$PUSH $TREE"
    rm -rf "$WORK/x"
    timed xzf "mkdir $WORK/x && tar -xzf $WORK/tree.tar.gz -C $WORK/x && $PUSH $WORK/x"
    rm -rf "$WORK/x"
done

median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "bench-tarball: $IMAGES images, $UNIQUE_BYTES unique blob bytes (tar $TAR_BYTES, tar.gz $GZ_BYTES), -j $JOBS, $(nproc) cores, in $BENCH_TMPDIR, median of $ROUNDS"
printf '  %-34s %9s %12s   %s\n' "" "seconds" "peak RSS" "(all seconds)"
for name in plain gz folder xzf; do
    case $name in
    plain) label="ferry push tree.tar" ;;
    gz) label="ferry push tree.tar.gz (cache)" ;;
    folder) label="ferry push folder" ;;
    xzf) label="tar xzf + ferry push folder" ;;
    esac
    printf '  %-34s %9s %9s MiB   (%s)\n' "$label" "$(median "${SECS[$name]}")" \
        "$(awk -v k="$(median "${KIB[$name]}")" 'BEGIN { printf "%.0f", k / 1024 }')" "${SECS[$name]# }"
done
echo "  plain / folder:       $(ratio "$(median "${SECS[plain]}")" "$(median "${SECS[folder]}")")  (target <= 1.10)"
echo "  gz / (xzf + push):    $(ratio "$(median "${SECS[gz]}")" "$(median "${SECS[xzf]}")")  (target < 1.00)"
