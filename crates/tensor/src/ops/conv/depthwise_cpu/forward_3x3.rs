//! The forward pass of a 3x3 kernel at stride 1 or 2 and dilation 1 (multiplier 1, full
//! channel blocks): MobileNet's depthwise layers, and the input gradient of every stride-1
//! 3x3 layer (the forward pass over `dy` with the kernel flipped). The stride is a constant
//! of the compiled rows (`S`), so that the interior groups' input offsets are too.
//!
//! Channels go in blocks of [`LANES`] (`W`). Per output row and block, the interior pixels
//! go [`WIDE`] at a time (then 2, then 1): per kernel row, `WIDE + 2` input vectors feed
//! `3 * WIDE` multiply-adds, with no column test. At stride 1 with one column of padding each
//! side and a width that is a multiple of [`WIDE`], the border columns go in those groups too
//! (the first and last pixel of a row skip their padding taps at compile time). Blocks of one AVX register (8 f32) in
//! groups of 8 pixels (8 chains, as oneDNN's AVX2 kernels) measured slower at 8x8 and
//! 16x16 maps (twice the blocks, each with its border pixels and set-up) and no faster at
//! 32x32; blocks of 8 in groups of 4 were slower still (too few chains). Which kernel rows and columns a row or a border pixel reads is a constant of the
//! function that computes it (the common cases are matched to instances), not a test per
//! tap; taps that would read padding are skipped, not multiplied by zero, so an infinite
//! input or weight gives what the naive sum gives. Every pixel sums its taps in the same
//! order (kernel row, then column), whichever path computes it.

use super::columns::interior_columns;
use super::lanes::{block, block_at, mul_add, store, LANES};
use super::Depthwise;
use crate::ops::conv::cpu::taps;
use crate::FloatElement;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Output pixels computed together in the interior (then fewer at the row's end): 4
/// pixels of 2 registers each are 8 independent chains on AVX2.
const WIDE: usize = 4;

/// Whether [`rows`] computes this op's full channel blocks.
pub(super) fn applies<T>(d: &Depthwise<'_, T>) -> bool {
    let s = d.s;
    d.full_blocks() > 0
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && matches!((s.stride_h, s.stride_w), (1, 1) | (2, 2))
        && (s.dilation_h, s.dilation_w) == (1, 1)
}

/// Channels `0..full` of output rows `oys` of one image (`img`; `dst` is
/// `[oys.len(), out_w, c_out]`, whose channels `0..full` are all written).
#[inline(always)]
pub(super) fn rows<T: FloatElement, const FUSED: bool>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    oys: Range<usize>,
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    if d.s.stride_h == 2 {
        rows_w::<T, FUSED, LANES, 2>(d, img, bias, oys, full, dst)
    } else {
        rows_w::<T, FUSED, LANES, 1>(d, img, bias, oys, full, dst)
    }
}

/// [`rows`] with blocks of `W` channels (a divisor of [`LANES`]), at stride `S`.
#[inline(always)]
fn rows_w<T: FloatElement, const FUSED: bool, const W: usize, const S: usize>(
    d: &Depthwise<'_, T>,
    img: &[T],
    bias: &[T],
    oys: Range<usize>,
    full: usize,
    dst: &mut [MaybeUninit<T>],
) {
    debug_assert!(full.is_multiple_of(LANES) && LANES.is_multiple_of(W));
    let s = d.s;
    let row_len = s.out_w * s.out_channels;
    for (oy, dst) in oys.zip(dst.chunks_exact_mut(row_len)) {
        let (ky0, ky1, iy0) = taps(oy, S, s.pad_top, 1, 3, s.in_h);
        let r = Row { d, img, bias, iy0, full };
        // Kernel rows `KY0..KY0 + R` as constants: the middle rows, the top and bottom
        // rows of 'same' padding. Anything else reads its kernel from memory.
        match (ky0, ky1 - ky0) {
            (0, 3) => r.rows::<FUSED, W, S, 0, 3>(dst),
            (1, 2) => r.rows::<FUSED, W, S, 1, 2>(dst),
            (0, 2) => r.rows::<FUSED, W, S, 0, 2>(dst),
            _ => r.any::<FUSED, W, S>((ky0, ky1), dst),
        }
    }
}

