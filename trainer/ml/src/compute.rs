//! The [`ComputeClass`] of this process: what a trainer declares with each commitment and
//! what an auditor compares it with (see `weft_primitives::compute` for the rule).
//!
//! The CPU instruction set is the one ATen dispatches its kernels to: `ATEN_CPU_CAPABILITY`
//! when set (`default`, `avx2`, `avx512`), else AVX-512 when the CPU has F, BW, VL and DQ,
//! AVX2 when it has AVX2 and FMA, the baseline otherwise; 64-bit ARM is one class. The thread
//! count is libtorch's intra-op thread count at the time of the call.

use tch::Device;
pub use weft_primitives::compute::{cpu_arch, ComputeClass, DeviceKind, Precision};

/// The libtorch this build links: `tch = "0.24"` is built against libtorch 2.11.0 (the
/// pin in the workspace and `scripts/setup.sh`).
pub const LIBTORCH_VERSION: u32 = 21_100;

/// The instruction set ATen dispatches CPU kernels to on this machine.
pub fn this_cpu_arch() -> u16 {
    if let Ok(forced) = std::env::var("ATEN_CPU_CAPABILITY") {
        let x86 = cfg!(target_arch = "x86_64");
        return match forced.to_ascii_lowercase().as_str() {
            "default" if x86 => cpu_arch::X86_DEFAULT,
            "avx2" if x86 => cpu_arch::X86_AVX2,
            "avx512" if x86 => cpu_arch::X86_AVX512,
            _ => cpu_arch::UNKNOWN,
        };
    }
    detected_cpu_arch()
}

#[cfg(target_arch = "x86_64")]
fn detected_cpu_arch() -> u16 {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
        cpu_arch::X86_AVX512
    } else if has!("avx2") && has!("fma") {
        cpu_arch::X86_AVX2
    } else {
        cpu_arch::X86_DEFAULT
    }
}

#[cfg(target_arch = "aarch64")]
fn detected_cpu_arch() -> u16 {
    cpu_arch::ARM64
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detected_cpu_arch() -> u16 {
    cpu_arch::UNKNOWN
}

/// The class of steps computed now on `device`, with bf16 autocast when `bf16_autocast`
/// (autocast applies on CUDA only).
pub fn class_of(device: Device, bf16_autocast: bool) -> ComputeClass {
    match device {
        Device::Cpu => ComputeClass {
            device: DeviceKind::Cpu,
            arch: this_cpu_arch(),
            threads: u16::try_from(tch::get_num_threads().max(0)).unwrap_or(u16::MAX),
            precision: Precision::Fp32,
            libtorch: LIBTORCH_VERSION,
        },
        _ => ComputeClass {
            device: DeviceKind::Cuda,
            arch: 0,
            threads: 0,
            precision: if bf16_autocast {
                Precision::Bf16Autocast
            } else {
                Precision::Fp32
            },
            libtorch: LIBTORCH_VERSION,
        },
    }
}

/// Whether a recomputation on `device` in this process can reproduce `declared` bit for
/// bit: a reproducible CPU class ([`ComputeClass::is_exact_capable`]) equal to this
/// machine's, once the thread count is set to the declared one.
pub fn reproducible_here(declared: &ComputeClass, device: Device) -> bool {
    device == Device::Cpu
        && declared.is_exact_capable()
        && ComputeClass {
            threads: declared.threads,
            ..class_of(Device::Cpu, false)
        } == *declared
}

/// Runs `f` with libtorch's intra-op thread count set to `threads` (restored afterwards);
/// `None` leaves it as it is. The count is process-global: callers that recompute
/// concurrently must serialise around this.
pub fn with_threads<T>(threads: Option<u16>, f: impl FnOnce() -> T) -> T {
    let Some(n) = threads else { return f() };
    let before = tch::get_num_threads();
    tch::set_num_threads(i32::from(n));
    let out = f();
    tch::set_num_threads(before);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_class_is_reproducible_and_follows_the_thread_count() {
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = class_of(Device::Cpu, false);
        tch::set_num_threads(2);
        let two = class_of(Device::Cpu, true);
        tch::set_num_threads(before);
        assert_eq!((one.threads, two.threads), (1, 2));
        assert_eq!(one.precision, Precision::Fp32, "autocast is CUDA-only");
        assert_eq!(two.precision, Precision::Fp32);
        assert_eq!(one.arch, two.arch);
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(one.is_exact_capable(), "{one:?}");
        }
        let cuda = class_of(Device::Cuda(0), true);
        assert_eq!(
            (cuda.device, cuda.precision),
            (DeviceKind::Cuda, Precision::Bf16Autocast)
        );
        assert!(!cuda.is_exact_capable());
        // This machine reproduces its own CPU class at any declared thread count, on CPU.
        if one.is_exact_capable() {
            let four = ComputeClass { threads: 4, ..one };
            assert!(reproducible_here(&four, Device::Cpu));
            assert!(!reproducible_here(&four, Device::Cuda(0)));
            let other = ComputeClass {
                libtorch: LIBTORCH_VERSION + 1,
                ..one
            };
            assert!(!reproducible_here(&other, Device::Cpu));
            assert_eq!(with_threads(Some(3), tch::get_num_threads), 3);
        }
        assert!(!reproducible_here(&ComputeClass::UNDECLARED, Device::Cpu));
    }
}
