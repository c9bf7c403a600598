//! The op table (DESIGN.md section 4): for every op, its forward formula and the
//! gradient it sends to each operand, side by side. The reference backend
//! (`python/scalargrad/reference.py`) implements the same rows in the same order
//! of floating-point operations, so both give the same bits.
//!
//! `ln`, `exp`, `tanh` and `powf` are the platform libm's, as Python's `math` calls them.

/// What a node computes. Stored as one byte per node in the arena.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A leaf: a parameter, an input or a wrapped constant.
    Leaf = 0,
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    /// `a ** c` with a number `c`.
    PowConst,
    /// `c ** a` with a number `c`.
    RPowConst,
    /// `a ** b` with both operands nodes.
    Pow,
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Relu,
    Abs,
    /// `clamp(a, lo, hi)`.
    Clamp,
    /// n-ary `((x1 + x2) + x3) + ...`.
    Sum,
    /// n-ary `((w1*x1 + w2*x2) + w3*x3) + ...`; operands are `w1..wn, x1..xn`.
    Dot,
    /// n-ary `m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))`, `m` the largest `xi`.
    LogSumExp,
    /// A slot on the free list (never seen by users).
    Free,
}

/// Every op users can build, in table order. Both backends export this list.
pub const ALL: [Op; 19] = [
    Op::Leaf,
    Op::Add,
    Op::Sub,
    Op::Mul,
    Op::Div,
    Op::Neg,
    Op::PowConst,
    Op::RPowConst,
    Op::Pow,
    Op::Exp,
    Op::Log,
    Op::Tanh,
    Op::Sigmoid,
    Op::Relu,
    Op::Abs,
    Op::Clamp,
    Op::Sum,
    Op::Dot,
    Op::LogSumExp,
];

impl Op {
    /// The op's kind name, shared with the reference backend.
    pub fn kind(self) -> &'static str {
        match self {
            Op::Leaf => "leaf",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Neg => "neg",
            Op::PowConst => "pow_const",
            Op::RPowConst => "rpow_const",
            Op::Pow => "pow",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Tanh => "tanh",
            Op::Sigmoid => "sigmoid",
            Op::Relu => "relu",
            Op::Abs => "abs",
            Op::Clamp => "clamp",
            Op::Sum => "sum",
            Op::Dot => "dot",
            Op::LogSumExp => "logsumexp",
            Op::Free => "free",
        }
    }

    /// micrograd's `_op` string for ops without a constant in their name.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Leaf | Op::Free => "",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Neg => "neg",
            Op::PowConst | Op::RPowConst | Op::Pow => "**",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Tanh => "tanh",
            Op::Sigmoid => "sigmoid",
            Op::Relu => "ReLU",
            Op::Abs => "abs",
            Op::Clamp => "clamp",
            Op::Sum => "sum",
            Op::Dot => "dot",
            Op::LogSumExp => "logsumexp",
        }
    }

    pub fn is_binary(self) -> bool {
        matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow)
    }

    pub fn is_nary(self) -> bool {
        matches!(self, Op::Sum | Op::Dot | Op::LogSumExp)
    }

    /// Ops that carry number constants in the arena's constant table.
    pub fn has_consts(self) -> bool {
        matches!(self, Op::PowConst | Op::RPowConst | Op::Clamp)
    }
}

/// `match op` with one arm per op, each binding `$op` to that arm's constant op
/// before running the body for its arity: the op table's own `match` inside
/// `binary`, `unary`, ... then folds away, leaving one jump per node.
#[macro_export]
macro_rules! per_op {
    ($x:expr, |$op:ident| { binary => $bin:expr, unary => $un:expr, nary => $nary:expr $(,)? }) => {{
        use $crate::ops::Op;
        match $x {
            Op::Add => {
                let $op = Op::Add;
                $bin
            }
            Op::Sub => {
                let $op = Op::Sub;
                $bin
            }
            Op::Mul => {
                let $op = Op::Mul;
                $bin
            }
            Op::Div => {
                let $op = Op::Div;
                $bin
            }
            Op::Pow => {
                let $op = Op::Pow;
                $bin
            }
            Op::Neg => {
                let $op = Op::Neg;
                $un
            }
            Op::PowConst => {
                let $op = Op::PowConst;
                $un
            }
            Op::RPowConst => {
                let $op = Op::RPowConst;
                $un
            }
            Op::Exp => {
                let $op = Op::Exp;
                $un
            }
            Op::Log => {
                let $op = Op::Log;
                $un
            }
            Op::Tanh => {
                let $op = Op::Tanh;
                $un
            }
            Op::Sigmoid => {
                let $op = Op::Sigmoid;
                $un
            }
            Op::Relu => {
                let $op = Op::Relu;
                $un
            }
            Op::Abs => {
                let $op = Op::Abs;
                $un
            }
            Op::Clamp => {
                let $op = Op::Clamp;
                $un
            }
            Op::Sum => {
                let $op = Op::Sum;
                $nary
            }
            Op::Dot => {
                let $op = Op::Dot;
                $nary
            }
            Op::LogSumExp => {
                let $op = Op::LogSumExp;
                $nary
            }
            Op::Leaf | Op::Free => unreachable!("a leaf is not computed"),
        }
    }};
}

