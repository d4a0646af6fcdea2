//! The per-image transforms compiled for AVX-512 and AVX2 as well as for any CPU, picked
//! at run time: the default x86-64 target has only SSE2, which runs each 16-channel block
//! as four instructions. The transforms only add, subtract and scale (no fused
//! multiply-add), so every version gives the same bits.

use super::images;
use super::transforms::Variant;
use super::Tiles;
use crate::backend::Conv2dSpec;
use crate::FloatElement;

/// The instruction set the transforms run with, detected once per convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    pub(super) fn detect() -> Isa {
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
    pub(super) fn available() -> Vec<Isa> {
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

    /// [`images::transform_image`] compiled for this instruction set.
    pub(super) fn transform_image<V: Variant, T: FloatElement>(
        self,
        x: &[T],
        s: &Conv2dSpec,
        tiles: Tiles,
        v: &mut [T],
    ) {
        match self {
            // SAFETY (both): `detect` saw these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { simd::avx512::transform_image::<V, T>(x, s, tiles, v) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { simd::avx2::transform_image::<V, T>(x, s, tiles, v) },
            Isa::Portable => images::transform_image::<V, T>(x, s, tiles, v),
        }
    }

    /// [`images::untransform_image`] compiled for this instruction set.
    pub(super) fn untransform_image<V: Variant, T: FloatElement>(
        self,
        m: &[T],
        at: (usize, usize),
        bias: Option<&[T]>,
        s: &Conv2dSpec,
        tiles: Tiles,
        dst: &mut [T],
    ) {
        match self {
            // SAFETY (both): `detect` saw these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { simd::avx512::untransform_image::<V, T>(m, at, bias, s, tiles, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { simd::avx2::untransform_image::<V, T>(m, at, bias, s, tiles, dst) },
            Isa::Portable => images::untransform_image::<V, T>(m, at, bias, s, tiles, dst),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    macro_rules! compiled_for {
        ($name:ident, $features:literal) => {
            pub(super) mod $name {
                use super::super::super::{images, transforms::Variant, Tiles};
                use crate::backend::Conv2dSpec;
                use crate::FloatElement;

                #[target_feature(enable = $features)]
                pub(in super::super) fn transform_image<V: Variant, T: FloatElement>(
                    x: &[T],
                    s: &Conv2dSpec,
                    tiles: Tiles,
                    v: &mut [T],
                ) {
                    images::transform_image::<V, T>(x, s, tiles, v)
                }

                #[target_feature(enable = $features)]
                pub(in super::super) fn untransform_image<V: Variant, T: FloatElement>(
                    m: &[T],
                    at: (usize, usize),
                    bias: Option<&[T]>,
                    s: &Conv2dSpec,
                    tiles: Tiles,
                    dst: &mut [T],
                ) {
                    images::untransform_image::<V, T>(m, at, bias, s, tiles, dst)
                }
            }
        };
    }
    compiled_for!(avx512, "avx512f,avx2");
    compiled_for!(avx2, "avx2");
}
