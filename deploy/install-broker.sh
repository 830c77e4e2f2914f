#!/usr/bin/env bash
# Installs the nisshi Kafka-protocol broker (formerly tansu) from crates.io, once.
#
# Usage: NISSHI=$(deploy/install-broker.sh | tail -1)
#
# The binary lands in ${OMNIFOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omnifold}/nisshi-0.7.0/bin.
# Progress goes to stderr; the last line on stdout is the binary's path.
# Idempotent, and safe to run concurrently: a flock makes a second caller wait
# for the first build instead of starting its own.
set -euo pipefail

readonly NISSHI_VERSION=0.7.0

cache_dir="${OMNIFOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omnifold}"
root="$cache_dir/nisshi-$NISSHI_VERSION"
binary="$root/bin/nisshi"

log() { printf 'install-broker: %s\n' "$*" >&2; }

installed() {
    [[ -x "$binary" ]] && "$binary" --version >/dev/null 2>&1
}

install() {
    log "building nisshi $NISSHI_VERSION into $root"
    log "this takes ~12 minutes the first time on 2 idle cores (measured 33 alongside other builds); later calls return at once"
    # cargo's own progress goes to stderr; keep stdout for the path alone
    cargo install "nisshi@$NISSHI_VERSION" --locked --ignore-rust-version \
        --features dynostore,libsql --root "$root" 1>&2
}

main() {
    if ! installed; then
        mkdir -p "$cache_dir"
        exec 9>"$cache_dir/nisshi-$NISSHI_VERSION.lock"
        if ! flock -n 9; then
            log "another install is running, waiting for it"
            flock 9
        fi
        # the holder of the lock before us may have finished the build
        installed || install
        installed || { log "nisshi did not install: $binary does not run"; exit 1; }
    fi
    printf '%s\n' "$binary"
}

main "$@"
