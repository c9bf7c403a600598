//! Long passes over the arena from Python (`backward()`, a `Tape`'s forward and
//! backward), cut into chunks so that other threads and Ctrl-C get their turn.

use super::diagnostics::{backward_anomaly, node_anomaly, ANOMALY};
use super::gil::{GilCell, ARENA};
use crate::arena::NodeId;
use crate::{backward, replay};
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The buffer of the last `backward()`'s order, reused by the next one.
struct SpareOrder(Vec<NodeId>);
static SPARE_ORDER: GilCell<SpareOrder> = GilCell::new(SpareOrder(Vec::new()));

/// Nodes processed between looks at the clock during a long sweep (see `Pacer`).
const SIGNAL_CHUNK: usize = 1 << 16;

/// Sweeps over fewer nodes than this never pause.
const PAUSE_MIN_NODES: usize = 1 << 20;

/// `Value.backward()`: orders the graph under `root`, seeds it and sweeps.
pub(super) fn backward(py: Python<'_>, root: NodeId) -> PyResult<()> {
    let check = ANOMALY.load(Ordering::Relaxed);
    let started = Instant::now(); // ordering a huge graph counts towards a pause
    let mut order = std::mem::take(&mut SPARE_ORDER.lock(py).0);
    {
        let mut ar = ARENA.lock(py);
        backward::order_into(&mut ar, root, &mut order);
        ar.grad[root as usize] = 1.0;
    }
    // The root's handle keeps the whole graph alive, and nothing can change a
    // node's operands, so the order stays valid between chunks.
    sweep_interruptibly(py, &order, check, started)?;
    if order.capacity() <= 1 << 20 {
        SPARE_ORDER.lock(py).0 = order; // for the next backward()
    }
    Ok(())
}

/// Backward over `order` in chunks, pausing between some of them (see `Pacer`).
pub(super) fn sweep_interruptibly(
    py: Python<'_>,
    order: &[NodeId],
    check: bool,
    started: Instant,
) -> PyResult<()> {
    let mut pacer = Pacer::new(py, order.len(), started);
    for chunk in order.chunks(SIGNAL_CHUNK) {
        {
            let mut ar = ARENA.lock(py);
            backward::sweep(&mut ar, chunk, check).map_err(|a| backward_anomaly(&ar, &a))?;
        }
        pacer.tick(py)?;
    }
    Ok(())
}

/// Recomputes the nodes of `order` (root first) operands first, in chunks as above.
pub(super) fn forward_interruptibly(py: Python<'_>, order: &[NodeId], check: bool) -> PyResult<()> {
    let mut pacer = Pacer::new(py, order.len(), Instant::now());
    for chunk in order.rchunks(SIGNAL_CHUNK) {
        {
            let mut ar = ARENA.lock(py);
            for &id in chunk.iter().rev() {
                replay::recompute(&mut ar, id);
                if check && !ar.data[id as usize].is_finite() {
                    return Err(node_anomaly(&ar, id));
                }
            }
        }
        pacer.tick(py)?;
    }
    Ok(())
}

/// When a long sweep pauses, with the arena not borrowed: it lets other threads
/// take the GIL (so a thread that sends a signal, or simply waits its turn, is not
/// stalled for the whole sweep), then answers Ctrl-C and other signals, whose
/// Python handlers may themselves use the engine.
///
/// A pause comes once at least twice CPython's switch interval has passed since
/// the last. A thread waiting for the GIL asks the holder to hand it over only when
/// a whole interval passes without the GIL being released; releasing it more often
/// than that wakes the waiter early every time, and it never gets its turn.
pub(super) struct Pacer {
    next: Option<Instant>,
    every: Duration,
}

impl Pacer {
    pub(super) fn new(py: Python<'_>, nodes: usize, started: Instant) -> Self {
        if nodes < PAUSE_MIN_NODES {
            return Pacer {
                next: None,
                every: Duration::ZERO,
            };
        }
        let interval = py
            .import("sys")
            .and_then(|sys| sys.call_method0("getswitchinterval"))
            .and_then(|i| i.extract::<f64>())
            .unwrap_or(0.005);
        let every = Duration::from_secs_f64((2.0 * interval).clamp(0.002, 0.05));
        Pacer {
            next: Some(started + every),
            every,
        }
    }

    #[inline]
    pub(super) fn tick(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.next {
            Some(next) if Instant::now() >= next => {
                py.detach(|| {});
                py.check_signals()?;
                self.next = Some(Instant::now() + self.every);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
