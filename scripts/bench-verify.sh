#!/usr/bin/env bash
# Benchmark (not a test): whole-process time of `ferry verify --all-blobs` against
# `openssl dgst -sha256` over the same blob files, one openssl process per core (the files split
# into balanced groups, largest first), median of ROUNDS runs each, warm page cache, runs
# alternating so both see the same machine. Target: ferry <= 1.3x openssl.
#
# Also times the read strategies (FERRY_VERIFY_READ: read:<KiB> buffers, mmap) and thread counts
# (-j 1, one per core, two per core), which is how the default strategy was chosen.
#
# The tree is a bulk scenario written by docker-registry: REPOS x TAGS images, each with its own
# UNIQUE_KIB layer and one or two of BASES shared BASE_KIB layers (default 32 x 4 x 8 MiB plus
# 8 x 16 MiB: 1.13 GiB). It must hold at least 1 GiB of blobs.
# Knobs (environment): REPOS (32) TAGS (4) UNIQUE_KIB (8192) BASES (8) BASE_KIB (16384)
# ROUNDS (5) STRATEGIES ("read:64 read:256 read:1024 read:4096 mmap") SEED (1)
# BENCH_TMPDIR (/var/tmp: a disk filesystem, read through the page cache) KEEP=1 keeps the tree;
# TREE=DIR uses a storage root generated before (by KEEP=1) instead of a new one.
# Needs openssl and GNU time (/usr/bin/time) for CPU seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=${REPOS:-32}
TAGS=${TAGS:-4}
UNIQUE_KIB=${UNIQUE_KIB:-8192}
BASES=${BASES:-8}
BASE_KIB=${BASE_KIB:-16384}
ROUNDS=${ROUNDS:-5}
STRATEGIES=${STRATEGIES:-read:64 read:256 read:1024 read:4096 mmap}
SEED=${SEED:-1}
CORES=$(nproc)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
for tool in openssl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-verify: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin ferry -p ferry
cargo build --release --quiet --bin ferry-testkit -p ferry-testkit
FERRY="$CARGO_TARGET_DIR/release/ferry"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/ferry-bench-verify.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "bench-verify: kept $WORK" >&2; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

if [ -n "${TREE:-}" ]; then
    V2="$TREE/docker/registry/v2"
else
    "$CARGO_TARGET_DIR/release/ferry-testkit" generate --scenario bulk --seed "$SEED" \
        --repositories "$REPOS" --tags-per-repo "$TAGS" --unique-layer-kib "$UNIQUE_KIB" \
        --base-layers "$BASES" --base-layer-kib "$BASE_KIB" --out "$WORK/tree" >&2
    V2="$WORK/tree/docker/registry/v2"
fi

# The blob files, largest first, dealt into one group per core (each to the lightest group).
find "$V2/blobs" -name data -type f -printf '%s %p\n' | sort -rn >"$WORK/files"
FILES=$(wc -l <"$WORK/files")
BYTES=$(awk '{s += $1} END {print s}' "$WORK/files")
if [ "$BYTES" -lt $((1 << 30)) ]; then
    echo "bench-verify: the tree holds $BYTES bytes of blobs; at least 1 GiB is needed" >&2
    exit 2
fi
awk -v n="$CORES" -v dir="$WORK" '{
    b = 0; for (i = 1; i < n; i++) if (load[i] < load[b]) b = i
    load[b] += $1; print $2 > (dir "/group" b)
}' "$WORK/files"
cat >"$WORK/openssl.sh" <<EOF
#!/usr/bin/env bash
for g in "$WORK"/group*; do xargs openssl dgst -sha256 <"\$g" >/dev/null & done
wait
EOF
chmod +x "$WORK/openssl.sh"

# The same answer both ways: ferry hashes every file (all intact), openssl digests match names.
"$FERRY" verify "$V2" --all-blobs --format json -o "$WORK/failed" >"$WORK/verify.json" 2>/dev/null
checked=$(grep -m1 '"checked"' "$WORK/verify.json" | tr -dc 0-9)
[ "$checked" = "$FILES" ] || { echo "bench-verify: ferry checked $checked of $FILES blobs" >&2; exit 1; }
wrong=$(xargs openssl dgst -sha256 -r <"$WORK/group0" | awk '{split($2, p, "/"); if ($1 != p[length(p) - 1]) print}')
[ -z "$wrong" ] || { echo "bench-verify: openssl disagrees: $wrong" >&2; exit 1; }
cat $(cut -d' ' -f2 "$WORK/files") >/dev/null # warm the page cache

# run NAME CMD...: one timed run, appended to $WORK/t.NAME as "wall_ms cpu_ms".
run() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$@" >/dev/null 2>&1
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000000)) $(awk '{printf "%d", ($1 + $2) * 1000}' "$WORK/cpu")" >>"$WORK/t.$name"
}
variants=("openssl" "ferry" "ferry-j1" "ferry-j$((2 * CORES))")
for s in $STRATEGIES; do variants+=("ferry-$s"); done
one() {
    case $1 in
    openssl) run "$1" "$WORK/openssl.sh" ;;
    ferry) run "$1" "$FERRY" verify "$V2" --all-blobs -q -o "$WORK/failed" ;;
    ferry-j*) run "$1" "$FERRY" verify "$V2" --all-blobs -q -o "$WORK/failed" -j "${1#ferry-j}" ;;
    ferry-*) run "$1" env FERRY_VERIFY_READ="${1#ferry-}" "$FERRY" verify "$V2" --all-blobs -q -o "$WORK/failed" ;;
    esac
}
for v in "${variants[@]}"; do one "$v"; rm -f "$WORK/t.$v"; done # warm-up
for _ in $(seq "$ROUNDS"); do
    for v in "${variants[@]}"; do one "$v"; done
done

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2))}'; }
wall() { cut -d' ' -f1 "$WORK/t.$1" | median; }
cpu() { cut -d' ' -f2 "$WORK/t.$1" | median; }
base=$(wall openssl)
echo "tree: $FILES blobs, $BYTES bytes; $CORES cores; $ROUNDS rounds; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %10s %10s %8s %10s\n' "" "wall ms" "cpu ms" "x openssl" "GB/s"
for v in "${variants[@]}"; do
    w=$(wall "$v")
    awk -v name="$v" -v w="$w" -v c="$(cpu "$v")" -v b="$base" -v bytes="$BYTES" \
        'BEGIN { printf "%-26s %10d %10d %8.2f %10.2f\n", name, w, c, w / b, bytes / w / 1e6 }'
done
echo "ferry = default strategy ($("$FERRY" --version)), one thread per core; target: ferry <= 1.3x openssl"
