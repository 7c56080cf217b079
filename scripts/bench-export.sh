#!/usr/bin/env bash
# Benchmark (not a test): `ferry export` (skopeo dir: layout by hard links) vs the seed shell
# script people use today (a bash loop over every tag's current/link, jq for the config and
# layer digests, one `ln` per blob), whole-process wall time, median of 5, output folder
# removed before every run (not timed).
#
# The tree is a bulk scenario written by docker-registry with every repository at two levels
# (teamN/svc-M) and single-arch images only, because the script (like the original) globs
# repositories/*/* and reads .layers: it drops single-component and deeper names and breaks
# on manifest lists. On this tree both do the same work.
#
# Usage: scripts/bench-export.sh [REPOSITORIES] [TAGS_PER_REPO]   (default 100 × 4 = 400 images)
# Environment: BENCH_TMPDIR (default /dev/shm: tree and outputs share it, so hard links work),
# JOBS (ferry -j, default 4), KEEP=1 keeps the work folder. Needs jq.
set -euo pipefail
cd "$(dirname "$0")/.."
repos=${1:-100}
tags=${2:-4}
jobs=${JOBS:-4}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v jq >/dev/null || { echo "bench-export: needs jq" >&2; exit 2; }

work=$(mktemp -d "${BENCH_TMPDIR:-/dev/shm}/ferry-bench-export.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT

cargo build --release --quiet --bin ferry -p ferry
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
ferry="$CARGO_TARGET_DIR/release/ferry"
FERRY_TESTKIT_TMPDIR=${FERRY_TESTKIT_TMPDIR:-$work} "$CARGO_TARGET_DIR/release/ferry-testkit" generate \
    --scenario bulk --flat --repositories "$repos" --tags-per-repo "$tags" --out "$work/tree"
v2="$work/tree/docker/registry/v2"
images=$(find "$v2/repositories" -path '*/current/link' | wc -l)
echo "images in tree: $images" >&2

# The seed workflow, written the simple way it is found in the wild.
cat >"$work/seed.sh" <<'EOF'
#!/usr/bin/env bash
# seed.sh V2 OUT: hard-link every tag's manifest and blobs into OUT/<repo>:<tag>/ for skopeo dir:
v2=$1 out=$2
for link in "$v2"/repositories/*/*/_manifests/tags/*/current/link; do
    tagdir=${link%/current/link}
    tag=${tagdir##*/}
    repodir=${tagdir%/_manifests/tags/*}
    repo=${repodir#"$v2"/repositories/}
    digest=$(cat "$link")
    hex=${digest#sha256:}
    manifest="$v2/blobs/sha256/${hex:0:2}/$hex/data"
    dest="$out/$repo:$tag"
    mkdir -p "$dest"
    ln "$manifest" "$dest/manifest.json"
    for d in $(jq -r '.config.digest, .layers[].digest' "$manifest"); do
        h=${d#sha256:}
        ln "$v2/blobs/sha256/${h:0:2}/$h/data" "$dest/$h"
    done
    echo "Directory Transport Version: 1.1" >"$dest/version"
done
EOF

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# time_it OUT CMD...: median wall ms of 5 runs after one warm-up; OUT (unless "-") removed
# before each run.
clean() { if [ "$1" != - ]; then rm -rf "$1"; fi; }
time_it() {
    local out=$1
    shift
    clean "$out"
    "$@" >/dev/null 2>&1
    for _ in 1 2 3 4 5; do
        clean "$out"
        sync
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000))
    done | median
}
folders() { find "$1" -name manifest.json | wc -l; }

out="$work/out"
ferry_ms=$(time_it "$out" "$ferry" export "$v2" --out "$out" -j "$jobs" -q -o "$work/failed.txt")
ferry_folders=$(folders "$out")
verify_ms=$(time_it "$out" "$ferry" export "$v2" --out "$out" -j "$jobs" -q --verify -o "$work/failed.txt")
rerun_ms=$(time_it - "$ferry" export "$v2" --out "$out" -j "$jobs" -q -o "$work/failed.txt")
script_ms=$(time_it "$out" bash "$work/seed.sh" "$v2" "$out")
script_folders=$(folders "$out")

echo "images: $images; folders written: ferry $ferry_folders, script $script_folders"
row() { printf '%-32s: %s ms (median of 5)\n' "$1" "$2"; }
row "ferry export -j $jobs" "$ferry_ms"
row "ferry export -j $jobs --verify" "$verify_ms"
row "ferry export again (all there)" "$rerun_ms"
row "seed script (bash, jq, ln)" "$script_ms"
awk -v a="$ferry_ms" -v b="$script_ms" 'BEGIN { printf "%-32s: %.1fx\n", "script / ferry", (a > 0 ? b / a : 0) }'