/// One output row: its image, bias, first input row and full channels.
struct Row<'a, T> {
    d: &'a Depthwise<'a, T>,
    img: &'a [T],
    bias: &'a [T],
    iy0: usize,
    full: usize,
}

impl<T: FloatElement> Row<'_, T> {
    /// The row with kernel rows `KY0..KY0 + R`, whose taps are fixed per block. A row of
    /// 2 blocks (32 channels) runs its interior groups of pixels across the blocks
    /// ([`Row::across`]), the others block by block: across 4 blocks (64 channels at
    /// 16x16) measured 5% slower, quiet, than block by block.
    #[inline(always)]
    fn rows<const FUSED: bool, const W: usize, const S: usize, const KY0: usize, const R: usize>(
        &self,
        dst: &mut [MaybeUninit<T>],
    ) {
        if S == 1 && edge_groups(self.d.s) {
            let (co, blocks) = (self.d.s.out_channels, self.full / W);
            if blocks == 2 {
                let ws = [self.window::<W, KY0, R>(0), self.window::<W, KY0, R>(W)];
                return self.edges::<FUSED, W, R, 2>(&ws, 0, co, dst);
            }
            for start in (0..self.full).step_by(W) {
                self.edges::<FUSED, W, R, 1>(&[self.window::<W, KY0, R>(start)], start, co, dst);
            }
            return;
        }
        match self.full / W {
            2 => {
                let ws = [self.window::<W, KY0, R>(0), self.window::<W, KY0, R>(W)];
                self.across::<FUSED, W, S, KY0, R, 2>(&ws, dst)
            }
            _ => {
                let (lo, _) = interior_columns(self.d.s);
                for start in (0..self.full).step_by(W) {
                    self.block::<FUSED, W, S, KY0, R>(&self.window::<W, KY0, R>(start), start, lo, dst);
                }
            }
        }
    }

    /// [`Row::rows`] over `N` blocks (windows `ws`), whose interior groups of [`WIDE`] pixels go pixel
    /// group by pixel group, each across every block: the row's input and output are then
    /// read and written in memory order, where block by block they were walked `N` times,
    /// `W` channels of every pixel at a time. The sums are the same.
    #[inline(always)]
    fn across<const FUSED: bool, const W: usize, const S: usize, const KY0: usize, const R: usize, const N: usize>(
        &self,
        ws: &[Window<'_, T, W>; N],
        dst: &mut [MaybeUninit<T>],
    ) {
        let s = self.d.s;
        let (co, pad) = (s.out_channels, s.pad_left);
        let (lo, hi) = interior_columns(s);
        let mut ox = lo;
        while ox + WIDE <= hi {
            for (k, w) in ws.iter().enumerate() {
                let b = *block::<T, W>(&self.bias[k * W..]);
                group4::<T, FUSED, W, R, S>(w, b, ox * S - pad, co, &mut dst[ox * co + k * W..]);
            }
            ox += WIDE;
        }
        for (k, w) in ws.iter().enumerate() {
            self.block::<FUSED, W, S, KY0, R>(w, k * W, ox, dst);
        }
    }

    /// A stride-1 row of [`edge_groups`]: every pixel, border ones included, in groups of
    /// [`WIDE`] (8 independent chains), pixel group by pixel group across the `N` blocks
    /// from channel `start` (windows `ws`). The first group's first pixel skips kernel
    /// column 0, the last group's last pixel column 2: the taps [`pixel`] skips there.
    /// Border pixels one at a time were 2 chains each, bound by the latency of their
    /// additions, and with the interior's pair (14 interior columns) a third of a 16-pixel
    /// row's time.
    #[inline(always)]
    fn edges<const FUSED: bool, const W: usize, const R: usize, const N: usize>(
        &self,
        ws: &[Window<'_, T, W>; N],
        start: usize,
        co: usize,
        dst: &mut [MaybeUninit<T>],
    ) {
        let out_w = self.d.s.out_w;
        let last = out_w - WIDE;
        for (k, w) in ws.iter().enumerate() {
            let c = start + k * W;
            let b = *block::<T, W>(&self.bias[c..]);
            if out_w == WIDE {
                edge4::<T, FUSED, W, R, true, true>(w, b, 0, co, &mut dst[c..]);
            } else {
                edge4::<T, FUSED, W, R, true, false>(w, b, 0, co, &mut dst[c..]);
            }
        }
        let mut ox = WIDE;
        while ox < last {
            for (k, w) in ws.iter().enumerate() {
                let c = start + k * W;
                let b = *block::<T, W>(&self.bias[c..]);
                edge4::<T, FUSED, W, R, false, false>(w, b, ox, co, &mut dst[ox * co + c..]);
            }
            ox += WIDE;
        }
        if out_w > WIDE {
            for (k, w) in ws.iter().enumerate() {
                let c = start + k * W;
                let b = *block::<T, W>(&self.bias[c..]);
                edge4::<T, FUSED, W, R, false, true>(w, b, last, co, &mut dst[last * co + c..]);
            }
        }
    }

    /// The window of the block from channel `start`, kernel rows `KY0..KY0 + R`.
    #[inline(always)]
    fn window<const W: usize, const KY0: usize, const R: usize>(&self, start: usize) -> Window<'_, T, W> {
        let s = self.d.s;
        // Offsets into the kernel and input, not arrays of references to their blocks:
        // `std::array::from_fn` built those with a call per element, per row and block
        // (10% of the samples at 32x32 maps).
        Window::new(
            &self.d.taps_kernel[KY0 * 3 * s.out_channels + start..],
            R,
            s.out_channels,
            &self.img[self.iy0 * s.in_w * s.in_channels + start..],
            (s.in_w * s.in_channels, s.in_channels),
        )
    }

    /// The block from channel `start` (window `w`): its border pixels, and its interior
    /// pixels from column `from` on (those before it are written already).
    #[inline(always)]
    fn block<const FUSED: bool, const W: usize, const S: usize, const KY0: usize, const R: usize>(
        &self,
        w: &Window<'_, T, W>,
        start: usize,
        from: usize,
        dst: &mut [MaybeUninit<T>],
    ) {
        let s = self.d.s;
        let (co, pad, in_w) = (s.out_channels, s.pad_left, s.in_w);
        let (lo, hi) = interior_columns(s);
        let b = *block::<T, W>(&self.bias[start..]);
        for ox in (0..lo).chain(hi..s.out_w) {
            let (kx0, kx1, ix0) = taps(ox, S, pad, 1, 3, in_w);
            let y = match (kx0, kx1) {
                (1, 3) => pixel::<T, FUSED, W, R, 1, 3>(w, b, ix0),
                (0, 2) => pixel::<T, FUSED, W, R, 0, 2>(w, b, ix0),
                _ => self.pixel_any::<FUSED, W>((KY0, KY0 + R), (kx0, kx1, ix0), start),
            };
            store(&mut dst[ox * co + start..], y);
        }
        // Every tap of the interior pixels reads a real column: ox * S >= pad.
        let mut ox = from;
        while ox + WIDE <= hi {
            group4::<T, FUSED, W, R, S>(w, b, ox * S - pad, co, &mut dst[ox * co + start..]);
            ox += WIDE;
        }
        if ox + 2 <= hi {
            group2::<T, FUSED, W, R, S>(w, b, ox * S - pad, co, &mut dst[ox * co + start..]);
            ox += 2;
        }
        if ox < hi {
            store(&mut dst[ox * co + start..], pixel::<T, FUSED, W, R, 0, 3>(w, b, ox * S - pad));
        }
    }

    /// The row with kernel rows `ky0..ky1` known at run time only (an input fewer than
    /// three rows high, or padding above 1): the kernel is read from memory, so that
    /// indexing it at run time does not move [`Row::rows`]' registers to the stack.
    #[inline(always)]
    fn any<const FUSED: bool, const W: usize, const S: usize>(
        &self,
        (ky0, ky1): (usize, usize),
        dst: &mut [MaybeUninit<T>],
    ) {
        let s = self.d.s;
        for start in (0..self.full).step_by(W) {
            for ox in 0..s.out_w {
                let cols = taps(ox, S, s.pad_left, 1, 3, s.in_w);
                store(&mut dst[ox * s.out_channels + start..], self.pixel_any::<FUSED, W>((ky0, ky1), cols, start));
            }
        }
    }

    /// One pixel reading kernel rows `ky0..ky1` and columns `kx0..kx1` (input column `ix0`
    /// first), its kernel read from memory.
    #[inline(always)]
    fn pixel_any<const FUSED: bool, const W: usize>(
        &self,
        (ky0, ky1): (usize, usize),
        (kx0, kx1, ix0): (usize, usize, usize),
        start: usize,
    ) -> [T; W] {
        let s = self.d.s;
        let (c, co) = (s.in_channels, s.out_channels);
        let mut acc = *block::<T, W>(&self.bias[start..]);
        for ky in ky0..ky1 {
            let iy = self.iy0 + ky - ky0;
            for kx in kx0..kx1 {
                let x = &self.img[(iy * s.in_w + ix0 + kx - kx0) * c + start..];
                mul_add::<T, FUSED, W>(&mut acc, x, block(&self.d.taps_kernel[(ky * 3 + kx) * co + start..]));
            }
        }
        acc
    }
}

