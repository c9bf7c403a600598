//! Optimizer steps over a group of parameter nodes, in one call. The formulas and
//! their order of floating-point operations are those of `python/scalargrad/optim.py`,
//! so a Rust model and a reference model take bit-identical steps.

use crate::arena::{Arena, NodeId};

/// SGD: `g = grad + wd * p`; with momentum `v = mu * v + g; g = v`; `p -= lr * g`.
pub fn sgd(ar: &mut Arena, ids: &[NodeId], velocity: &mut [f64], lr: f64, mu: f64, wd: f64) {
    for (k, &id) in ids.iter().enumerate() {
        let i = id as usize;
        let mut g = ar.grad[i];
        if wd != 0.0 {
            g += wd * ar.data[i];
        }
        if mu != 0.0 {
            velocity[k] = mu * velocity[k] + g;
            g = velocity[k];
        }
        ar.data[i] -= lr * g;
    }
}

/// The hyper-parameters of one Adam step; `t` is the step number, from 1.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    pub wd: f64,
    pub t: u64,
}

/// Adam with bias correction (`m`, `v` are the moment estimates, one per parameter).
pub fn adam(ar: &mut Arena, ids: &[NodeId], m: &mut [f64], v: &mut [f64], s: AdamStep) {
    // Python's `b ** t` is C's pow on doubles.
    let c1 = 1.0 - s.b1.powf(s.t as f64);
    let c2 = 1.0 - s.b2.powf(s.t as f64);
    for (k, &id) in ids.iter().enumerate() {
        let i = id as usize;
        let mut g = ar.grad[i];
        if s.wd != 0.0 {
            g += s.wd * ar.data[i];
        }
        m[k] = s.b1 * m[k] + (1.0 - s.b1) * g;
        v[k] = s.b2 * v[k] + (1.0 - s.b2) * (g * g);
        ar.data[i] -= s.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + s.eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_with_momentum_and_decay() {
        let mut ar = Arena::new();
        let p = ar.leaf(1.0).unwrap();
        ar.incref(p);
        let mut vel = [0.0];
        ar.grad[p as usize] = 0.5;
        sgd(&mut ar, &[p], &mut vel, 0.1, 0.9, 0.01);
        let g: f64 = 0.5 + 0.01 * 1.0;
        assert_eq!(ar.data[p as usize], 1.0 - 0.1 * g);
        assert_eq!(vel[0], g);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        let mut ar = Arena::new();
        let p = ar.leaf(1.0).unwrap();
        ar.incref(p);
        ar.grad[p as usize] = 3.0;
        let (mut m, mut v) = ([0.0], [0.0]);
        let step = AdamStep {
            lr: 0.01,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            wd: 0.0,
            t: 1,
        };
        adam(&mut ar, &[p], &mut m, &mut v, step);
        assert!((ar.data[p as usize] - 0.99).abs() < 1e-9);
    }
}
