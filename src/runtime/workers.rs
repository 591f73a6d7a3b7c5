//! A set of worker threads, each driving its own scheduler, and the placement
//! of new coroutines on them: the least loaded worker (fewest live coroutines
//! this set placed), the lowest index on a tie. A coroutine never migrates: C
//! code caches `errno`'s address and thread-locals, so moving a suspended stack
//! to another thread would break it (libgo's issue #256). Wake-ups across
//! workers travel through the target worker's mailbox and its waker.
//!
//! Two users: the public `Runtime` (src/workers.rs), a facade over a set, and
//! green threads under `PATCHALL_WORKERS` (hooks/thread/spread.rs), whose set
//! counts `main`'s own thread as worker 0 (`WorkerSet::start(n, true)`).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{Mail, Remote, current_home, current_scheduler_id, with_scheduler};

struct Worker {
    home: Arc<Remote>,
    /// Live coroutines this set placed here.
    load: Arc<AtomicUsize>,
}

struct Shared {
    shutdown: AtomicBool,
    workers: Mutex<Vec<Worker>>,
}

/// Worker threads, each with its own scheduler. Dropping the set stops its
/// threads; coroutines still parked then are abandoned.
pub(crate) struct WorkerSet {
    placer: Placer,
    threads: Vec<thread::JoinHandle<()>>,
}

impl WorkerSet {
    /// Starts `n` workers (at least one). With `with_current`, the calling
    /// thread's scheduler is worker 0 and only `n - 1` threads start; the
    /// caller keeps driving its own scheduler. Fails if a thread or a
    /// scheduler cannot be made.
    pub(crate) fn start(n: usize, with_current: bool) -> io::Result<WorkerSet> {
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
        });
        let add = |home| {
            shared
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Worker {
                    home,
                    load: Arc::new(AtomicUsize::new(0)),
                });
        };
        if with_current {
            add(current_home()?);
        }
        let n = n.max(1);
        let mut threads = Vec::with_capacity(n);
        for i in usize::from(with_current)..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let sh = shared.clone();
            let thread = thread::Builder::new()
                .name(format!("patchall-worker-{i}"))
                .spawn(move || {
                    let home = current_home();
                    let ok = home.is_ok();
                    let _ = tx.send(home);
                    if ok {
                        let _ = with_scheduler(|s| {
                            s.run_until(None, &mut || sh.shutdown.load(Ordering::Acquire))
                        });
                    }
                })?;
            let home = rx
                .recv()
                .map_err(|_| io::Error::other("worker thread died"))??;
            add(home);
            threads.push(thread);
        }
        Ok(WorkerSet {
            placer: Placer { shared },
            threads,
        })
    }

    /// How many workers run (the caller's thread included).
    pub(crate) fn len(&self) -> usize {
        self.placer.lock().len()
    }

    /// Places coroutines on this set, from anywhere.
    pub(crate) fn placer(&self) -> &Placer {
        &self.placer
    }
}

impl Drop for WorkerSet {
    fn drop(&mut self) {
        self.placer.shared.shutdown.store(true, Ordering::Release);
        for w in self.placer.lock().iter() {
            // An empty job wakes the worker, which then sees the flag.
            w.home.post(Mail::Run(Box::new(|| {})));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Chooses a worker of a [`WorkerSet`]; `Send + Sync + Clone`, usable after the
/// set is gone (placing then fails).
#[derive(Clone)]
pub(crate) struct Placer {
    shared: Arc<Shared>,
}

impl Placer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.shared
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Picks the least loaded worker and counts one more coroutine on it: its
    /// mailbox (None if it is the calling thread's scheduler, which spawns
    /// directly) and its load, which the caller decrements when that coroutine
    /// ends or could not be made.
    pub(crate) fn place(&self) -> io::Result<(Option<Arc<Remote>>, Arc<AtomicUsize>)> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(io::Error::other("patchall: the runtime has shut down"));
        }
        let workers = self.lock();
        let w = workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .ok_or_else(|| io::Error::other("patchall: a runtime without workers"))?;
        w.load.fetch_add(1, Ordering::Relaxed);
        let here = current_scheduler_id() == Some(w.home.serial());
        Ok(((!here).then(|| w.home.clone()), w.load.clone()))
    }

    /// Live coroutines placed by this set, on every worker.
    pub(crate) fn load(&self) -> usize {
        self.lock()
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .sum()
    }
}