/// The kernel and input a block of one output row reads.
struct Window<'a, T, const W: usize> {
    /// The block's weights of the kernel rows read (`[tap, W]`, from the row's first kernel
    /// row), copied out of the kernel: each is then at a fixed offset from one register,
    /// where reaching nine blocks `c_out` apart took more registers than x86-64 has, and
    /// the compiler reloaded their addresses from the stack around each multiply-add.
    kernel: [[T; W]; 9],
    /// The input from the row's first input row and the block's first channel.
    input: &'a [T],
    /// Elements per input row.
    row: usize,
    c: usize,
}

impl<'a, T: FloatElement, const W: usize> Window<'a, T, W> {
    /// The window of kernel rows `0..rows` of `kernel` (`[tap, c_out]` from the first one,
    /// at the block's first channel), over `input` (rows `row` elements long, pixels `c`).
    #[inline(always)]
    fn new(kernel: &[T], rows: usize, co: usize, input: &'a [T], (row, c): (usize, usize)) -> Self {
        let mut staged = [[T::zero(); W]; 9];
        for (t, v) in staged.iter_mut().enumerate().take(rows * 3) {
            *v = *block(&kernel[t * co..]);
        }
        Window { kernel: staged, input, row, c }
    }

    /// The weights of kernel row `r` (from the first one read), column `kx`.
    #[inline(always)]
    fn k(&self, r: usize, kx: usize) -> &[T; W] {
        &self.kernel[r * 3 + kx]
    }

