//! The x86 instruction sets that kernels compiled several times (with `#[target_feature]`)
//! are chosen among at run time: the default x86-64 target has only SSE2, which runs a
//! 16-lane f32 block as four instructions. The kernels that use this enum only add,
//! subtract and multiply (no fused multiply-add: Rust never contracts `a * b + c` on its
//! own), so every version gives the same bits. The depthwise kernels need FMA too and
//! keep their own detection (ops/conv/depthwise_cpu).

/// The instruction set a kernel runs with, detected once per op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F (with AVX2).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Whatever the compile target allows (SSE2 on default x86-64).
    Portable,
}

impl Isa {
    /// The widest instruction set this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx2") {
                return Isa::Avx512;
            }
            if has!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, for the tests that compare them.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") {
                all.push(Isa::Avx2);
                if has!("avx512f") {
                    all.push(Isa::Avx512);
                }
            }
        }
        all
    }
}
