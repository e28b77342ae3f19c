//! Forward convolution in bf16 on AMX tiles (a reduced-precision inference mode).
//!
//! Same implicit GEMM as [`super::gather`]: the input is copied once into a zero-padded,
//! channels-last buffer, here rounded to bf16 (round to nearest even), and output row
//! `m = h * row_width + w` of a plane reads that buffer at `plane0 + tap offset + m *
//! stride_w * A`. The `kw` taps of one `(kd, kh)` read `kw * A` consecutive values of each
//! row, so each such group is one strided `[rows x kw*A] @ [kw*A x B]` product, cut into
//! K-blocks of 32 channels (one A tile row of 64 bytes). When `kw * A` is an odd multiple
//! of 16 the last block starts 16 channels early and the weights of those 16 (already
//! counted) channels are zero, so every tile read stays inside the row's own receptive
//! field. (The one observable difference this makes: an infinite input then gives NaN
//! where the f32 sum would give an infinity.)
//!
//! Tiles (`tdpbf16ps`, f32 accumulation): C tiles are 16 output rows x 16 output
//! channels; A tiles 16 rows x K bf16 loaded with the row stride `stride_w * A * 2` bytes;
//! B tiles K/2 rows x 16 channel pairs from a weight copy in the VNNI layout
//! `[step][K/2][B][2]`. Blocks of 2 x 2 C tiles (32 rows x 32 channels) when B has a pair
//! of 16-channel columns, 4 x 1 for a single one (B = 16). A row tile covers 16 consecutive
//! rows of the plane, or of one output row when that skips enough junk rows (strided
//! layers). The C tiles go to an f32 `[rows][B]` buffer per output plane, copied into
//! `[N][B][oD][oH][oW]` with the bias. Buffers the tiles read start on cache lines: a
//! 64-byte tile row split over two lines made the loads twice as slow.
//!
//! Where the time goes (one thread, batch 2): at 16 -> 16 channels, 64^3, 28% in the bf16
//! copy of the input, 32% in the output copy (both bound by memory bandwidth), 40% on the
//! tiles; at 16 -> 32, stride 2, the input copy is half the time; at 128 -> 128, 8^3, the
//! weight copy is half of it (a caller running the same weights again could keep it).
//!
//! Tiles are configured (`ldtilecfg`) and released inside each rayon task, on the thread
//! that uses them; the kernel's permission to use tile data is asked for once, by
//! [`bf16_supported`], and holds for every thread of the process.

#[cfg(target_arch = "x86_64")]
use super::check;
use super::{conv3d, ConvGeometry};
use std::sync::OnceLock;

/// Whether this CPU has AMX-BF16, AMX-TILE (and AVX-512F, for the copies) and the (Linux)
/// kernel lets this process use tile data. Checked once.
pub fn bf16_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // `cpuid` exists on every x86_64 CPU; leaf 7 is read only when leaf 0 says it exists.
    let max_leaf = __cpuid(0).eax;
    let edx = if max_leaf >= 7 {
        __cpuid_count(7, 0).edx
    } else {
        0
    };
    let amx_bf16 = edx & (1 << 22) != 0;
    let amx_tile = edx & (1 << 24) != 0;
    if max_leaf < 7 || !amx_bf16 || !amx_tile || !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only asks the kernel for a permission; it
    // reads and writes no memory of ours. Both arguments are passed as full 64-bit values.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether [`conv3d_bf16`] runs on AMX tiles for this shape (otherwise it is [`conv3d`]):
/// the CPU and kernel support it and both channel counts are multiples of 16.
pub fn conv3d_bf16_uses_amx(g: &ConvGeometry) -> bool {
    g.is_supported()
        && g.in_channels.is_multiple_of(16)
        && g.out_channels.is_multiple_of(16)
        && bf16_supported()
}

