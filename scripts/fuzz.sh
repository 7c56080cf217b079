#!/usr/bin/env bash
# Fuzzes ferry's parsers of untrusted bytes with cargo-fuzz (libFuzzer) for a bounded time.
# Not part of CI: cargo-fuzz needs a nightly toolchain. Without one this script says so and exits 2.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s each, every target)
# Targets (fuzz/fuzz_targets/): link (link files, digests, Retry-After), manifest (manifest
# classification, config platforms), auth (WWW-Authenticate, token answers, auth files),
# image_list (--images lines, failed-list lines, references), tar (tar headers, members, the
# tree read from them). Seeds come from testdata/registry; findings land in fuzz/artifacts/TARGET/
# (reproduce: cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…).
# Installs cargo-fuzz (cargo install) when it is missing. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(link manifest auth image_list tar)

toolchain=${FUZZ_TOOLCHAIN:-nightly}
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    cat >&2 <<MSG
scripts/fuzz.sh: no $toolchain Rust toolchain here, and cargo-fuzz needs one (libFuzzer and the
sanitizers are nightly-only). Nothing was fuzzed. Install one with
    rustup toolchain install nightly
or name another with FUZZ_TOOLCHAIN=nightly-YYYY-MM-DD. The property tests (src/properties.rs,
part of cargo test) cover the same parsers on stable; PROPTEST_CASES=20000 runs them longer.
MSG
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi
echo "scripts/fuzz.sh: $(rustup run "$toolchain" rustc --version), $(cargo fuzz --version); ${seconds}s per target: ${targets[*]}" >&2

# Seeds: link files, manifests and configs of the committed tree, a tar of it, list lines.
seed() {
    local target=$1 dir="fuzz/corpus/$1"
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || return 0
    local v2=testdata/registry/docker/registry/v2
    case $target in
        link)
            find "$v2/repositories" -name link | head -n 50 | while read -r f; do cp "$f" "$dir/$(echo "$f" | sha256sum | cut -c1-16)"; done
            printf '120' >"$dir/retry-seconds"
            printf 'Wed, 21 Oct 2026 07:28:00 GMT' >"$dir/retry-date" ;;
        manifest)
            find "$v2/blobs" -name data -size -64k | while read -r f; do
                if head -c 1 "$f" | grep -q '{'; then cp "$f" "$dir/$(basename "$(dirname "$f")" | cut -c1-16)"; fi
            done ;;
        auth)
            printf 'Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"' >"$dir/bearer"
            printf 'Basic realm="registry"' >"$dir/basic"
            printf '{"token":"abc","expires_in":300}' >"$dir/token"
            printf '{"auths":{"reg.example:5000":{"auth":"dXNlcjpwYXNz"}}}' >"$dir/authfile" ;;
        image_list)
            printf 'alpine:3.19\norg/team/app@sha256:%064d\n# comment\n"alpine:3.19\\nx"\n{"repository":"a:b","tag":"c"}\n' 0 >"$dir/list" ;;
        tar)
            tar -cf "$dir/tree.tar" -C testdata/registry docker/registry/v2/repositories/alpine
            tar -cf "$dir/small.tar" -C testdata registry.truth.json ;;
    esac
}

found=0
for target in "${targets[@]}"; do
    seed "$target"
    mkdir -p "fuzz/artifacts/$target"
    echo "scripts/fuzz.sh: fuzzing $target for ${seconds}s" >&2
    if ! cargo "+$toolchain" fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="fuzz/artifacts/$target/" 2>"fuzz/artifacts/$target.log"; then
        echo "scripts/fuzz.sh: $target FOUND something: see fuzz/artifacts/$target/ and fuzz/artifacts/$target.log" >&2
        tail -n 30 "fuzz/artifacts/$target.log" >&2
        found=1
    else
        grep -E '^Done|#[0-9]+.*DONE' "fuzz/artifacts/$target.log" | tail -n 1 >&2 || true
    fi
done
exit "$found"