    /// The input of row `r` (from the first one read), column `ix`.
    #[inline(always)]
    fn x(&self, r: usize, ix: usize) -> &[T; W] {
        block(&self.input[r * self.row + ix * self.c..])
    }

    /// Checks once that rows `0..rows` and columns `0..=ix` are inside the input, so that
    /// [`Window::x_in`] may read them unchecked.
    #[inline(always)]
    fn check(&self, rows: usize, ix: usize) {
        assert!(rows > 0 && (rows - 1) * self.row + ix * self.c + W <= self.input.len(), "window outside the input");
    }

    /// [`Window::x`] without the bounds test of each read (a compare and branch per
    /// multiply-add in the interior groups).
    ///
    /// # Safety
    ///
    /// `r` and `ix` lie inside a range passed to [`Window::check`] first.
    #[inline(always)]
    unsafe fn x_in(&self, r: usize, ix: usize) -> &[T; W] {
        // SAFETY: row `r` and column `ix` end inside `input` (checked by `check`; every
        // index grows with `r` and `ix`).
        unsafe { block_at(self.input, r * self.row + ix * self.c) }
    }
}

/// One output pixel of the block whose first tap (kernel column `KX0`) reads input column
/// `ix`, over kernel columns `KX0..KX1` and rows `0..R` of the window. A function, not a
/// closure: a closure is compiled without the caller's target features, and its
/// multiply-adds became library calls.
#[inline(always)]
fn pixel<T: FloatElement, const FUSED: bool, const W: usize, const R: usize, const KX0: usize, const KX1: usize>(
    w: &Window<'_, T, W>,
    bias: [T; W],
    ix: usize,
) -> [T; W] {
    let mut acc = bias;
    for r in 0..R {
        for kx in KX0..KX1 {
            mul_add::<T, FUSED, W>(&mut acc, w.x(r, ix + kx - KX0), w.k(r, kx));
        }
    }
    acc
}