/// [`conv3d`] with input and weights rounded to bf16 and f32 accumulation, on AMX tiles
/// when [`conv3d_bf16_uses_amx`] says so; otherwise exactly [`conv3d`].
pub fn conv3d_bf16(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if conv3d_bf16_uses_amx(g) {
        check(g, "conv3d_bf16 input", x.len(), g.in_len());
        check(g, "conv3d_bf16 weight", weight.len(), g.weight_len());
        if let Some(b) = bias {
            check(g, "conv3d_bf16 bias", b.len(), g.out_channels);
        }
        return tiles::forward(x, weight, bias, g);
    }
    conv3d(x, weight, bias, g)
}

/// f32 -> bf16, round to nearest even (NaN stays a quiet NaN).
fn bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::super::{fill_padded, ConvGeometry};
    use super::bf16;
    use rayon::prelude::*;
    use std::arch::asm;
    use std::mem::MaybeUninit;

    /// Rows of one C tile (and of an A tile).
    const TR: usize = 16;

    /// `[N][A][D][H][W]` f32 -> zero-padded `[N][pD][pH][pW][A]` bf16, followed by zeros
    /// for 16 rows (`16 * stride_w * A` values): a plane's last (partial) tile of rows reads
    /// up to 15 rows past the last valid one.
    ///
    /// Returns the buffer and where the padded input starts in it: on a 64-byte boundary.
    fn pad_bf16(x: &[f32], g: &ConvGeometry) -> (Vec<u16>, usize) {
        let [d, h, w] = g.in_size;
        let [dp, hp, wp] = g.padded();
        let a = g.in_channels;
        let len = g.batch * dp * hp * wp * a;
        let mut out: Vec<u16> = Vec::with_capacity(len + slack(g) + LINE);
        let start = line_start(out.spare_capacity_mut().as_ptr());
        let zero = MaybeUninit::new(0u16);
        let all = &mut out.spare_capacity_mut()[..start + len + slack(g)];
        let (head, rest) = all.split_at_mut(start);
        let (body, tail) = rest.split_at_mut(len);
        head.fill(zero);
        tail.fill(zero);
        let chan = d * h * w;
        fill_padded(body, g, 0u16, |n, z, y, row| {
            for x0 in (0..w).step_by(16) {
                let bw = 16.min(w - x0);
                for c0 in (0..a).step_by(16) {
                    let src = &x[((n * a + c0) * d + z) * h * w + y * w + x0..];
                    assert!(15 * chan + bw <= src.len());
                    let block = &mut row[x0 * a + c0..];
                    assert!((bw - 1) * a + 16 <= block.len());
                    // SAFETY: reads voxels x0 .. x0 + bw of row y of channels c0 .. c0 + 16
                    // (A is a multiple of 16) of `x`, writes channels c0 .. c0 + 16 of voxels
                    // x0 .. x0 + bw of this padded row: both inside their slices (asserted).
                    // Over all x0 and c0 this writes the whole row.
                    unsafe {
                        convert_block(src.as_ptr(), chan, bw, block.as_mut_ptr().cast(), a);
                    }
                }
            }
        });
        // SAFETY: every value up to start + len + slack was written above: the values
        // before `start` and the slack with zeros, the planes by `fill_padded`.
        unsafe { out.set_len(start + len + slack(g)) };
        (out, start)
    }

    /// Values of any buffer type that fit in a cache line, at most: the slack allocated so
    /// that a buffer can start on a line.
    const LINE: usize = 32;

    /// How many values of `T` from `p` the next 64-byte boundary is (0 if unknown). Tile
    /// rows of 64 bytes that start on a boundary read one cache line each instead of two.
    fn line_start<T>(p: *const T) -> usize {
        let s = p.align_offset(64);
        if s < LINE {
            s
        } else {
            0
        }
    }

    /// 16 channels (`chan` values apart) x `bw` <= 16 consecutive voxels of `src`, rounded
    /// to bf16, to `bw` channels-last voxels (`a` values apart) at `dst`: pairs of channels
    /// are packed into 32-bit words, scattered 16 voxels at a time.
    ///
    /// # Safety
    /// `src + c * chan + i` for c < 16, i < bw and `dst + i * a + c` for the same must be
    /// inside their buffers; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn convert_block(
        src: *const f32,
        chan: usize,
        bw: usize,
        dst: *mut u16,
        a: usize,
    ) {
        use std::arch::x86_64::*;
        // f32 bits rounded (to nearest even) so that the top 16 bits are the bf16 value.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn round(v: __m512) -> __m512i {
            let bits = _mm512_castps_si512(v);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let up = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            _mm512_mask_mov_epi32(up, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x40_0000)))
        }
        let mask: __mmask16 = if bw >= 16 { 0xffff } else { (1 << bw) - 1 };
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((a / 2) as i32),
        );
        // SAFETY: the caller's contract; masked lanes neither read nor write.
        unsafe {
            for j in 0..8 {
                let lo = round(_mm512_maskz_loadu_ps(mask, src.add(2 * j * chan)));
                let hi = round(_mm512_maskz_loadu_ps(mask, src.add((2 * j + 1) * chan)));
                let word = _mm512_or_si512(
                    _mm512_srli_epi32::<16>(lo),
                    _mm512_and_si512(hi, _mm512_set1_epi32(-65536)),
                );
                _mm512_mask_i32scatter_epi32::<4>(dst.add(2 * j).cast(), mask, idx, word);
            }
        }
    }

    fn slack(g: &ConvGeometry) -> usize {
        TR * g.stride[2] * g.in_channels
    }

    /// The products each output plane runs: per (kd, kh) group and K-block, the offset of
    /// its A tile from the plane's first input value, and (step-major) the weights in the
    /// VNNI layout `[K/2][B][2]`.
    struct Steps {
        /// Input channels per K-block: 32, or 16 when `kw * A` is 16.
        k: usize,
        offs: Vec<usize>,
        /// Starts at `weights[w0]`, on a 64-byte boundary.
        weights: Vec<u16>,
        w0: usize,
    }

    fn steps(weight: &[f32], g: &ConvGeometry) -> Steps {
        let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
        let kw = g.kernel[2];
        let run = kw * a;
        let k = if run >= 32 { 32 } else { 16 };
        // Block starts; the last one moves back to end at the run's end (overlap zeroed).
        let starts: Vec<usize> = (0..run.div_ceil(k)).map(|j| (j * k).min(run - k)).collect();
        let groups = taps / kw;
        let nb = starts.len();
        let offs = (0..groups * nb)
            .map(|step| {
                let (kd, off) = g.tap_offset(step / nb * kw);
                kd * g.padded_plane() + off + starts[step % nb]
            })
            .collect();
        let mut weights = vec![0u16; groups * nb * k * b + LINE];
        let w0 = line_start(weights.as_ptr());
        weights[w0..][..groups * nb * k * b]
            .par_chunks_mut(k * b)
            .enumerate()
            .for_each(|(step, dst)| {
                let (grp, j) = (step / nb, step % nb);
                let start = starts[j];
                // Channels of the run before this are counted by the previous block (their
                // weights stay zero here).
                let counted = if j == 0 { 0 } else { starts[j - 1] + k };
                // (offset in a weight row [A][taps], offset in the step's [K/2][B][2]).
                let places: Vec<(usize, usize)> = (counted.max(start)..start + k)
                    .map(|kk| {
                        let (t, i) = (grp * kw + kk / a, kk % a);
                        (i * taps + t, (kk - start) / 2 * b * 2 + (kk - start) % 2)
                    })
                    .collect();
                for n in 0..b {
                    let src = &weight[n * a * taps..][..a * taps];
                    for &(from, to) in &places {
                        dst[to + 2 * n] = bf16(src[from]);
                    }
                }
            });
        Steps {
            k,
            offs,
            weights,
            w0,
        }
    }

    /// The 64-byte tile configuration (palette 1): tiles 0-3 are C (16 x 16 f32), 4-5 A
    /// (16 rows x K bf16), 6-7 B (K/2 rows x 16 bf16 pairs).
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    fn config(k: usize) -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut set = |t: usize, rows: usize, colsb: usize| {
            c[16 + 2 * t..][..2].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + t] = rows as u8;
        };
        for t in 0..4 {
            set(t, TR, 64);
        }
        for t in 4..6 {
            set(t, TR, 2 * k);
        }
        for t in 6..8 {
            set(t, k / 2, 64);
        }
        TileConfig(c)
    }

    /// One block of output rows x channels for one plane: zeroes its C tiles, accumulates
    /// every step, stores the tiles to `acc`. `SHAPE` is the block in C tiles (row tiles x
    /// column tiles): 0 = 2 x 2, 1 = 1 x 2, 2 = 4 x 1, 3 = 2 x 1, 4 = 1 x 1. Row tile `r`
    /// covers output rows `tiles[r] .. + 16`, which read the input from `input + tiles[r] *
    /// row_step` on (`row_step` values per row) and land in `acc + tiles[r] * b` on (`b`
    /// values per row); column tiles are 16 channels apart from `w` and `acc`.
    ///
    /// # Safety
    /// Tiles must be configured with `config(k)` on this thread and `tiles` hold at least
    /// the shape's row tiles. For every step `s` and row tile, the A tile reads 16 rows of
    /// `k` values at `input + tiles[r] * row_step + offs[s]`, `row_step` values apart; the
    /// B tiles `k / 2` rows of 32 values (+ 32 for the second column) at `w + s * w_step`,
    /// `ldw` bytes apart; the C tiles write 16 rows of 16 values (+ 16 for the second
    /// column) at `acc + tiles[r] * b`, `b` values apart: all inside their buffers.
    unsafe fn block<const SHAPE: u8>(
        input: *const u16,
        row_step: usize,
        tiles: &[usize],
        offs: &[usize],
        w: *const u16,
        w_step: usize,
        ldw: usize,
        acc: *mut f32,
        b: usize,
    ) {
        let row_tiles = match SHAPE {
            0 | 3 => 2,
            2 => 4,
            _ => 1,
        };
        debug_assert!(tiles.len() >= row_tiles);
        let (lda, ldc) = (row_step * 2, b * 4);
        let mut x = [input; 4];
        for r in 0..row_tiles {
            x[r] = input.wrapping_add(tiles[r] * row_step);
        }
        // SAFETY (all blocks below): the caller's contract; tmm registers are never used
        // by compiled code, so their state carries from one asm block to the next.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem, preserves_flags)
            );
            for (s, &off) in offs.iter().enumerate() {
                let b = w.add(s * w_step);
                match SHAPE {
                    0 => asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldw}*1]",
                        "tileloadd tmm7, [{b1} + {ldw}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) x[0].add(off),
                        a1 = in(reg) x[1].add(off),
                        b0 = in(reg) b,
                        b1 = in(reg) b.add(32),
                        lda = in(reg) lda,
                        ldw = in(reg) ldw,
                        options(nostack, readonly, preserves_flags)
                    ),
                    1 => asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldw}*1]",
                        "tileloadd tmm7, [{b1} + {ldw}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        a0 = in(reg) x[0].add(off),
                        b0 = in(reg) b,
                        b1 = in(reg) b.add(32),
                        lda = in(reg) lda,
                        ldw = in(reg) ldw,
                        options(nostack, readonly, preserves_flags)
                    ),
                    2 => asm!(
                        "tileloadd tmm6, [{b0} + {ldw}*1]",
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm4, [{a2} + {lda}*1]",
                        "tdpbf16ps tmm1, tmm5, tmm6",
                        "tileloadd tmm5, [{a3} + {lda}*1]",
                        "tdpbf16ps tmm2, tmm4, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm6",
                        a0 = in(reg) x[0].add(off),
                        a1 = in(reg) x[1].add(off),
                        a2 = in(reg) x[2].add(off),
                        a3 = in(reg) x[3].add(off),
                        b0 = in(reg) b,
                        lda = in(reg) lda,
                        ldw = in(reg) ldw,
                        options(nostack, readonly, preserves_flags)
                    ),
                    3 => asm!(
                        "tileloadd tmm6, [{b0} + {ldw}*1]",
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm5, tmm6",
                        a0 = in(reg) x[0].add(off),
                        a1 = in(reg) x[1].add(off),
                        b0 = in(reg) b,
                        lda = in(reg) lda,
                        ldw = in(reg) ldw,
                        options(nostack, readonly, preserves_flags)
                    ),
                    _ => asm!(
                        "tileloadd tmm6, [{b0} + {ldw}*1]",
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        a0 = in(reg) x[0].add(off),
                        b0 = in(reg) b,
                        lda = in(reg) lda,
                        ldw = in(reg) ldw,
                        options(nostack, readonly, preserves_flags)
                    ),
                }
            }
            // C tile -> (row tile, column tile): 2 x 2 and 1 x 2 fill tiles 0, 1 along
            // the first row tile; the single-column shapes one tile per row tile.
            let c = |r: usize, col: usize| acc.add(tiles[r] * b + 16 * col);
            match SHAPE {
                0 => {
                    store::<0>(c(0, 0), ldc);
                    store::<1>(c(0, 1), ldc);
                    store::<2>(c(1, 0), ldc);
                    store::<3>(c(1, 1), ldc);
                }
                1 => {
                    store::<0>(c(0, 0), ldc);
                    store::<1>(c(0, 1), ldc);
                }
                2 => {
                    store::<0>(c(0, 0), ldc);
                    store::<1>(c(1, 0), ldc);
                    store::<2>(c(2, 0), ldc);
                    store::<3>(c(3, 0), ldc);
                }
                3 => {
                    store::<0>(c(0, 0), ldc);
                    store::<1>(c(1, 0), ldc);
                }
                _ => store::<0>(c(0, 0), ldc),
            }
        }
    }

    /// Stores C tile `T` (16 rows x 64 bytes) at `dst`, `ldc` bytes per row.
    ///
    /// # Safety
    /// The 16 rows must be inside the destination buffer; tiles configured.
    unsafe fn store<const T: u8>(dst: *mut f32, ldc: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match T {
                0 => {
                    asm!("tilestored [{d} + {s}*1], tmm0", d = in(reg) dst, s = in(reg) ldc, options(nostack, preserves_flags))
                }
                1 => {
                    asm!("tilestored [{d} + {s}*1], tmm1", d = in(reg) dst, s = in(reg) ldc, options(nostack, preserves_flags))
                }
                2 => {
                    asm!("tilestored [{d} + {s}*1], tmm2", d = in(reg) dst, s = in(reg) ldc, options(nostack, preserves_flags))
                }
                _ => {
                    asm!("tilestored [{d} + {s}*1], tmm3", d = in(reg) dst, s = in(reg) ldc, options(nostack, preserves_flags))
                }
            }
        }
    }

    /// `dst[i] = src[i * b] + add` for i < n, 16 at a time.
    ///
    /// # Safety
    /// `src + i * b` and `dst + i` must be inside their buffers for i < n; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    unsafe fn unpack_row(src: *const f32, b: usize, n: usize, add: f32, dst: *mut f32) {
        use std::arch::x86_64::*;
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(b as i32),
        );
        let add = _mm512_set1_ps(add);
        // SAFETY: the caller's contract; masked lanes neither read nor write.
        unsafe {
            for i0 in (0..n).step_by(16) {
                let left = n - i0;
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1 << left) - 1 };
                let v = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    idx,
                    src.add(i0 * b).cast(),
                );
                _mm512_mask_storeu_ps(dst.add(i0), mask, _mm512_add_ps(v, add));
            }
        }
    }

    /// The output, written by several tasks at once: each task owns the values of its own
    /// output planes `(n, *, z)`.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint values through it (see `forward`).
    unsafe impl Send for Out {}
    // SAFETY: as above.
    unsafe impl Sync for Out {}

    impl Out {
        fn at(self, i: usize) -> *mut f32 {
            self.0.wrapping_add(i)
        }
    }

    /// Forward convolution on tiles; the caller checked [`super::conv3d_bf16_uses_amx`] and
    /// the buffer lengths.
    pub(super) fn forward(
        x: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        g: &ConvGeometry,
    ) -> Vec<f32> {
        let (a, b) = (g.in_channels, g.out_channels);
        let [od, oh, ow] = g.out_size();
        let (rows, rw, sw) = (g.rows(), g.row_width(), g.stride[2]);
        let [dp, _, _] = g.padded();
        let plane_len = g.padded_plane();
        let (padded, start) = pad_bf16(x, g);
        let padded = &padded[start..];
        let st = steps(weight, g);
        let k = st.k;
        // Row tiles (their first output rows): the plane's rows in one run, or each output
        // row's `ow` valid rows on their own, skipping the junk rows between, whichever
        // takes fewer tiles (the second for strided convolutions, whose rows are half junk).
        let tiles: Vec<usize> = if ow.div_ceil(TR) * oh < rows.div_ceil(TR) {
            (0..oh)
                .flat_map(|y| (0..ow).step_by(TR).map(move |i| y * rw + i))
                .collect()
        } else {
            (0..rows).step_by(TR).collect()
        };
        // Rows of `acc`: up to the end of the last tile (< rows + 16).
        let acc_rows = tiles.last().map_or(0, |t| t + TR);
        let ldw = b * 4;
        let w_step = k * b;
        let max_off = st.offs.iter().copied().max().unwrap_or(0);
        // The furthest read of the last plane: its last tile row, last step, K values (the
        // slack after the planes covers the rows past `rows`).
        debug_assert!(acc_rows <= rows + TR);
        debug_assert!(
            (g.batch * dp - dp + (od - 1) * g.stride[0]) * plane_len
                + max_off
                + (acc_rows - 1) * sw * a
                + k
                <= padded.len()
        );
        // Written in full by the tasks (every (n, c, z, y, x)) before `set_len`.
        let out_len = g.out_len();
        let mut out: Vec<f32> = Vec::with_capacity(out_len);
        let dst_all = Out(out.spare_capacity_mut().as_mut_ptr().cast());
        (0..g.batch * od).into_par_iter().for_each_init(
            Vec::new,
            |acc_buf: &mut Vec<f32>, task| {
                let (n, z) = (task / od, task % od);
                // Every value read below is written by the tiles first.
                acc_buf.resize(acc_rows * b + LINE, 0.0);
                let acc0 = line_start(acc_buf.as_ptr());
                let acc = &mut acc_buf[acc0..][..acc_rows * b];
                let plane0 = (n * dp + z * g.stride[0]) * plane_len;
                let cfg = config(k);
                // SAFETY: `cfg` is a valid palette-1 configuration (tile rows <= 16,
                // colsb <= 64); the process has the tile data permission (checked by
                // `bf16_supported`), and the tiles are configured and released on this
                // thread, inside this task.
                unsafe {
                    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly, preserves_flags));
                }
                let input = padded[plane0..].as_ptr();
                let (offs, row_step) = (&st.offs[..], sw * a);
                // Up to 4 row tiles (64 rows) at a time: their input stays in L1 while the
                // column tiles go by.
                for chunk in tiles.chunks(4) {
                    for c0 in (0..b - b % 32).step_by(32) {
                        let wc = st.weights[st.w0 + c0 * 2..].as_ptr();
                        let dst = acc[c0..].as_mut_ptr();
                        for t in chunk.chunks(2) {
                            // SAFETY: A tiles read the 16 rows from each tile start of `t`
                            // (< acc_rows) of this plane at offsets up to `max_off` + K
                            // values, inside `padded` by the debug_assert above; B tiles read
                            // K/2 rows of 32 channels from column c0 + 32 <= B of each step's
                            // weights; C tiles write those rows x 32 channels of `acc`
                            // (acc_rows x B).
                            unsafe {
                                if t.len() == 2 {
                                    block::<0>(input, row_step, t, offs, wc, w_step, ldw, dst, b);
                                } else {
                                    block::<1>(input, row_step, t, offs, wc, w_step, ldw, dst, b);
                                }
                            }
                        }
                    }
                    if b % 32 == 16 {
                        let c0 = b - 16;
                        let wc = st.weights[st.w0 + c0 * 2..].as_ptr();
                        let dst = acc[c0..].as_mut_ptr();
                        // SAFETY: as above, for 4, 2 or 1 row tiles and the last 16 channels.
                        unsafe {
                            match chunk.len() {
                                4 => block::<2>(input, row_step, chunk, offs, wc, w_step, ldw, dst, b),
                                1 => block::<4>(input, row_step, chunk, offs, wc, w_step, ldw, dst, b),
                                _ => {
                                    block::<3>(input, row_step, chunk, offs, wc, w_step, ldw, dst, b);
                                    if chunk.len() == 3 {
                                        let t = &chunk[2..];
                                        block::<4>(input, row_step, t, offs, wc, w_step, ldw, dst, b);
                                    }
                                }
                            }
                        }
                    }
                }
                // SAFETY: releases this thread's tile state (configured above).
                unsafe {
                    asm!("tilerelease", options(nostack, nomem, preserves_flags));
                }
                // Rows y * rw .. + ow of `acc` (ow x B, in L1) to each channel's row y.
                let plane = oh * ow;
                let first = (n * b * od + z) * plane;
                for y in 0..oh {
                    let src = &acc[y * rw * b..][..ow * b];
                    for c in 0..b {
                        let add = bias.map_or(0.0, |bb| bb[c]);
                        let at = first + c * od * plane + y * ow;
                        debug_assert!(at + ow <= out_len);
                        // SAFETY: output values (n, c, z, y, 0..ow) are inside `out`, and
                        // only this task (n, z) writes them; `src` holds ow x B values.
                        unsafe { unpack_row(src[c..].as_ptr(), b, ow, add, dst_all.at(at)) };
                    }
                }
            },
        );
        // SAFETY: the tasks (n, z) for every n < N, z < oD wrote every channel c < B, row
        // y < oH and column < oW of their planes: all `out_len` values.
        unsafe { out.set_len(out_len) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::bf16;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let b = |bits: u32| bf16(f32::from_bits(bits));
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(bf16(-2.0), 0xc000);
        // Below, at and above the halfway point; ties go to the even neighbour.
        assert_eq!(b(0x3f80_7fff), 0x3f80);
        assert_eq!(b(0x3f80_8000), 0x3f80);
        assert_eq!(b(0x3f81_8000), 0x3f82);
        assert_eq!(b(0x3f80_8001), 0x3f81);
        // The largest finite f32 rounds up to infinity; infinities and zeros stay.
        assert_eq!(b(0x7f7f_ffff), 0x7f80);
        assert_eq!(bf16(f32::INFINITY), 0x7f80);
        assert_eq!(bf16(f32::NEG_INFINITY), 0xff80);
        assert_eq!(bf16(-0.0), 0x8000);
        // A NaN whose payload sits in the low bits only stays a (quiet) NaN.
        let nan = b(0x7f80_0001);
        assert!(nan & 0x7f80 == 0x7f80 && nan & 0x7f != 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_conversion_matches_the_scalar_one() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        // 16 channels x 13 voxels of assorted bit patterns (ties, NaNs, infinities,
        // subnormals), channels `chan` = 13 apart, into a channels-last block with A = 32.
        let specials = [
            0x7f80_0001u32,
            0xff80_0000,
            0x3f80_8000,
            0x0000_0001,
            0x8000_0000,
        ];
        let mut state = 0x1234_5678u32;
        let src: Vec<f32> = (0..16 * 13)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                f32::from_bits(if i % 7 == 0 { specials[i % 5] } else { state })
            })
            .collect();
        let mut dst = vec![0xabcdu16; 13 * 32 + 16];
        // SAFETY: reads 16 channels x 13 voxels of `src`; writes voxels 0..13 x channels
        // 0..16 of a 32-channel layout, inside `dst`.
        unsafe { super::tiles::convert_block(src.as_ptr(), 13, 13, dst.as_mut_ptr(), 32) };
        for i in 0..13 {
            for c in 0..16 {
                assert_eq!(
                    dst[i * 32 + c],
                    bf16(src[c * 13 + i]),
                    "voxel {i} channel {c}"
                );
            }
            // Channels 16..32 belong to another block: untouched.
            assert!(dst[i * 32 + 16..][..16].iter().all(|v| *v == 0xabcd));
        }
    }
}
