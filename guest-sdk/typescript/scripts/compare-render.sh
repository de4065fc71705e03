#!/usr/bin/env bash
# The TypeScript cache port against the built-in Rust cache plugin, through
# atoll's real sandbox and output policy: `atoll render` of the same
# Databases with the built-in and with dist/cache.wasm (which replaces the
# built-in of the same name) must print the same bytes. Run from anywhere
# after `npm run build:cache`; uses `cargo run -p atoll`, or $ATOLL_BIN.
set -euo pipefail
sdk="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$sdk/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/plugins"
cp "$sdk/dist/cache.wasm" "$work/plugins/cache.wasm"
cd "$root"
if [ -n "${ATOLL_BIN:-}" ]; then atoll=("$ATOLL_BIN"); else atoll=(cargo run --quiet -p atoll --); fi
# One sealed plugin cache for the four renders: each component (the five
# built-ins, the 12 MB port) is compiled once, not at every render.
head -c 32 /dev/urandom > "$work/cache.key"
export ATOLL_PLUGIN_CACHE_KEY_FILE="$work/cache.key" ATOLL_PLUGIN_CACHE_DIR="$work/cache"
for manifest in examples/cache.yaml guest-sdk/typescript/test/fixtures/cache-databases.yaml; do
    "${atoll[@]}" render -f "$manifest" -o json > "$work/rust.json"
    "${atoll[@]}" render -f "$manifest" -o json --plugin-dir "$work/plugins" > "$work/ts.json"
    diff -u "$work/rust.json" "$work/ts.json" \
        || { echo "the TypeScript cache port renders $manifest differently (above)" >&2; exit 1; }
    echo "$manifest: identical ($(wc -c < "$work/ts.json") bytes)"
done