// ---- forward ---------------------------------------------------------------

/// The one NaN both backends give back, in data and gradients (Python's
/// `float('nan')`, bits `0x7ff8000000000000`): hardware and libm NaNs differ in sign
/// and payload. Whether a result is NaN never depends on those bits, so the engine
/// stores whatever NaN the hardware made and applies this where a number leaves
/// it (the bindings' readers, batched outputs): the hot paths pay nothing.
#[inline(always)]
pub fn canon(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else {
        x
    }
}

/// Forward of a binary op.
#[inline(always)]
pub fn binary(op: Op, a: f64, b: f64) -> f64 {
    match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div => a / b,
        Op::Pow => a.powf(b),
        _ => unreachable!("{op:?} is not binary"),
    }
}

/// Forward of a unary op; `c` holds its constants (`c[0]` for pow, `lo, hi` for clamp).
#[inline(always)]
pub fn unary(op: Op, a: f64, c: [f64; 2]) -> f64 {
    match op {
        Op::Neg => -a,
        Op::PowConst => a.powf(c[0]),
        Op::RPowConst => c[0].powf(a),
        Op::Exp => a.exp(),
        Op::Log => a.ln(),
        Op::Tanh => a.tanh(),
        Op::Sigmoid => 1.0 / (1.0 + (-a).exp()),
        // `a < 0` is false for NaN and -0.0, which both pass through.
        Op::Relu => {
            if a < 0.0 {
                0.0
            } else {
                a
            }
        }
        Op::Abs => a.abs(),
        // Python's `min(max(a, lo), hi)`: each comparison keeps its first argument
        // unless the other is strictly better, so NaN stays NaN.
        Op::Clamp => {
            let t = if c[0] > a { c[0] } else { a };
            if c[1] < t {
                c[1]
            } else {
                t
            }
        }
        _ => unreachable!("{op:?} is not unary"),
    }
}

/// Forward of `sum`: `((x1 + x2) + x3) + ...`, 0.0 when empty.
#[inline]
pub fn sum(xs: impl Iterator<Item = f64>) -> f64 {
    let mut xs = xs;
    match xs.next() {
        None => 0.0,
        Some(first) => xs.fold(first, |acc, x| acc + x),
    }
}

/// Forward of `dot`: `((w1*x1 + w2*x2) + w3*x3) + ...`, 0.0 when empty. No fused multiply-add.
#[inline]
pub fn dot(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    let mut pairs = pairs;
    match pairs.next() {
        None => 0.0,
        Some((w, x)) => pairs.fold(w * x, |acc, (w, x)| acc + w * x),
    }
}

/// Forward of `logsumexp`: `m + ln(((exp(x1 - m) + exp(x2 - m)) + ...))` with `m`
/// the largest `xi`, taken in order (`m = x1`, then each later `xi > m` replaces it).
/// Where that formula has no answer it is defined as the limit: any NaN gives NaN;
/// otherwise `m = +inf` gives `+inf` and all `-inf` (or no operands) give `-inf`.
#[inline]
pub fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let mut it = xs.clone();
    let Some(mut m) = it.next() else {
        return f64::NEG_INFINITY;
    };
    for x in it {
        if x > m {
            m = x;
        }
    }
    if m.is_infinite() {
        return if xs.clone().any(f64::is_nan) {
            f64::NAN
        } else {
            m
        };
    }
    m + sum(xs.map(|x| (x - m).exp())).ln()
}

