#!/usr/bin/env bash
# Benchmark (not a test): `ferry list --format json` vs `find … -path '*/current/link' | wc -l`
# on a generated tree of at least 2,000 tags, whole-process, median of 5.
# Usage: scripts/bench-list.sh [REPOSITORIES] [TAGS_PER_REPO]   (default 200 × 10)
set -euo pipefail
cd "$(dirname "$0")/.."
repos=${1:-200}
tags=${2:-10}
work=$(mktemp -d "${BENCH_TMPDIR:-/dev/shm}/ferry-bench-list.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --workspace
ferry=target/release/ferry
FERRY_TESTKIT_TMPDIR=${FERRY_TESTKIT_TMPDIR:-/dev/shm} target/release/ferry-testkit generate \
    --scenario bulk --repositories "$repos" --tags-per-repo "$tags" --out "$work/tree"
root="$work/tree"
echo "tags in tree: $(find "$root" -path '*/current/link' | wc -l)" >&2

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_it() { # prints the median wall time in ms of 5 runs of "$@" (after one warm-up)
    "$@" >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5; do
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || true
        t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000000 ))
    done | median
}

ferry_ms=$(time_it "$ferry" list "$root" --format json)
find_ms=$(time_it bash -c "find '$root' -path '*/current/link' | wc -l")
echo "ferry list --format json : ${ferry_ms} ms (median of 5)"
echo "find | wc -l             : ${find_ms} ms (median of 5)"
awk -v a="$ferry_ms" -v b="$find_ms" 'BEGIN { printf "ratio ferry/find         : %.2f\n", (b > 0 ? a / b : 0) }'
