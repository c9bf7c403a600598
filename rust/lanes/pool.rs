//! Threads kept between batched runs, so a run hands work to a thread that is
//! already there instead of starting one (which costs tens of microseconds, and
//! on a busy machine may not get a core before the run is over).
//!
//! [`run`] offers parts `1..n` of a job to the pool and does part 0 itself. A
//! pool thread claims a part under the pool's lock; when part 0 is done, the
//! parts nobody claimed are withdrawn, so the caller waits only for threads
//! that are working, never for one that has not yet been scheduled. A job must
//! therefore be correct whichever of its parts run (the batched runs share out
//! their chunks through a queue, so any thread may do any amount of them).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a thread that waits within a run (for the last chunks, or for the
/// other threads to finish) spins before it sleeps: waking a sleeping thread
/// costs tens of microseconds on a virtual machine, about what such a wait lasts.
pub const SPIN: Duration = Duration::from_micros(100);

/// Spins until `ready()` or for `SPIN`; says whether it is ready.
pub fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return ready();
        }
    }
}

/// A part of a job, by its number.
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// The job on offer, with its lifetime erased (see the safety note in `run`).
#[derive(Clone, Copy)]
struct Offer(*const Job<'static>);

// SAFETY: the job is `Sync`, and `run` keeps it alive while any thread can
// reach it through the offer.
unsafe impl Send for Offer {}

struct Slot {
    job: Option<Offer>,
    /// The next part to claim, and the parts on offer (`next..n`).
    next: usize,
    n: usize,
    /// Parts claimed and not finished.
    running: usize,
    /// Whether a part run by a pool thread panicked.
    panicked: bool,
    /// Pool threads started.
    threads: usize,
}

struct Pool {
    slot: Mutex<Slot>,
    /// Signalled when parts are offered, and when a part finishes.
    offered: Condvar,
    finished: Condvar,
    /// `Slot::running`, for the caller to spin on without the lock.
    running: AtomicUsize,
    /// Held by the one `run` that is using the pool; others start threads of
    /// their own.
    busy: Mutex<()>,
    /// The process that started the threads (a forked child has none of them).
    pid: u32,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `first()` (part 0) on the calling thread and `rest(k)` for parts
/// `k = 1..n` on pool threads that come for them before part 0 is done.
/// Returns when every part that started has finished; a panic in any part is
/// raised here after that.
pub fn run(n: usize, first: impl FnOnce(), rest: &Job<'_>) {
    if n <= 1 {
        return first();
    }
    let pool = POOL.get_or_init(|| Pool {
        slot: Mutex::new(Slot {
            job: None,
            next: 0,
            n: 0,
            running: 0,
            panicked: false,
            threads: 0,
        }),
        offered: Condvar::new(),
        finished: Condvar::new(),
        running: AtomicUsize::new(0),
        busy: Mutex::new(()),
        pid: std::process::id(),
    });
    let busy = match pool.pid == std::process::id() {
        true => pool.busy.try_lock().ok(),
        false => None,
    };
    let Some(_busy) = busy else {
        // Another run has the pool (or this is a forked child): threads of its own.
        return std::thread::scope(|s| {
            for k in 1..n {
                s.spawn(move || rest(k));
            }
            first();
        });
    };
    {
        let mut s = lock(&pool.slot);
        while s.threads < n - 1 {
            let spawned = std::thread::Builder::new()
                .name("scalargrad-lanes".into())
                .spawn(move || serve(pool));
            if spawned.is_err() {
                break; // fewer threads: the caller does what they would have
            }
            s.threads += 1;
        }
        // SAFETY: the offer outlives `rest`'s borrow only in type: it is taken
        // off the slot below, under the lock, before this function returns,
        // and every part claimed from it has finished by then.
        let job: &'static Job<'static> =
            unsafe { std::mem::transmute::<&Job<'_>, &'static Job<'static>>(rest) };
        s.job = Some(Offer(job));
        (s.next, s.n) = (1, n);
    }
    pool.offered.notify_all();
    let done = panic::catch_unwind(AssertUnwindSafe(first));
    lock(&pool.slot).next = n; // withdraw the parts nobody claimed
    spin_until(|| pool.running.load(Ordering::Acquire) == 0);
    let mut s = lock(&pool.slot);
    while s.running > 0 {
        s = pool.finished.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.job = None;
    let panicked = std::mem::take(&mut s.panicked);
    drop(s);
    if let Err(p) = done {
        panic::resume_unwind(p);
    }
    assert!(!panicked, "a batched-lanes thread panicked");
}

/// A pool thread: claims parts as they are offered, for as long as the process lives.
fn serve(pool: &'static Pool) {
    let mut s = lock(&pool.slot);
    loop {
        let job = match s.job {
            Some(job) if s.next < s.n => job,
            _ => {
                // Sleeps between runs: a thread spinning for the next run would
                // take time from the caller's core on a busy machine.
                s = pool.offered.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
        };
        let k = s.next;
        s.next += 1;
        s.running += 1;
        pool.running.fetch_add(1, Ordering::Relaxed);
        drop(s);
        // SAFETY: a claimed part keeps its job alive (`run` waits for it).
        let ok = panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(k) })).is_ok();
        s = lock(&pool.slot);
        s.running -= 1;
        s.panicked |= !ok;
        pool.running.fetch_sub(1, Ordering::Release);
        if s.running == 0 {
            pool.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::run;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn every_part_runs_at_most_once_and_the_first_always() {
        for n in 1..5 {
            for _ in 0..50 {
                let seen = Mutex::new(Vec::new());
                let first = AtomicUsize::new(0);
                run(
                    n,
                    || {
                        first.fetch_add(1, Ordering::Relaxed);
                    },
                    &|k| seen.lock().unwrap().push(k),
                );
                let mut seen = seen.into_inner().unwrap();
                seen.sort();
                assert_eq!(first.load(Ordering::Relaxed), 1);
                assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
                assert!(seen.iter().all(|&k| (1..n).contains(&k)), "{seen:?}");
            }
        }
    }

    #[test]
    fn a_claimed_part_finishes_before_run_returns() {
        let done = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        run(
            2,
            || {
                // Give the pool thread time to claim its part.
                let t = std::time::Instant::now();
                while started.load(Ordering::Acquire) == 0 && t.elapsed().as_secs() < 5 {
                    std::thread::yield_now();
                }
            },
            &|_| {
                started.store(1, Ordering::Release);
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.store(1, Ordering::Release);
            },
        );
        assert_eq!(
            done.load(Ordering::Acquire),
            started.load(Ordering::Acquire)
        );
    }

    #[test]
    fn runs_from_several_threads_at_once_all_finish() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let parts = AtomicUsize::new(0);
                        run(3, || {}, &|_| {
                            parts.fetch_add(1, Ordering::Relaxed);
                        });
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 80);
    }
}
