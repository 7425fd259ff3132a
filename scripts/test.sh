#!/usr/bin/env bash
# Sets up what is missing, builds, and runs the whole test suite (unit, property,
# end-to-end tests that start the real binaries on loopback).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The setup builds nothing here: the tests need the binaries built once, with the test-only
# `weft-adversary` (feature weft-trainer/adversary) and `weft-equivocator` (feature
# weft-node/equivocate), and one build serves both.
WEFT_SKIP_BUILD=1 "$here/setup.sh"
source "$here/env.sh"
cd "$WEFT_ROOT"
features=(--features weft-trainer/adversary,weft-node/equivocate)
echo "[test] cargo build --release --workspace --bins ${features[*]}"
cargo build --release --workspace --bins --locked "${features[@]}"
echo "[test] cargo test --release --workspace ${features[*]}"
cargo test --release --workspace --locked "${features[@]}" -- --test-threads "${WEFT_TEST_THREADS:-2}"
echo "[test] all tests passed"
