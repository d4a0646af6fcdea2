//! The x86 instruction sets that kernels compiled several times (with `#[target_feature]`)
//! are chosen among at run time: the default x86-64 target has only SSE2, which runs a
//! 16-lane f32 block as four instructions. The kernels that use this enum only add,
//! subtract and multiply (no fused multiply-add: Rust never contracts `a * b + c` on its
//! own), so every version gives the same bits. Kernels built with fused multiply-adds
//! (ops/conv/depthwise_cpu) ask for the `_fused` variants, which also require FMA.
//!
//! [`IsaKernel`] and [`Isa::run`] compile a loop nest once per instruction set without a
//! hand-written wrapper per function: the kernel's `run` is `#[inline(always)]`, so its body
//! (and the slice iterators it calls) is compiled inside each `#[target_feature]` function.

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
        Self::widest(false)
    }

    /// The widest instruction set this CPU runs with FMA as well.
    pub(crate) fn detect_fused() -> Isa {
        Self::widest(true)
    }

    fn widest(fma: bool) -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && (!fma || has!("fma")) {
                return if has!("avx512f") { Isa::Avx512 } else { Isa::Avx2 };
            }
        }
        Isa::Portable
    }

    /// Runs `kernel` compiled for this instruction set. `self` must come from
    /// [`detect`](Self::detect) (or the tests' [`available`](Self::available)), which saw
    /// its features on this CPU. Without FMA: a kernel gives the same bits on every choice.
    #[inline]
    pub(crate) fn run<K: IsaKernel>(self, kernel: K) -> K::Output {
        match self {
            // SAFETY (both): `detect` or `available` saw these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { compiled::avx512(kernel) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { compiled::avx2(kernel) },
            Isa::Portable => kernel.run(),
        }
    }

    /// Every instruction set this CPU runs (with FMA as well if `fma`), narrowest first.
    #[cfg(test)]
    fn supported(fma: bool) -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && (!fma || has!("fma")) {
                all.push(Isa::Avx2);
                if has!("avx512f") {
                    all.push(Isa::Avx512);
                }
            }
        }
        all
    }

    /// Every instruction set this CPU can run, for the tests that compare them.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        Self::supported(false)
    }

    /// Every instruction set this CPU can run with FMA as well, for the tests.
    #[cfg(test)]
    pub(crate) fn available_fused() -> Vec<Isa> {
        Self::supported(true)
    }
}

/// A loop nest to compile once per instruction set and run with [`Isa::run`].
/// Implementations mark `run` `#[inline(always)]` (the wider versions only exist if it is
/// inlined into them) and use only `+ - * /` and comparisons on floats (no `mul_add`), so
/// that every version gives the same bits.
pub(crate) trait IsaKernel {
    /// What the kernel returns.
    type Output;
    /// The loop nest.
    fn run(self) -> Self::Output;
}

/// [`IsaKernel::run`] inside functions compiled with the wider instruction sets (a
/// `#[target_feature]` function is a separate copy of everything inlined into it).
#[cfg(target_arch = "x86_64")]
mod compiled {
    use super::IsaKernel;

    #[target_feature(enable = "avx512f,avx2")]
    pub(super) fn avx512<K: IsaKernel>(kernel: K) -> K::Output {
        kernel.run()
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn avx2<K: IsaKernel>(kernel: K) -> K::Output {
        kernel.run()
    }
}