/// The operands of a `dot` node, stored `w1..wn, x1..xn`, as `(ws, xs)`.
#[inline(always)]
pub fn split_dot<T>(operands: &[T]) -> (&[T], &[T]) {
    operands.split_at(operands.len() / 2)
}

/// Forward of an n-ary op (`sum` or `dot`) over its operands' slots in `data`.
#[inline(always)]
pub fn nary(op: Op, operands: &[u32], data: &[f64]) -> f64 {
    match op {
        Op::Sum => sum(operands.iter().map(|&x| data[x as usize])),
        Op::LogSumExp => logsumexp(operands.iter().map(|&x| data[x as usize])),
        Op::Dot => {
            let (ws, xs) = split_dot(operands);
            dot(ws
                .iter()
                .zip(xs)
                .map(|(&w, &x)| (data[w as usize], data[x as usize])))
        }
        _ => unreachable!("{op:?} is not n-ary"),
    }
}

// ---- backward --------------------------------------------------------------

/// The contributions `(to a, to b)` of a binary op, given the output gradient `g`.
#[inline(always)]
pub fn binary_grad(op: Op, g: f64, a: f64, b: f64, out: f64) -> (f64, f64) {
    match op {
        Op::Add => (g, g),
        Op::Sub => (g, -g),
        Op::Mul => (g * b, g * a),
        Op::Div => (g / b, -g * out / b),
        Op::Pow => (g * (b * a.powf(b - 1.0)), g * (out * a.ln())),
        _ => unreachable!("{op:?} is not binary"),
    }
}

/// The contribution to `a` of a unary op, given the output gradient `g`.
#[inline(always)]
pub fn unary_grad(op: Op, g: f64, a: f64, out: f64, c: [f64; 2]) -> f64 {
    match op {
        Op::Neg => -g,
        // d/da a^c = c * a^(c-1)
        Op::PowConst => g * (c[0] * a.powf(c[0] - 1.0)),
        // d/da c^a = c^a * ln c
        Op::RPowConst => g * (out * c[0].ln()),
        Op::Exp => g * out,
        Op::Log => g / a,
        // d tanh = 1 - tanh^2
        Op::Tanh => g * (1.0 - out * out),
        // d sigmoid = s * (1 - s)
        Op::Sigmoid => g * (out * (1.0 - out)),
        Op::Relu => g * (if out > 0.0 { 1.0 } else { 0.0 }),
        Op::Abs => g * sign(a),
        Op::Clamp => g * (if c[0] <= a && a <= c[1] { 1.0 } else { 0.0 }),
        _ => unreachable!("{op:?} is not unary"),
    }
}

/// Backward of an n-ary op: adds its contributions, given the output gradient `g`
/// and the output `out`, to the `grad` of its operands' slots (values read from `data`).
#[inline(always)]
pub fn nary_grad(op: Op, g: f64, out: f64, operands: &[u32], data: &[f64], grad: &mut [f64]) {
    match op {
        // d/dxk sum = 1
        Op::Sum => {
            for &x in operands {
                grad[x as usize] += g;
            }
        }
        // d/dxk logsumexp = exp(xk - out), softmax's k-th output
        Op::LogSumExp => {
            for &x in operands {
                grad[x as usize] += logsumexp_grad(g, data[x as usize], out);
            }
        }
        // d/dwk dot = xk, d/dxk dot = wk
        Op::Dot => {
            let (ws, xs) = split_dot(operands);
            for (&w, &x) in ws.iter().zip(xs) {
                let (w, x) = (w as usize, x as usize);
                grad[w] += g * data[x];
                grad[x] += g * data[w];
            }
        }
        _ => unreachable!("{op:?} is not n-ary"),
    }
}

/// The contribution of `logsumexp` to an operand of value `x`.
#[inline(always)]
pub fn logsumexp_grad(g: f64, x: f64, out: f64) -> f64 {
    g * (x - out).exp()
}

