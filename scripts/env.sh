# Sourced by the other scripts: one place for the build environment, so that every build
# (setup, demo, tests, CI) uses identical flags and reuses one target directory.
WEFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WEFT_ROOT
# A target directory outside the clone, reused across clones and CI runs when present.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
# libtorch comes from the PyTorch wheel in the project-local venv (tch 0.24 <-> torch 2.11.0).
export WEFT_VENV="${WEFT_VENV:-$WEFT_ROOT/.venv}"
export LIBTORCH_USE_PYTORCH=1
export PATH="$WEFT_VENV/bin:$HOME/.cargo/bin:$PATH"
if [ -d "$WEFT_VENV/lib" ]; then
  torch_lib="$(ls -d "$WEFT_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1)"
  if [ -n "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
export WEFT_BIN="$CARGO_TARGET_DIR/release"
