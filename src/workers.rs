//! Many cores: a `Runtime` runs one scheduler per worker OS thread and places new
//! coroutines on them. A coroutine never migrates: C code caches `errno`'s
//! address and thread-locals, so moving a suspended stack to another thread would
//! break it (libgo's issue #256). Wake-ups across workers — joins, and anything
//! built on the runtime's unparkers — travel through the target worker's mailbox
//! and its mio `Waker`.
//!
//! Placement: `Runtime::spawn` picks the worker with the fewest live coroutines
//! it placed, the lowest index on a tie. `patchall::spawn` called *inside* a
//! worker's coroutine stays on that worker (cheap, and keeps related coroutines
//! together); use a `Handle` to spread from there.
//!
//! Accepting on many workers: give each worker its own listener on the same port
//! with `SO_REUSEPORT` (the kernel spreads connections), or share one listener and
//! run an accept loop on every worker (each parks until a connection comes; the
//! losers of a race get `EAGAIN` and park again). `examples/echo_server.rs
//! --workers N` shows the shared-listener pattern.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::config::config;
use crate::coroutine::{Builder as CoBuilder, JoinHandle};
use crate::runtime::{self, Remote};

/// Configures a [`Runtime`].
///
/// ```
/// let rt = patchall::Runtime::builder().workers(2).build().unwrap();
/// assert_eq!(rt.workers(), 2);
/// ```
#[derive(Debug, Default, Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
}

impl RuntimeBuilder {
    /// Worker threads (at least 1). Default: `PATCHALL_WORKERS`, else the CPUs
    /// this process may run on.
    pub fn workers(mut self, n: usize) -> RuntimeBuilder {
        self.workers = Some(n.max(1));
        self
    }

    /// Starts the workers. Fails if a thread or a scheduler cannot be made.
    pub fn build(self) -> io::Result<Runtime> {
        let n = self.workers.unwrap_or_else(default_workers);
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let sh = shared.clone();
            let thread = thread::Builder::new()
                .name(format!("patchall-worker-{i}"))
                .spawn(move || {
                    let home = runtime::current_home();
                    let ok = home.is_ok();
                    let _ = tx.send(home);
                    if ok {
                        let _ = runtime::with_scheduler(|s| {
                            s.run_until(None, &mut || sh.shutdown.load(Ordering::Acquire))
                        });
                    }
                })?;
            let home = rx
                .recv()
                .map_err(|_| io::Error::other("worker thread died"))??;
            shared
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Worker {
                    home,
                    load: Arc::new(AtomicUsize::new(0)),
                });
            threads.push(thread);
        }
        Ok(Runtime {
            handle: Handle { shared },
            threads,
        })
    }
}

/// `PATCHALL_WORKERS`, else the CPUs this process may run on.
fn default_workers() -> usize {
    config()
        .workers
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

struct Worker {
    home: Arc<Remote>,
    /// Live coroutines this runtime placed here.
    load: Arc<AtomicUsize>,
}

struct Shared {
    shutdown: AtomicBool,
    workers: Mutex<Vec<Worker>>,
}

/// Worker threads, each with its own scheduler.
///
/// ```
/// let rt = patchall::Runtime::builder().workers(2).build().unwrap();
/// let hs: Vec<_> = (0..4u64).map(|i| rt.spawn(move || i * i).unwrap()).collect();
/// let sum: u64 = patchall::join_all(hs).into_iter().map(Result::unwrap).sum();
/// assert_eq!(sum, 14);
/// ```
///
/// Dropping the runtime stops its workers; coroutines still parked then are
/// abandoned (join what you need first).
pub struct Runtime {
    handle: Handle,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Runtime {
    /// A builder: `Runtime::builder().workers(n).build()`.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// A runtime with the default number of workers.
    pub fn new() -> io::Result<Runtime> {
        RuntimeBuilder::default().build()
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.handle
            .shared
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Spawns `f` on the least loaded worker. See [`Handle::spawn`].
    pub fn spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f)
    }

    /// A cloneable, sendable handle to spawn on this runtime from anywhere.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        shared.shutdown.store(true, Ordering::Release);
        for w in shared
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // An empty job wakes the worker, which then sees the flag.
            w.home.post(runtime::Mail::Run(Box::new(|| {})));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Spawns on a [`Runtime`]'s workers; `Send + Sync + Clone`.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Spawns `f` on the worker with the fewest live coroutines placed by this
    /// runtime. Fails (never panics or hangs) when no stack can be had or the
    /// runtime has shut down.
    pub fn spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_with(CoBuilder::new(), f)
    }

    /// `spawn` with a name and stack size.
    pub fn spawn_with<F, T>(&self, builder: CoBuilder, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(io::Error::other("patchall: the runtime has shut down"));
        }
        let (home, load) = {
            let workers = self
                .shared
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let w = workers
                .iter()
                .min_by_key(|w| w.load.load(Ordering::Relaxed))
                .ok_or_else(|| io::Error::other("patchall: a runtime without workers"))?;
            (w.home.clone(), w.load.clone())
        };
        load.fetch_add(1, Ordering::Relaxed);
        let counted = load.clone();
        let spawned = builder.spawn_in(Some(&home), None, move || {
            let _done = Decrement(counted);
            f()
        });
        if spawned.is_err() {
            load.fetch_sub(1, Ordering::Relaxed);
        }
        spawned
    }
}

/// Counts a coroutine out of its worker's load when it ends, even by panicking.
struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
