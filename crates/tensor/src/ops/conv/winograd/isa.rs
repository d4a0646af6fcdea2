//! The per-image transforms compiled for AVX-512 and AVX2 as well as for any CPU, picked
//! at run time ([`Isa`], shared with other kernels): the default x86-64 target has only
//! SSE2, which runs each 16-channel block as four instructions. The transforms only add,
//! subtract and scale (no fused multiply-add), so every version gives the same bits.

use super::images;
use super::transforms::Variant;
use super::Tiles;
use crate::backend::Conv2dSpec;
use crate::FloatElement;

pub(super) use crate::utilities::isa::Isa;

// The transforms of each instruction set, as methods of the shared enum.
impl Isa {
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

    /// [`images::transform_gradient_image`] compiled for this instruction set.
    pub(super) fn transform_gradient_image<V: Variant, T: FloatElement>(
        self,
        dy: &[T],
        s: &Conv2dSpec,
        tiles: Tiles,
        m: &mut [T],
    ) {
        match self {
            // SAFETY (both): `detect` saw these features on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { simd::avx512::transform_gradient_image::<V, T>(dy, s, tiles, m) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { simd::avx2::transform_gradient_image::<V, T>(dy, s, tiles, m) },
            Isa::Portable => images::transform_gradient_image::<V, T>(dy, s, tiles, m),
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
                pub(in super::super) fn transform_gradient_image<V: Variant, T: FloatElement>(
                    dy: &[T],
                    s: &Conv2dSpec,
                    tiles: Tiles,
                    m: &mut [T],
                ) {
                    images::transform_gradient_image::<V, T>(dy, s, tiles, m)
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