/// sign(a) with sign(0) = 0 and sign(NaN) = NaN.
#[inline]
pub fn sign(a: f64) -> f64 {
    if a > 0.0 {
        1.0
    } else if a < 0.0 {
        -1.0
    } else if a == 0.0 {
        0.0
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ieee_results_never_panic() {
        assert_eq!(binary(Op::Div, 1.0, 0.0), f64::INFINITY);
        assert_eq!(unary(Op::Log, 0.0, [0.0; 2]), f64::NEG_INFINITY);
        assert!(unary(Op::Log, -1.0, [0.0; 2]).is_nan());
        assert_eq!(unary(Op::Exp, 1000.0, [0.0; 2]), f64::INFINITY);
        assert!(unary(Op::PowConst, -8.0, [1.0 / 3.0, 0.0]).is_nan());
        assert_eq!(unary(Op::Sigmoid, -1000.0, [0.0; 2]), 0.0);
    }

    #[test]
    fn canon_makes_every_nan_the_same() {
        let bits = 0x7ff8_0000_0000_0000;
        let nans = [
            binary(Op::Div, 0.0, 0.0),
            binary(Op::Mul, f64::INFINITY, 0.0),
            binary(Op::Add, f64::INFINITY, f64::NEG_INFINITY),
            binary(Op::Pow, -8.0, 1.0 / 3.0),
            unary(Op::Log, -1.0, [0.0; 2]),
            unary(Op::Neg, f64::NAN, [0.0; 2]),
            unary(Op::PowConst, -8.0, [1.0 / 3.0, 0.0]),
            unary(Op::RPowConst, 0.5, [-2.0, 0.0]),
            sum([f64::INFINITY, f64::NEG_INFINITY].into_iter()),
            dot([(f64::INFINITY, 0.0)].into_iter()),
        ];
        for (k, x) in nans.into_iter().enumerate() {
            assert!(x.is_nan(), "case {k}");
            assert_eq!(canon(x).to_bits(), bits, "case {k}");
        }
        assert_eq!(canon(-f64::NAN).to_bits(), bits);
        assert_eq!(canon(-1.5), -1.5);
    }

    #[test]
    fn relu_and_clamp_keep_nan() {
        assert!(unary(Op::Relu, f64::NAN, [0.0; 2]).is_nan());
        assert!(unary(Op::Clamp, f64::NAN, [-1.0, 1.0]).is_nan());
        assert_eq!(unary(Op::Clamp, 5.0, [-1.0, 1.0]), 1.0);
        assert_eq!(unary(Op::Clamp, -5.0, [-1.0, 1.0]), -1.0);
        assert_eq!(unary(Op::Relu, -2.0, [0.0; 2]), 0.0);
    }

    #[test]
    fn logsumexp_edges() {
        let lse = |xs: &[f64]| logsumexp(xs.iter().copied());
        let inf = f64::INFINITY;
        assert_eq!(lse(&[]), -inf);
        assert_eq!(lse(&[-inf, -inf]), -inf);
        assert_eq!(lse(&[1.0, inf, 2.0]), inf);
        assert!(lse(&[inf, f64::NAN]).is_nan());
        assert!(lse(&[f64::NAN, 1.0]).is_nan());
        assert!(lse(&[1.0, f64::NAN]).is_nan());
        assert_eq!(lse(&[1000.0, 1000.0]), 1000.0 + 2f64.ln());
        let (a, b) = (0.3f64, -1.2f64);
        let m = a.max(b);
        assert_eq!(
            lse(&[a, b]).to_bits(),
            (m + ((a - m).exp() + (b - m).exp()).ln()).to_bits()
        );
    }

    #[test]
    fn sign_edges() {
        assert_eq!(sign(0.0), 0.0);
        assert_eq!(sign(-0.0), 0.0);
        assert!(sign(f64::NAN).is_nan());
        assert_eq!(sign(-3.0), -1.0);
    }

    #[test]
    fn dot_is_left_to_right_without_fma() {
        let w = [0.1, 0.2, 0.3];
        let x = [0.7, 0.11, 0.13];
        let expect: f64 = (0.1 * 0.7 + 0.2 * 0.11) + 0.3 * 0.13;
        assert_eq!(
            dot(w.iter().copied().zip(x.iter().copied())).to_bits(),
            expect.to_bits()
        );
        assert_eq!(sum([].into_iter()), 0.0);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-6;
        for &a in &[-1.3, -0.2, 0.4, 2.5] {
            for op in [
                Op::Exp,
                Op::Tanh,
                Op::Sigmoid,
                Op::Neg,
                Op::PowConst,
                Op::RPowConst,
            ] {
                let c = [3.0, 0.0];
                let num = (unary(op, a + h, c) - unary(op, a - h, c)) / (2.0 * h);
                let ana = unary_grad(op, 1.0, a, unary(op, a, c), c);
                assert!(
                    (num - ana).abs() < 1e-5 * (1.0 + ana.abs()),
                    "{op:?} at {a}"
                );
            }
        }
    }
}
