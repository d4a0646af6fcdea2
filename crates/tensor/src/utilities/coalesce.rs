//! Dimension merging for strided and broadcasting loops, shared by the CPU and CUDA kernels.

use crate::shape::Dims;

/// Drops dimensions of size 1 and merges neighbours that every operand reads
/// contiguously, so broadcast loops run over as few, as long rows as possible.
/// Returns the merged dims and each operand's strides over them (at least one dim).
pub(crate) fn coalesce(dims: &[usize], strides: &[Dims]) -> (Dims, Dims, Dims) {
    let mut out_dims = Dims::new();
    let mut out_strides: Vec<Dims> = vec![Dims::new(); strides.len()];
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let mergeable =
            !out_dims.is_empty() && strides.iter().zip(&out_strides).all(|(s, os)| *os.last().unwrap() == s[d] * size);
        if mergeable {
            *out_dims.last_mut().unwrap() *= size;
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                *os.last_mut().unwrap() = s[d];
            }
        } else {
            out_dims.push(size);
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                os.push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for os in out_strides.iter_mut() {
            os.push(0);
        }
    }
    let mut it = out_strides.into_iter();
    let first = it.next().unwrap_or_default();
    let second = it.next().unwrap_or_default();
    (out_dims, first, second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    #[test]
    fn coalesce_merges_contiguous_dims() {
        let out = Shape::new(&[2, 3, 4]);
        let a = Shape::new(&[2, 3, 4]).broadcast_strides(&out);
        let b = Shape::new(&[4]).broadcast_strides(&out);
        let (dims, sa, sb) = coalesce(out.dims(), &[a, b]);
        assert_eq!(&dims[..], &[6, 4]);
        assert_eq!(&sa[..], &[4, 1]);
        assert_eq!(&sb[..], &[0, 1]);
    }
}
