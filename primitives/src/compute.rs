//! The compute class a step was computed under, declared with every commitment.
//!
//! An honest recomputation is **bit-exact** when it runs the same kernels in the same order:
//! the same libtorch build, the same device kind and vector instruction set, the same
//! floating-point mode and, on CPU, the same number of intra-op threads (a different count
//! changes how reductions are split; measured in `docs/audit-divergence.md`). A trainer
//! declares those settings as a [`ComputeClass`] with each `commit_step`; an auditor that can
//! reproduce the class recomputes under it and requires equality, bit for bit. Only across
//! classes does the run's tolerance apply.
//!
//! What counts as reproducible ([`ComputeClass::is_exact_capable`]): a CPU class with a known
//! libtorch version and instruction set. CUDA classes are always judged with the tolerance:
//! cuBLAS and cuDNN choose algorithms at run time and the trainer does not pin them.
//!
//! The SCALE layout is fixed (locked by a test): `device (1 byte, index) ‖ arch (u16 LE) ‖
//! threads (u16 LE) ‖ precision (1 byte, index) ‖ libtorch (u32 LE)`, 10 bytes.

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};

/// The kind of device.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum DeviceKind {
    /// A CPU.
    #[codec(index = 0)]
    Cpu,
    /// An NVIDIA GPU through CUDA.
    #[codec(index = 1)]
    Cuda,
}

/// The floating-point mode of the step's arithmetic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    /// IEEE fp32 throughout.
    #[codec(index = 0)]
    Fp32,
    /// fp32 storage, TF32 matrix products (CUDA).
    #[codec(index = 1)]
    Tf32,
    /// bf16 autocast of the matrix products, fp32 master weights and optimiser.
    #[codec(index = 2)]
    Bf16Autocast,
}

/// The vector instruction set ATen dispatches CPU kernels to (`ComputeClass::arch` on CPU).
pub mod cpu_arch {
    /// Unknown: never reproducible.
    pub const UNKNOWN: u16 = 0;
    /// x86-64 without AVX2 (ATen's `DEFAULT`).
    pub const X86_DEFAULT: u16 = 0x0100;
    /// x86-64 with AVX2 and FMA.
    pub const X86_AVX2: u16 = 0x0101;
    /// x86-64 with AVX-512 (F, BW, VL, DQ).
    pub const X86_AVX512: u16 = 0x0102;
    /// 64-bit ARM (NEON).
    pub const ARM64: u16 = 0x0200;
}

/// The settings a step was computed under (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, MaxEncodedLen, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeClass {
    /// The device kind.
    pub device: DeviceKind,
    /// CPU: the instruction set ([`cpu_arch`]); CUDA: the compute capability × 10 (0 when
    /// unknown).
    pub arch: u16,
    /// Intra-op threads on CPU; 0 on CUDA.
    pub threads: u16,
    /// The floating-point mode.
    pub precision: Precision,
    /// The libtorch version, `major × 10 000 + minor × 100 + patch`; 0 when unknown.
    pub libtorch: u32,
}

impl ComputeClass {
    /// A class that declares nothing reproducible (what a client without a model, such as
    /// the `weft` CLI's scripted commitments, declares): always judged with the tolerance.
    pub const UNDECLARED: ComputeClass = ComputeClass {
        device: DeviceKind::Cpu,
        arch: cpu_arch::UNKNOWN,
        threads: 0,
        precision: Precision::Fp32,
        libtorch: 0,
    };

    /// Whether an auditor can hope to reproduce this class bit for bit: a CPU class with a
    /// known instruction set, thread count and libtorch version.
    pub fn is_exact_capable(&self) -> bool {
        self.device == DeviceKind::Cpu
            && self.arch != cpu_arch::UNKNOWN
            && self.threads > 0
            && self.libtorch != 0
    }

    /// A short human-readable form, e.g. `cpu/x86-avx2/fp32/1 thread/libtorch 2.11.0`.
    pub fn describe(&self) -> String {
        let device = match self.device {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        };
        let arch = match (self.device, self.arch) {
            (DeviceKind::Cpu, cpu_arch::X86_DEFAULT) => "x86".to_string(),
            (DeviceKind::Cpu, cpu_arch::X86_AVX2) => "x86-avx2".to_string(),
            (DeviceKind::Cpu, cpu_arch::X86_AVX512) => "x86-avx512".to_string(),
            (DeviceKind::Cpu, cpu_arch::ARM64) => "arm64".to_string(),
            (DeviceKind::Cuda, a) if a > 0 => format!("sm_{a}"),
            _ => "unknown".to_string(),
        };
        let precision = match self.precision {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16Autocast => "bf16-autocast",
        };
        let v = self.libtorch;
        format!(
            "{device}/{arch}/{precision}/{} thread(s)/libtorch {}.{}.{}",
            self.threads,
            v / 10_000,
            v / 100 % 100,
            v % 100
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_layout_is_fixed() {
        let c = ComputeClass {
            device: DeviceKind::Cuda,
            arch: 0x0102,
            threads: 3,
            precision: Precision::Bf16Autocast,
            libtorch: 21_100,
        };
        assert_eq!(
            c.encode(),
            vec![1, 0x02, 0x01, 3, 0, 2, 0x6c, 0x52, 0, 0],
            "device ‖ arch ‖ threads ‖ precision ‖ libtorch"
        );
        assert_eq!(ComputeClass::max_encoded_len(), 10);
        assert_eq!(ComputeClass::decode(&mut &c.encode()[..]).unwrap(), c);
        // An unknown device or precision index is refused.
        assert!(ComputeClass::decode(&mut &[2u8, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
        assert!(ComputeClass::decode(&mut &[0u8, 0, 0, 0, 0, 3, 0, 0, 0, 0][..]).is_err());
    }

    #[test]
    fn only_known_cpu_classes_are_reproducible() {
        let cpu = ComputeClass {
            device: DeviceKind::Cpu,
            arch: cpu_arch::X86_AVX2,
            threads: 1,
            precision: Precision::Fp32,
            libtorch: 21_100,
        };
        assert!(cpu.is_exact_capable());
        assert_eq!(
            cpu.describe(),
            "cpu/x86-avx2/fp32/1 thread(s)/libtorch 2.11.0"
        );
        assert!(!ComputeClass::UNDECLARED.is_exact_capable());
        for c in [
            ComputeClass { threads: 0, ..cpu },
            ComputeClass { libtorch: 0, ..cpu },
            ComputeClass {
                arch: cpu_arch::UNKNOWN,
                ..cpu
            },
            ComputeClass {
                device: DeviceKind::Cuda,
                arch: 90,
                threads: 0,
                ..cpu
            },
        ] {
            assert!(!c.is_exact_capable(), "{c:?}");
        }
    }
}
