#!/usr/bin/env bash
# Runs ferry's checks on a fresh machine: installs the real parts the tests use (Debian's
# docker-registry and skopeo, curl, zstd and xz; kubernetes-validate from PyPI) when missing,
# then the tests, clippy and rustfmt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The tarball tests make archives with the system tar: gzip, zstd and xz.
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

# kubernetes-validate (PyPI) checks deploy/kubernetes/ in the tests; a venv keeps it off the system Python.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    venv="${FERRY_TOOLS_VENV:-$HOME/.cache/ferry-test-tools}"
    if [ ! -x "$venv/bin/kubernetes-validate" ]; then
        echo "scripts/test.sh: installing kubernetes-validate (pip) into $venv" >&2
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            $sudo apt-get update
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y python3 python3-venv
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
        "$venv/bin/python3" -m pip install --quiet "kubernetes-validate==1.37.0"
    fi
    export PATH="$venv/bin:$PATH"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
