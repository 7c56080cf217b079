#!/usr/bin/env bash
# Regenerates testdata/registry/ (a storage tree written by a real docker-registry,
# Distribution 2.8) and testdata/registry.truth.json with the standard scenario, seed 1.
# Needs /usr/bin/docker-registry (Debian package docker-registry).
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --quiet -p ferry-testkit --bin ferry-testkit
"$CARGO_TARGET_DIR/debug/ferry-testkit" generate \
    --out testdata/registry --scenario standard --seed 1 --force

# git keeps no empty folders (the empty _uploads/ of each repository): list them.
files=$(find testdata/registry -type f | wc -l)
bytes=$(find testdata/registry -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
empty=$(find testdata/registry -type d -empty)
echo "testdata/registry: $files files, $bytes bytes of content; empty folders git will not keep:" >&2
echo "${empty:-  (none)}" | sed 's/^/  /' >&2
