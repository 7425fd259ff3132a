#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks, then builds the release binaries.
# Idempotent: each step checks first, so a second run takes seconds.
#
#   system packages  clang/libclang (rocksdb's bindgen), mold (linker), pkg-config,
#                    fortunes (the demo corpus), python3-venv, procps (kill, for tests),
#                    chromium (headless, for the dashboard's browser tests)
#   Rust             stable toolchain via rustup, if cargo is missing
#   libtorch         PyTorch 2.11.0 from PyPI in .venv (tch 0.24 builds against it)
#   openai           the OpenAI Python client 1.109.1 in .venv (tests of `weft gateway`)
#   binaries         weft-node, weft, weft-trainer (cargo build --release)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

packages=(build-essential clang libclang-dev mold pkg-config git curl ca-certificates python3 python3-venv procps fortunes fortunes-min chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "installing the Rust toolchain (rustup, stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi

torch_ok() {
  "$WEFT_VENV/bin/python" -c 'import torch,sys; sys.exit(0 if torch.__version__.split("+")[0]=="2.11.0" else 1)' 2>/dev/null
}
if ! torch_ok; then
  log "installing PyTorch 2.11.0 into $WEFT_VENV (libtorch for the trainer; ~4.6 GB)"
  python3 -m venv "$WEFT_VENV"
  "$WEFT_VENV/bin/pip" install -q --upgrade pip
  "$WEFT_VENV/bin/pip" install -q torch==2.11.0
  torch_ok || { echo "PyTorch 2.11.0 did not install" >&2; exit 1; }
fi
# The OpenAI Python client: the end-to-end test of `weft gateway` drives it unchanged.
openai_version=1.109.1
openai_ok() {
  "$WEFT_VENV/bin/python" -c "import openai,sys; sys.exit(0 if openai.__version__=='$openai_version' else 1)" 2>/dev/null
}
if ! openai_ok; then
  log "installing the OpenAI Python client $openai_version into $WEFT_VENV"
  "$WEFT_VENV/bin/pip" install -q "openai==$openai_version"
  openai_ok || { echo "openai $openai_version did not install" >&2; exit 1; }
fi
# The demo corpus: Debian's fortunes as plain UTF-8 text files (the .dat indexes and .u8
# links are left out).
corpus="$WEFT_ROOT/data/fortunes"
if [ ! -s "$WEFT_ROOT/data/fortunes.complete" ]; then
  log "preparing the demo corpus in $corpus"
  mkdir -p "$corpus"
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && iconv -f utf-8 -t utf-8 -c "$f" > "$corpus/$(basename "$f").txt"
  done
  ls "$corpus" | wc -l > "$WEFT_ROOT/data/fortunes.complete"
fi

# Re-read the environment now that torch's lib/ exists.
source "$here/env.sh"

if [ "${WEFT_SKIP_BUILD:-0}" != "1" ]; then
  log "building release binaries (target dir $CARGO_TARGET_DIR)"
  (cd "$WEFT_ROOT" && cargo build --release --workspace --bins --locked)
fi
log "ready: $WEFT_BIN/weft-node, $WEFT_BIN/weft, $WEFT_BIN/weft-trainer"
