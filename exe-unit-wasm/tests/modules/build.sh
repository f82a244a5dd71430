#!/usr/bin/env bash
# Rebuild the .wasm test modules from their WAT sources with wabt's wat2wasm
# (apt-get install wabt). The tests themselves compile the .wat files with the
# `wat` crate, so this is only for running the modules by hand.
set -euo pipefail
cd "$(dirname "$0")"
for source in *.wat; do
    wat2wasm --enable-bulk-memory "$source" -o "${source%.wat}.wasm"
done
