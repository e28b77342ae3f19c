//! Moving channels between the tensors' channels-first layout and the kernels'
//! channels-last one: a transpose in 16 x 16 blocks.
//!
//! Every convolution copies its input (and in the backward pass its output gradient) into
//! channels-last order and its result back. Done value by value, a copy reads or writes
//! one value per cache line and per channel stream (128 streams for the deep layers, more
//! than the prefetchers follow), and the copies took ~10 % of a training step. A 16 x 16
//! block read as 16 vectors, transposed in registers and written as 16 vectors touches
//! every line once. Written by hand: the transpose crates work on whole 2D matrices, not
//! on blocks scattered through a padded 5D buffer.

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols` (both at
/// most 16).
///
/// # Safety
/// Every read and write implied above must be inside its allocation.
#[inline]
pub(crate) unsafe fn transpose_block(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
    rows: usize,
    cols: usize,
) {
    debug_assert!(rows <= 16 && cols <= 16);
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: the caller's contract; AVX-512 was detected.
            unsafe { transpose_avx512(src, src_stride, dst, dst_stride, rows, cols) };
            return;
        }
    }
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: the caller's contract.
            unsafe { *dst.add(j * dst_stride + i) = *src.add(i * src_stride + j) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// [`transpose16`] between masked loads and stores: partial blocks never touch the
/// masked-off addresses.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
    rows: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let load_mask: __mmask16 = if cols == 16 {
        0xffff
    } else {
        (1u16 << cols) - 1
    };
    let store_mask: __mmask16 = if rows == 16 {
        0xffff
    } else {
        (1u16 << rows) - 1
    };
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, v) in r.iter_mut().enumerate().take(rows) {
        // SAFETY: row i < rows, and only its first `cols` values are read.
        *v = unsafe { _mm512_maskz_loadu_ps(load_mask, src.add(i * src_stride)) };
    }
    transpose16(&mut r);
    for (j, v) in r.iter().enumerate().take(cols) {
        // SAFETY: column j < cols, and only its first `rows` values are written.
        unsafe { _mm512_mask_storeu_ps(dst.add(j * dst_stride), store_mask, *v) };
    }
}

/// Transposes 16 vectors of 16 lanes in registers (`r[i]` lane `j` -> `r[j]` lane `i`):
/// unpack, 4-lane shuffle, then 128-bit lane shuffles twice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn transpose16(r: &mut [std::arch::x86_64::__m512; 16]) {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for q in 0..4 {
        let b = 4 * q;
        r[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        r[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        r[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        r[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    for h in 0..2 {
        let b = 8 * h;
        for k in 0..4 {
            t[b + k] = _mm512_shuffle_f32x4::<0x88>(r[b + k], r[b + 4 + k]);
            t[b + 4 + k] = _mm512_shuffle_f32x4::<0xDD>(r[b + k], r[b + 4 + k]);
        }
    }
    for k in 0..8 {
        r[k] = _mm512_shuffle_f32x4::<0x88>(t[k], t[8 + k]);
        r[8 + k] = _mm512_shuffle_f32x4::<0xDD>(t[k], t[8 + k]);
    }
}

/// A raw pointer that rayon tasks may share because each writes its own disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: only used where the tasks' writes are disjoint (said at each use).
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`, in 16 x 16
/// blocks, a band of 16 source rows at a time (16 read streams).
///
/// # Safety
/// Every read and write implied above must be inside its allocation.
unsafe fn transpose(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    for i0 in (0..rows).step_by(16) {
        for j0 in (0..cols).step_by(16) {
            // SAFETY: the block stays inside the ranges the caller vouched for.
            unsafe {
                transpose_block(
                    src.add(i0 * src_stride + j0),
                    src_stride,
                    dst.add(j0 * dst_stride + i0),
                    dst_stride,
                    16.min(rows - i0),
                    16.min(cols - j0),
                )
            };
        }
    }
}

/// Channels `c` of one `[C][len]` slab (channel stride `cs`) -> `[len][ld]` rows starting at
/// `dst` (channel `c` at `dst[v * ld + c]`), for voxels `0..len`.
///
/// # Safety
/// `src` must hold `c` channels of `len` values at stride `cs`; `dst` `len` rows of `ld >= c`.
pub(crate) unsafe fn to_channels_last(
    src: *const f32,
    cs: usize,
    c: usize,
    len: usize,
    dst: *mut f32,
    ld: usize,
) {
    // SAFETY: the caller's contract, as rows = channels, columns = voxels.
    unsafe { transpose(src, cs, c, len, dst, ld) }
}

/// Inverse of [`to_channels_last`]: `[len][ld]` rows -> `c` channels of `len` at stride `cs`.
///
/// # Safety
/// As [`to_channels_last`], with the roles of `src` and `dst` swapped.
pub(crate) unsafe fn to_channels_first(
    src: *const f32,
    ld: usize,
    c: usize,
    len: usize,
    dst: *mut f32,
    cs: usize,
) {
    // SAFETY: the caller's contract, as rows = voxels, columns = channels.
    unsafe { transpose(src, ld, len, c, dst, cs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_every_shape_transpose() {
        for rows in 1..=16 {
            for cols in 1..=16 {
                let (ss, ds) = (19, 21);
                let src: Vec<f32> = (0..16 * ss).map(|v| v as f32).collect();
                let mut dst = vec![-1f32; 16 * ds + 16];
                // SAFETY: 16 rows of stride 19 >= 16 and 16 columns of stride 21.
                unsafe { transpose_block(src.as_ptr(), ss, dst.as_mut_ptr(), ds, rows, cols) };
                for j in 0..16 {
                    for i in 0..ds {
                        let want = if j < cols && i < rows {
                            src[i * ss + j]
                        } else {
                            -1.0
                        };
                        assert_eq!(dst[j * ds + i], want, "{rows}x{cols} at ({j},{i})");
                    }
                }
            }
        }
    }

    #[test]
    fn channels_round_trip() {
        let (c, len, cs, ld) = (37, 53, 60, 40);
        let src: Vec<f32> = (0..c * cs).map(|v| v as f32 * 0.5).collect();
        let mut last = vec![0f32; len * ld];
        let mut back = vec![0f32; c * cs];
        // SAFETY: sizes as documented.
        unsafe {
            to_channels_last(src.as_ptr(), cs, c, len, last.as_mut_ptr(), ld);
            to_channels_first(last.as_ptr(), ld, c, len, back.as_mut_ptr(), cs);
        }
        for ch in 0..c {
            for v in 0..len {
                assert_eq!(last[v * ld + ch], src[ch * cs + v]);
                assert_eq!(back[ch * cs + v], src[ch * cs + v]);
            }
        }
    }
}
