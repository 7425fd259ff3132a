//! Makes the trainer's binaries (and test binaries) depend on `libtorch_cuda` when the
//! libtorch they build against has it.
//!
//! Nothing in tch calls into `libtorch_cuda` directly: its CUDA kernels register themselves
//! when the library is loaded. Linkers that default to `--as-needed` therefore drop it and
//! the trainer silently sees no GPU. torch-sys (`links = "tch"`) tells us where libtorch
//! lives; if `libtorch_cuda.so` is there, force a reference to one of its symbols
//! (`at::cuda::getCurrentCUDABlasHandle()`), which keeps it. (`--no-as-needed` does not help:
//! the library already appears earlier on the command line as needed-only, and mold keeps
//! the first occurrence.)

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    if linux && PathBuf::from(dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--undefined=_ZN2at4cuda24getCurrentCUDABlasHandleEv");
    }
}