/// Defines `$name`: neighbouring interior pixels `$p` of the block at stride `S`, the first
/// one's first tap reading input column `ix` (pixel `p`'s: `ix + p * S`), written to
/// `dst[p * c_out..]`. Their
/// accumulators are independent chains, and each pixel is written out by the macro with a
/// constant index: a loop over them (a const-generic count) was not unrolled, and kept
/// every accumulator on the stack, a load and a store around each multiply-add.
macro_rules! group {
    ($name:ident, $g:literal, [$($p:literal),*]) => {
        #[inline(always)]
        fn $name<T: FloatElement, const FUSED: bool, const W: usize, const R: usize, const S: usize>(
            w: &Window<'_, T, W>,
            bias: [T; W],
            ix: usize,
            co: usize,
            dst: &mut [MaybeUninit<T>],
        ) {
            // The last pixel's last tap reads column ix + ($g - 1) * S + 2.
            w.check(R, ix + ($g - 1) * S + 2);
            let mut acc = [bias; $g];
            for r in 0..R {
                for kx in 0..3 {
                    let k = w.k(r, kx);
                    // SAFETY: r < R and ix + $p * S + kx <= ix + ($g - 1) * S + 2: checked above.
                    $(mul_add::<T, FUSED, W>(&mut acc[$p], unsafe { w.x_in(r, ix + $p * S + kx) }, k);)*
                }
            }
            $(store(&mut dst[$p * co..], acc[$p]);)*
        }
    };
}
group!(group4, 4, [0, 1, 2, 3]);
group!(group2, 2, [0, 1]);

/// Whether a stride-1 row runs as groups of [`WIDE`] pixels only ([`Row::edges`]): 'same'
/// padding of one column each side (the border columns skip one kernel column each) and a
/// width that is a multiple of [`WIDE`] (MobileNet's 32, 16, 8 and 4).
fn edge_groups(s: &crate::backend::Conv2dSpec) -> bool {
    s.pad_left == 1 && s.in_w == s.out_w && s.out_w.is_multiple_of(WIDE) && interior_columns(s) == (1, s.out_w - 1)
}

/// [`WIDE`] pixels `ox..ox + WIDE` of a stride-1 row padded one column each side: pixel
/// `p`'s tap `kx` reads input column `ox + p + kx - 1`. With `LEFT` (`ox == 0`) pixel 0
/// skips kernel column 0 (it would read padding), with `RIGHT` (the row's last group)
/// pixel 3 skips column 2; every other tap reads a real column. Each pixel sums its taps in
/// the order [`pixel`] does.
#[inline(always)]
fn edge4<T: FloatElement, const FUSED: bool, const W: usize, const R: usize, const LEFT: bool, const RIGHT: bool>(
    w: &Window<'_, T, W>,
    bias: [T; W],
    ox: usize,
    co: usize,
    dst: &mut [MaybeUninit<T>],
) {
    // The last tap read: pixel 3's column 1 on the right edge, else its column 2.
    w.check(R, ox + WIDE - usize::from(RIGHT));
    let mut acc = [bias; WIDE];
    for r in 0..R {
        for kx in 0..3 {
            let k = w.k(r, kx);
            macro_rules! tap {
                ($p:literal) => {
                    if !(LEFT && $p == 0 && kx == 0) && !(RIGHT && $p == WIDE - 1 && kx == 2) {
                        // SAFETY: r < R; the column is at least 0 (the skipped tap is the
                        // only one below) and at most the one checked above.
                        mul_add::<T, FUSED, W>(&mut acc[$p], unsafe { w.x_in(r, ox + $p + kx - 1) }, k);
                    }
                };
            }
            tap!(0);
            tap!(1);
            tap!(2);
            tap!(3);
        }
    }
    // Written out with constant indices, as in `group!`.
    store(&mut dst[..], acc[0]);
    store(&mut dst[co..], acc[1]);
    store(&mut dst[2 * co..], acc[2]);
    store(&mut dst[3 * co..], acc[3]);
}
