#!/usr/bin/env bash
# Sets up what is missing, builds, and runs the whole test suite (unit, property,
# end-to-end tests that start the real binaries on loopback).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
source "$here/env.sh"
cd "$WEFT_ROOT"
echo "[test] cargo test --release --workspace"
cargo test --release --workspace --locked -- --test-threads "${WEFT_TEST_THREADS:-2}"
echo "[test] all tests passed"
