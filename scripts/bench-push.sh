#!/usr/bin/env bash
# Benchmark (not a test) of `ferry push` against the other ways of moving a storage tree into a
# registry. Generates a bulk tree (images sharing base layers) with a real docker-registry, then
# times, each into a fresh docker-registry:
#   ferry     ferry push -j JOBS
#   script    the shell-script way: hard-link each tag's manifest and blobs into a skopeo dir:
#             folder (manifest.json, <hex>, version), then `skopeo sync --src dir --dest docker`
#             once per project, one project after another
#   copy      `skopeo copy --all --preserve-digests` docker→docker for every tag, JOBS at a time,
#             from a docker-registry serving a (hard-linked) copy of the tree
#   floor     every unique blob uploaded once (POST + PUT, no HEAD, no hashing, no manifests) by
#             `ferry-testkit upload-floor -j JOBS`, a 60-line Rust client
#   shards    N ferry processes at once (`--shard K/N`, K = 0..N-1, -j JOBS each), as the pods of
#             an Indexed Job, into one fresh docker-registry behind a counting proxy
#             (`ferry-testkit proxy`), for each N in SHARDS: wall time, and blob bytes uploaded as
#             the registry side saw them, against the N=1 run
# and prints each time and the ratios. Knobs (environment): REPOS (60) TAGS (4) BASE_LAYERS (12)
# BASE_KIB (16384) UNIQUE_KIB (2048) JOBS (4) SEED (1) BENCH_TMPDIR (/dev/shm: tree and
# destinations; Distribution fsyncs every blob, so a disk folder measures the disk) ROUNDS (3:
# ferry and the floor are each run ROUNDS times, alternating, and their medians compared; the
# shard runs are repeated ROUNDS times too) SHARDS ("1 2 4") ONLY (shard: only the shard runs)
# FERRY_BIN (the ferry binary to measure; default: this tree's release build)
# KEEP=1 keeps the work folder. Needs docker-registry, skopeo, curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=${REPOS:-60}
TAGS=${TAGS:-4}
BASE_LAYERS=${BASE_LAYERS:-12}
BASE_KIB=${BASE_KIB:-16384}
UNIQUE_KIB=${UNIQUE_KIB:-2048}
JOBS=${JOBS:-4}
SEED=${SEED:-1}
BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for tool in docker-registry skopeo curl jq; do
    command -v "$tool" >/dev/null || { echo "bench-push: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin ferry -p ferry
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
FERRY="${FERRY_BIN:-$CARGO_TARGET_DIR/release/ferry}"
ONLY=${ONLY:-all}
SHARDS=${SHARDS:-1 2 4}
TESTKIT="$CARGO_TARGET_DIR/release/ferry-testkit"

WORK=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-push.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "bench-push: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# start_registry NAME [ROOT]: a docker-registry on a free port with its storage at ROOT
# (default: a fresh folder); sets REG to host:port.
start_registry() {
    local name=$1 dir="$WORK/$1" root=${2:-$WORK/$1/storage} port attempt pid
    mkdir -p "$dir" "$root"
    # A port taken between the check and the bind (another registry, a test) is tried again.
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
    rootdirectory: $root
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
        for _ in $(seq 200); do
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
                PIDS+=("$pid")
                echo "$pid" >"$dir/pid"
                REG="127.0.0.1:$port"
                return
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        grep -q "address already in use" "$dir/log" || break
    done
    echo "bench-push: registry $name did not start:" >&2
    cat "$dir/log" >&2
    exit 2
}

# Destination repository of a source repository (ferry's default mapping).
dest_repo() { case $1 in */*) echo "$1" ;; *) echo "library/$1" ;; esac; }

echo "bench-push: generating $((REPOS * TAGS)) images ($REPOS repositories x $TAGS tags, $BASE_LAYERS shared base layers of $BASE_KIB KiB, own layers of $UNIQUE_KIB KiB) in $WORK" >&2
"$TESTKIT" generate --out "$WORK/tree" --scenario bulk --seed "$SEED" \
    --repositories "$REPOS" --tags-per-repo "$TAGS" --base-layers "$BASE_LAYERS" \
    --base-layer-kib "$BASE_KIB" --unique-layer-kib "$UNIQUE_KIB" --tmpdir "$BENCH_TMPDIR" \
    --registry-log-level error
TREE="$WORK/tree"
TRUTH="$WORK/tree.truth.json"
V2="$TREE/docker/registry/v2"
IMAGES=$(jq '.tags | length' "$TRUTH")
UNIQUE_BLOBS=$(jq '[.tags[].blobs[]] | unique_by(.digest) | length' "$TRUTH")
UNIQUE_BYTES=$(jq '[.tags[].blobs[]] | unique_by(.digest) | map(.size) | add' "$TRUTH")
echo "bench-push: $IMAGES images, $UNIQUE_BLOBS unique blobs, $UNIQUE_BYTES bytes" >&2

# Checks that every tag is at the destination $1 with its digest.
verify() {
    local host=$1 bad=0 ref repo tag digest got
    while IFS=$'\t' read -r repo tag digest; do
        got=$(curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json' \
            "http://$host/v2/$(dest_repo "$repo")/manifests/$tag" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}')
        [ "$got" = "$digest" ] || { bad=$((bad + 1)); ref="$repo:$tag"; }
    done < <(jq -r '.tags[] | [.repository, .tag, .digest] | @tsv' "$TRUTH")
    if [ "$bad" -ne 0 ]; then echo "bench-push: $bad tags missing or wrong at $host (e.g. $ref)" >&2; exit 1; fi
}

# stop_registry NAME: stops it and removes its storage (after it was checked).
stop_registry() {
    local dir="$WORK/$1"
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -rf "$dir/storage"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ROUNDS=${ROUNDS:-3}

# 5. shards: N processes at once into one registry behind a counting proxy
shard_run() {
    local n=$1 round=$2 name="shards-$1-$2" k t pids=() addr bytes
    start_registry "$name"
    rm -f "$WORK/$name/proxy.addr"
    "$TESTKIT" proxy --backend "http://$REG" --addr-file "$WORK/$name/proxy.addr" --seconds 3600 &
    PIDS+=($!)
    echo $! >"$WORK/$name/proxy.pid"
    for _ in $(seq 200); do [ -s "$WORK/$name/proxy.addr" ] && break; sleep 0.05; done
    addr=$(cat "$WORK/$name/proxy.addr")
    t=$(now)
    for k in $(seq 0 $((n - 1))); do
        "$FERRY" push "$TREE" -d "http://$addr" -j "$JOBS" --shard "$k/$n" \
            -o "$WORK/$name/failed-$k.txt" 2>"$WORK/$name/ferry-$k.log" &
        pids+=($!)
    done
    for k in "${!pids[@]}"; do
        wait "${pids[$k]}" || { echo "bench-push: shard $k/$n failed:" >&2; tail -n 5 "$WORK/$name/ferry-$k.log" >&2; exit 1; }
    done
    SHARD_TIME=$(since "$t")
    SHARD_BYTES=$(curl -fsS "http://$addr/_testkit/counts" | jq .bytes)
    verify "$REG"
    kill "$(cat "$WORK/$name/proxy.pid")" 2>/dev/null || true
    stop_registry "$name"
}
declare -A SHARD_T SHARD_B
for n in $SHARDS; do
    times=() sizes=()
    for round in $(seq "$ROUNDS"); do
        shard_run "$n" "$round"
        times+=("$SHARD_TIME")
        sizes+=("$SHARD_BYTES")
        echo "bench-push: $n shards, round $round: $SHARD_TIME s, $SHARD_BYTES blob bytes uploaded" >&2
    done
    SHARD_T[$n]="$(median "${times[@]}") (${times[*]})"
    SHARD_B[$n]="$(median "${sizes[@]}") (${sizes[*]})"
done
print_shards() {
    local base n
    echo "bench-push: shard runs, $IMAGES images, $UNIQUE_BYTES unique blob bytes, -j $JOBS per process, $(nproc) cores, tree and registry in $BENCH_TMPDIR, bytes counted by the proxy in front of the registry, medians of $ROUNDS"
    printf '  %-3s %-28s %-44s %-10s %s\n' N "wall s (runs)" "blob bytes uploaded (runs)" "/ unique" "/ N=1"
    base=${SHARD_B[1]:-}; base=${base%% *}
    for n in $SHARDS; do
        printf '  %-3s %-28s %-44s %-10s %s\n' "$n" "${SHARD_T[$n]}" "${SHARD_B[$n]}" \
            "$(ratio "${SHARD_B[$n]%% *}" "$UNIQUE_BYTES")" "$( [ -n "$base" ] && ratio "${SHARD_B[$n]%% *}" "$base" || echo -)"
    done
}
if [ "$ONLY" = shard ]; then
    echo
    print_shards
    exit 0
fi

# 1 and 2. ferry push and the floor, ROUNDS times each, alternating, into fresh registries:
# this machine is shared, so single timings are noisy; the medians are compared.
FERRY_TIMES=()
FLOOR_TIMES=()
for round in $(seq "$ROUNDS"); do
    start_registry "ferry-dest-$round"
    t=$(now)
    "$FERRY" push "$TREE" -d "http://$REG" -j "$JOBS" -o "$WORK/failed.txt" --report "$WORK/ferry-report.json" 2>"$WORK/ferry.log"
    FERRY_TIMES+=("$(since "$t")")
    verify "$REG"
    tail -n 1 "$WORK/ferry.log" >&2
    stop_registry "ferry-dest-$round"

    start_registry "floor-dest-$round"
    t=$(now)
    "$TESTKIT" upload-floor --tree "$TREE" --truth "$TRUTH" --registry "http://$REG" -j "$JOBS"
    FLOOR_TIMES+=("$(since "$t")")
    stop_registry "floor-dest-$round"
done
T_FERRY=$(median "${FERRY_TIMES[@]}")
T_FLOOR=$(median "${FLOOR_TIMES[@]}")

blob() { local h=${1#sha256:}; echo "$V2/blobs/sha256/${h:0:2}/$h/data"; }

# 3. the shell-script way: dir: folders by hard links, skopeo sync per project
start_registry script-dest
t=$(now)
DIRS="$WORK/dirs"
while IFS=$'\t' read -r repo tag digest; do
    d="$DIRS/$(dest_repo "$repo"):$tag"
    mkdir -p "$d"
    ln "$(blob "$digest")" "$d/manifest.json"
    # One jq per manifest: "c <digest>" for a child manifest, "b <digest>" for a config or layer.
    while read -r kind b; do
        [ -e "$(blob "$b")" ] || continue # foreign layers
        if [ "$kind" = c ]; then
            ln "$(blob "$b")" "$d/${b#sha256:}.manifest.json"
            for c in $(jq -r '(.config.digest // empty), (.layers[]?.digest)' "$(blob "$b")"); do
                [ -e "$d/${c#sha256:}" ] || ln "$(blob "$c")" "$d/${c#sha256:}"
            done
        else
            [ -e "$d/${b#sha256:}" ] || ln "$(blob "$b")" "$d/${b#sha256:}"
        fi
    done < <(jq -r '(.manifests[]? | "c \(.digest)"), (.config.digest // empty | "b \(.)"), (.layers[]? | "b \(.digest)")' "$d/manifest.json")
    printf 'Directory Transport Version: 1.1\n' >"$d/version"
done < <(jq -r '.tags[] | [.repository, .tag, .digest] | @tsv' "$TRUTH")
T_LINK=$(since "$t")
for project in "$DIRS"/*/; do
    project=$(basename "$project")
    skopeo sync --all --preserve-digests --scoped --src dir --dest docker --dest-tls-verify=false \
        "$DIRS/$project" "$REG/$project" >"$WORK/sync-$project.log" 2>&1 ||
        { echo "bench-push: skopeo sync of $project failed:" >&2; tail "$WORK/sync-$project.log" >&2; exit 1; }
done
T_SCRIPT=$(since "$t")
verify "$REG"

# 4. skopeo copy docker→docker from a registry serving a hard-linked copy of the tree
cp -al "$TREE" "$WORK/served"
start_registry source "$WORK/served"
SRC=$REG
start_registry copy-dest
t=$(now)
jq -r '.tags[] | [.repository, .tag] | @tsv' "$TRUTH" |
    while IFS=$'\t' read -r repo tag; do echo "$repo:$tag $(dest_repo "$repo"):$tag"; done |
    xargs -P "$JOBS" -L 1 sh -c 'skopeo copy --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false --quiet "docker://$0/$2" "docker://$1/$3"' "$SRC" "$REG" >"$WORK/copy.log" 2>&1 ||
    { echo "bench-push: skopeo copy failed:" >&2; tail "$WORK/copy.log" >&2; exit 1; }
T_COPY=$(since "$t")
verify "$REG"

echo
echo "bench-push: $IMAGES images, $UNIQUE_BLOBS unique blobs, $UNIQUE_BYTES bytes, -j $JOBS, tree and registries in $BENCH_TMPDIR"
printf '  %-34s %8s s  (median of %s)\n' "ferry push" "$T_FERRY" "${FERRY_TIMES[*]}"
printf '  %-34s %8s s  (median of %s)\n' "floor (each unique blob once)" "$T_FLOOR" "${FLOOR_TIMES[*]}"
printf '  %-34s %8s s  (of which hard links: %s s)\n' "shell script (links + skopeo sync)" "$T_SCRIPT" "$T_LINK"
printf '  %-34s %8s s\n' "skopeo copy docker->docker" "$T_COPY"
echo "  ferry / floor:        $(ratio "$T_FERRY" "$T_FLOOR")  (target <= 1.3)"
echo "  script / ferry:       $(ratio "$T_SCRIPT" "$T_FERRY")  (target >= 4; without the hard-link step: $(ratio "$(awk -v a="$T_SCRIPT" -v b="$T_LINK" 'BEGIN { print a - b }')" "$T_FERRY"))"
echo "  skopeo copy / ferry:  $(ratio "$T_COPY" "$T_FERRY")"
echo "  script / floor:       $(ratio "$T_SCRIPT" "$T_FLOOR")"
echo
print_shards
