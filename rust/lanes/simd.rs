//! Eight lanes of `f64` as the dense kernels see them (`V8`): in one AVX-512
//! register, in two AVX2 registers, or in a plain array, each picked at run time
//! where the CPU has it. IEEE multiplies and adds, one per lane, never fused, so
//! every instruction set gives the same bits.

use super::ACC;

pub(super) type Oct = [f64; ACC];

/// Eight lanes of `f64` in registers: IEEE multiplies and adds, one per lane,
/// never fused.
pub(super) trait V8: Copy {
    fn load(s: &[f64]) -> Self;
    fn store(self, s: &mut [f64]);
    fn splat(x: f64) -> Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `super::combine` of each of eight accumulator sets, lane `i` of the
    /// result from `a[i]`.
    #[inline(always)]
    fn combine8(a: [Self; 8]) -> Self {
        let mut r = [0.0; 8];
        for (r, a) in r.iter_mut().zip(a) {
            let mut o = [0.0; 8];
            a.store(&mut o);
            *r = super::combine(o);
        }
        Self::load(&r)
    }
}

impl V8 for Oct {
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        s[..8].try_into().unwrap()
    }
    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        s[..8].copy_from_slice(&self)
    }
    #[inline(always)]
    fn splat(x: f64) -> Self {
        [x; 8]
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i] + o[i])
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i] * o[i])
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Eight lanes in one AVX-512 register (used only where the CPU has AVX-512F).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Z(__m512d);

#[cfg(target_arch = "x86_64")]
impl V8 for Z {
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        let s = &s[..8];
        // SAFETY: 8 readable values; only run where AVX-512F is detected.
        Z(unsafe { _mm512_loadu_pd(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        let s = &mut s[..8];
        // SAFETY: 8 writable values; only run where AVX-512F is detected.
        unsafe { _mm512_storeu_pd(s.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn splat(x: f64) -> Self {
        // SAFETY: only run where AVX-512F is detected.
        Z(unsafe { _mm512_set1_pd(x) })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: only run where AVX-512F is detected.
        Z(unsafe { _mm512_add_pd(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: only run where AVX-512F is detected.
        Z(unsafe { _mm512_mul_pd(self.0, o.0) })
    }
    /// The tree across registers: adjacent pairs, then pairs of pairs, then
    /// halves, each level one shuffle pair and one add per two registers.
    #[inline(always)]
    fn combine8(a: [Self; 8]) -> Self {
        // SAFETY: only run where AVX-512F is detected.
        unsafe {
            let pair = |x: Z, y: Z| {
                // [x0+x1, y0+y1, x2+x3, y2+y3, ...]
                _mm512_add_pd(_mm512_unpacklo_pd(x.0, y.0), _mm512_unpackhi_pd(x.0, y.0))
            };
            let (b01, b23, b45, b67) = (
                pair(a[0], a[1]),
                pair(a[2], a[3]),
                pair(a[4], a[5]),
                pair(a[6], a[7]),
            );
            let quad = |x: __m512d, y: __m512d| {
                let i = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
                let j = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
                _mm512_add_pd(
                    _mm512_permutex2var_pd(x, i, y),
                    _mm512_permutex2var_pd(x, j, y),
                )
            };
            let (c0, c1) = (quad(b01, b23), quad(b45, b67));
            let i = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
            let j = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
            Z(_mm512_add_pd(
                _mm512_permutex2var_pd(c0, i, c1),
                _mm512_permutex2var_pd(c0, j, c1),
            ))
        }
    }
}

/// Eight lanes in two AVX registers (used only where the CPU has AVX2).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Y(__m256d, __m256d);

#[cfg(target_arch = "x86_64")]
impl V8 for Y {
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        let s = &s[..8];
        // SAFETY: 8 readable values; only run where AVX2 is detected.
        unsafe {
            Y(
                _mm256_loadu_pd(s.as_ptr()),
                _mm256_loadu_pd(s.as_ptr().add(4)),
            )
        }
    }
    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        let s = &mut s[..8];
        // SAFETY: 8 writable values; only run where AVX2 is detected.
        unsafe {
            _mm256_storeu_pd(s.as_mut_ptr(), self.0);
            _mm256_storeu_pd(s.as_mut_ptr().add(4), self.1);
        }
    }
    #[inline(always)]
    fn splat(x: f64) -> Self {
        // SAFETY: only run where AVX2 is detected.
        unsafe { Y(_mm256_set1_pd(x), _mm256_set1_pd(x)) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: only run where AVX2 is detected.
        unsafe { Y(_mm256_add_pd(self.0, o.0), _mm256_add_pd(self.1, o.1)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: only run where AVX2 is detected.
        unsafe { Y(_mm256_mul_pd(self.0, o.0), _mm256_mul_pd(self.1, o.1)) }
    }
}
