//! A small team of helper threads for the kernels' parallel parts.
//!
//! A training step runs over a thousand parallel parts, many under a
//! millisecond, separated by short serial stretches. A pool whose idle
//! threads go to sleep at once (rayon's) often finds its helper still asleep
//! when the next part starts, so the caller runs both halves itself. Here
//! helpers keep watching for work for a few milliseconds after each job
//! (spinning, then yielding to other processes), and only then park; a step
//! keeps them awake, an idle program lets them sleep.
//!
//! The caller always works too, claiming parts from the same counter, and
//! waits only for parts a helper has already started: a helper that is slow
//! to wake, or descheduled on a loaded machine, never holds up parts it has
//! not claimed. Nested calls (a part asking for parallel work) run serially.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper keeps watching before it parks.
const WATCH: Duration = Duration::from_millis(5);
/// Spins between checks of the clock while watching.
const SPINS: u32 = 64;

/// One parallel job: `parts` calls of `f`, claimed one by one.
struct Job {
    /// `&dyn Fn(usize) + Sync`, valid until `done == parts` (the caller waits).
    f: *const (dyn Fn(usize) + Sync),
    parts: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

// SAFETY: `f` points to a `Sync` closure that outlives every use (see `Job`).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs parts until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.parts {
                return;
            }
            // SAFETY: a part was claimed, so the caller is still waiting and `f` lives.
            let f = unsafe { &*self.f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct Team {
    /// Bumped for every new job.
    epoch: AtomicU64,
    job: Mutex<Option<Arc<Job>>>,
    /// Helpers that are parked (or about to be), to unpark.
    parked: Mutex<Vec<Thread>>,
    /// Helper threads running.
    helpers: AtomicUsize,
}

thread_local! {
    /// Whether this thread is running a part of a job (nested calls run serially).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

fn team() -> &'static Arc<Team> {
    static TEAM: OnceLock<Arc<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let team = Arc::new(Team {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
            helpers: AtomicUsize::new(0),
        });
        for i in 0..super::threads().saturating_sub(1) {
            let t = Arc::clone(&team);
            let spawned = std::thread::Builder::new()
                .name(format!("wfrun-cpu-{i}"))
                .spawn(move || helper(&t));
            // Fewer threads than asked: the caller does the rest itself.
            if spawned.is_ok() {
                team.helpers.fetch_add(1, Ordering::Relaxed);
            }
        }
        team
    })
}

/// Watches for a job after `seen` for [`WATCH`]: spinning, then yielding.
/// False if none came.
fn watch(team: &Team, seen: u64) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..SPINS {
            if team.epoch.load(Ordering::Acquire) != seen {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= WATCH {
            return false;
        }
        std::thread::yield_now();
    }
}

fn helper(team: &Team) {
    IN_PART.with(|p| p.set(true));
    let mut seen = team.epoch.load(Ordering::Acquire);
    loop {
        if !watch(team, seen) {
            let me = std::thread::current();
            lock(&team.parked).push(me.clone());
            while team.epoch.load(Ordering::Acquire) == seen {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            lock(&team.parked).retain(|t| t.id() != me.id());
        }
        seen = team.epoch.load(Ordering::Acquire);
        let job = lock(&team.job).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f(0) … f(parts − 1)`, on the team when it has helpers and this is
/// not already a part of a job; returns when all have run.
pub fn for_each(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let nested = IN_PART.with(|p| p.get());
    let team = if parts > 1 && !nested {
        Some(team())
    } else {
        None
    };
    let Some(team) = team.filter(|t| t.helpers.load(Ordering::Relaxed) > 0) else {
        (0..parts).for_each(f);
        return;
    };
    // SAFETY (lifetime erasure): the pointer is used only for parts claimed
    // before `done` reaches `parts`, and this function waits for that.
    let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let job = Arc::new(Job {
        f: f_static,
        parts,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    });
    *lock(&team.job) = Some(Arc::clone(&job));
    team.epoch.fetch_add(1, Ordering::AcqRel);
    for t in lock(&team.parked).iter() {
        t.unpark();
    }
    IN_PART.with(|p| p.set(true));
    job.work();
    IN_PART.with(|p| p.set(false));
    // Only parts a helper has claimed remain: they are running.
    while job.done.load(Ordering::Acquire) < parts {
        std::hint::spin_loop();
    }
    *lock(&team.job) = None;
    if job.panicked.load(Ordering::Acquire) {
        resume_unwind(Box::new("a parallel part of a CPU kernel panicked"));
    }
}

/// Runs `a` and `b`, side by side when the team has a helper free.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    let a = Mutex::new(Some(a));
    let b = Mutex::new(Some(b));
    let (ra, rb) = (Mutex::new(None), Mutex::new(None));
    for_each(2, &|i| {
        if i == 0 {
            if let Some(a) = lock(&a).take() {
                *lock(&ra) = Some(a());
            }
        } else if let Some(b) = lock(&b).take() {
            *lock(&rb) = Some(b());
        }
    });
    let ra = ra.into_inner().unwrap_or_else(|e| e.into_inner());
    let rb = rb.into_inner().unwrap_or_else(|e| e.into_inner());
    match (ra, rb) {
        (Some(ra), Some(rb)) => (ra, rb),
        _ => unreachable!("for_each runs both parts or panics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_and_nesting_is_serial() {
        let counts: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..50 {
            for_each(100, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                // A nested job runs on this thread.
                let inner = AtomicUsize::new(0);
                for_each(3, &|_| {
                    inner.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(inner.load(Ordering::Relaxed), 3);
            });
        }
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 50));
        let (a, b) = join(|| 1 + 1, || "two");
        assert_eq!((a, b), (2, "two"));
    }

    #[test]
    fn a_panicking_part_is_reported_to_the_caller() {
        let r = catch_unwind(|| for_each(4, &|i| assert!(i != 2, "part 2")));
        assert!(r.is_err());
        // The team still works afterwards.
        let n = AtomicUsize::new(0);
        for_each(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
