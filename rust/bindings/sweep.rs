//! Long passes over the arena from Python (`backward()`, a `Tape`'s forward and
//! backward), cut into chunks so that other threads and Ctrl-C get their turn.

use super::diagnostics::{anomaly_on, backward_anomaly, node_anomaly};
use super::gil::{GilCell, ARENA};
use super::value::arena_error;
use crate::arena::{ArenaError, NodeId};
use crate::{backward, replay};
use pyo3::prelude::*;
use std::time::{Duration, Instant};

/// The buffer of the last `backward()`'s order, reused by the next one.
struct SpareOrder(Vec<NodeId>);
static SPARE_ORDER: GilCell<SpareOrder> = GilCell::new(SpareOrder(Vec::new()));

/// Nodes processed between looks at the clock during a long sweep (see `Pacer`).
const SIGNAL_CHUNK: usize = 1 << 16;

/// Sweeps over fewer nodes than this never pause.
const PAUSE_MIN_NODES: usize = 1 << 20;

/// `Value.backward()`: orders the graph under `root`, seeds it and sweeps. An
/// error (Ctrl-C, `MemoryError`, `detect_anomaly`) leaves every gradient as it was.
pub(super) fn backward(py: Python<'_>, root: NodeId) -> PyResult<()> {
    let check = anomaly_on();
    let started = Instant::now(); // ordering a huge graph counts towards a pause
    let mut order = std::mem::take(&mut SPARE_ORDER.lock(py).0);
    let pacer = order_interruptibly(py, root, &mut order, started)?;
    let mut pacer = pacer.unwrap_or_else(|| Pacer::new(py, order.len(), started));
    // The root's handle keeps the whole graph alive, and nothing can change a
    // node's operands, so the order stays valid between chunks.
    let saved = Snapshot::take(py, &order, check || pacer.is_active())?;
    ARENA.lock(py).grad[root as usize] = 1.0;
    let swept = sweep_interruptibly(py, &order, check, &mut pacer);
    saved.restore_if_err(py, &order, &swept);
    swept?;
    if order.capacity() <= 1 << 20 {
        SPARE_ORDER.lock(py).0 = order; // for the next backward()
    }
    Ok(())
}

/// `backward::order_into` a chunk at a time, pausing between chunks as sweeps do
/// (see `Pacer`). Returns the pacer if the walk was long enough to need one.
fn order_interruptibly(
    py: Python<'_>,
    root: NodeId,
    order: &mut Vec<NodeId>,
    started: Instant,
) -> PyResult<Option<Pacer>> {
    let mut pacer: Option<Pacer> = None;
    let mut restarted = false;
    let mut walk = backward::Walk::start(&mut ARENA.lock(py), root, order);
    loop {
        let step = {
            let mut ar = ARENA.lock(py);
            if !walk.is_current(&ar) {
                // Another thread walked a graph during a pause: start over, this
                // time in one go (two threads taking turns would otherwise restart
                // each other for ever).
                walk.finish(&mut ar);
                walk = backward::Walk::start(&mut ar, root, order);
                restarted = true;
            }
            // Graphs too small to pause for are walked in one go.
            let budget = match pacer {
                _ if restarted => usize::MAX,
                None => PAUSE_MIN_NODES,
                Some(_) => SIGNAL_CHUNK,
            };
            let step = walk.run(&mut ar, order, budget);
            if !matches!(step, Ok(false)) {
                walk.finish(&mut ar);
                return match step {
                    Ok(_) => Ok(pacer),
                    Err(e) => Err(arena_error(e)),
                };
            }
            step
        };
        debug_assert!(matches!(step, Ok(false)));
        // usize::MAX nodes: a walk this long pauses like a long sweep.
        pacer
            .get_or_insert_with(|| Pacer::new(py, usize::MAX, started))
            .tick(py)?;
    }
}

/// The gradients of the nodes of an order before a sweep that may fail partway
/// (a long one that Ctrl-C can interrupt, or one that `detect_anomaly` checks),
/// put back if it does: so calling again gives the uninterrupted result.
pub(super) struct Snapshot(Option<Vec<f64>>);

impl Snapshot {
    pub(super) fn take(py: Python<'_>, order: &[NodeId], needed: bool) -> PyResult<Snapshot> {
        if !needed {
            let mut spare = SPARE_SNAPSHOT.lock(py);
            if spare.0.capacity() != 0 {
                spare.0 = Vec::new();
            }
            return Ok(Snapshot(None));
        }
        // The last snapshot's buffer, its pages already mapped: a fresh one costs
        // a page fault per 512 nodes, as much again as the copy.
        let mut saved = std::mem::take(&mut SPARE_SNAPSHOT.lock(py).0);
        saved.clear();
        saved
            .try_reserve_exact(order.len())
            .map_err(|_| arena_error(ArenaError::Memory))?;
        let ar = ARENA.lock(py);
        saved.extend(order.iter().map(|&id| ar.grad[id as usize]));
        Ok(Snapshot(Some(saved)))
    }

    pub(super) fn restore_if_err<T>(self, py: Python<'_>, order: &[NodeId], r: &PyResult<T>) {
        if let Some(saved) = self.0 {
            if r.is_err() {
                let mut ar = ARENA.lock(py);
                for (&id, &g) in order.iter().zip(&saved) {
                    ar.grad[id as usize] = g;
                }
            }
            // Kept for the next large sweep (a small one lets it go: `take`).
            SPARE_SNAPSHOT.lock(py).0 = saved;
        }
    }
}

/// The buffer of the last snapshot, reused by the next.
struct SpareSnapshot(Vec<f64>);
static SPARE_SNAPSHOT: GilCell<SpareSnapshot> = GilCell::new(SpareSnapshot(Vec::new()));

/// Backward over `order` in chunks, pausing between some of them (see `Pacer`).
pub(super) fn sweep_interruptibly(
    py: Python<'_>,
    order: &[NodeId],
    check: bool,
    pacer: &mut Pacer,
) -> PyResult<()> {
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
    /// Whether this pacer ever pauses.
    pub(super) fn is_active(&self) -> bool {
        self.next.is_some()
    }

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
