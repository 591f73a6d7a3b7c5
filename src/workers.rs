//! Many cores: a `Runtime` runs one scheduler per worker OS thread and places new
//! coroutines on them. A coroutine never migrates: C code caches `errno`'s
//! address and thread-locals, so moving a suspended stack to another thread would
//! break it (libgo's issue #256). Wake-ups across workers — joins, and anything
//! built on the runtime's unparkers — travel through the target worker's mailbox
//! and its waker (an eventfd).
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
//!
//! The workers and the placement are the runtime's `WorkerSet`
//! (src/runtime/workers.rs), which green threads (`PATCHALL_WORKERS`) use too;
//! a `Runtime` is a facade over one.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::config::{MAX_WORKERS, config};
use crate::coroutine::{Builder as CoBuilder, JoinHandle};
use crate::runtime::workers::{Placer, WorkerSet};

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
    /// Worker threads (0 counts as 1). Default: `PATCHALL_WORKERS`, else the
    /// CPUs this process may run on. More than [`MAX_WORKERS`](crate::MAX_WORKERS)
    /// makes `build` fail with `InvalidInput`.
    pub fn workers(mut self, n: usize) -> RuntimeBuilder {
        self.workers = Some(n.max(1));
        self
    }

    /// Starts the workers. Fails if a thread or a scheduler cannot be made, or
    /// with `InvalidInput` for more than [`MAX_WORKERS`](crate::MAX_WORKERS).
    pub fn build(self) -> io::Result<Runtime> {
        let n = self.workers.unwrap_or_else(default_workers);
        if n > MAX_WORKERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("patchall: {n} workers asked for; at most {MAX_WORKERS}"),
            ));
        }
        let set = WorkerSet::start(n, false)?;
        Ok(Runtime {
            handle: Handle {
                placer: set.placer().clone(),
            },
            set,
        })
    }
}

/// `PATCHALL_WORKERS`, else the CPUs this process may run on (within the bound).
fn default_workers() -> usize {
    config()
        .workers
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)))
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
    set: WorkerSet,
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
        self.set.len()
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

/// Spawns on a [`Runtime`]'s workers; `Send + Sync + Clone`.
#[derive(Clone)]
pub struct Handle {
    placer: Placer,
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
        let (home, load) = self.placer.place()?;
        let counted = load.clone();
        let spawned = builder.spawn_in(home.as_ref(), None, move || {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::time::Instant;

    use super::Runtime;
    use crate::runtime::parking::{park_on, unpark_one};

    /// A one-value channel whose sides park on the runtime's parking table when
    /// they must wait, as a pthread mutex or a channel does: every value that
    /// finds the other side parked wakes it through its worker's mailbox.
    #[derive(Default)]
    struct Slot {
        /// 0 empty, else value + 1.
        value: AtomicU64,
        /// How often a side really parked (and so had to be woken).
        parks: AtomicUsize,
    }

    impl Slot {
        /// Parking keys: takers wait on `full`, putters on `empty`.
        fn keys(&self) -> (usize, usize) {
            let base = &self.value as *const AtomicU64 as usize;
            (base, base + 1)
        }

        fn put(&self, v: u64) {
            let (full, empty) = self.keys();
            while self
                .value
                .compare_exchange(0, v + 1, SeqCst, SeqCst)
                .is_err()
            {
                self.wait(empty, || self.value.load(SeqCst) != 0);
            }
            unpark_one(full);
        }

        fn take(&self) -> u64 {
            let (full, empty) = self.keys();
            loop {
                let v = self.value.swap(0, SeqCst);
                if v != 0 {
                    unpark_one(empty);
                    return v - 1;
                }
                self.wait(full, || self.value.load(SeqCst) == 0);
            }
        }

        fn wait(&self, key: usize, blocked: impl Fn() -> bool) {
            let mut parked = false;
            park_on(key, None, || {
                parked = blocked();
                parked
            });
            if parked {
                self.parks.fetch_add(1, SeqCst);
            }
        }
    }

    fn thread_id() -> u64 {
        // SAFETY: gettid has no preconditions.
        unsafe { crate::sys::raw_syscall!(libc::SYS_gettid) as u64 }
    }

    #[test]
    fn a_million_cross_worker_handoffs_park_wake_and_lose_nothing() {
        const MESSAGES: u64 = 1_000_000;
        let rt = Runtime::builder().workers(2).build().unwrap();
        let slot = Arc::new(Slot::default());
        let started = Instant::now();
        let tx = slot.clone();
        // Least-loaded placement: one coroutine on each worker.
        let producer = rt
            .spawn(move || {
                (0..MESSAGES).for_each(|i| tx.put(i));
                thread_id()
            })
            .unwrap();
        let rx = slot.clone();
        let consumer = rt
            .spawn(move || ((0..MESSAGES).map(|_| rx.take()).sum::<u64>(), thread_id()))
            .unwrap();
        let (sum, consumer_thread) = consumer.join().unwrap();
        let producer_thread = producer.join().unwrap();
        let parks = slot.parks.load(SeqCst);
        eprintln!(
            "{MESSAGES} messages, {parks} parks, {:?}",
            started.elapsed()
        );
        assert_ne!(producer_thread, consumer_thread, "one side per worker");
        assert_eq!(sum, MESSAGES * (MESSAGES - 1) / 2, "every value once");
        // Each park was ended by a wake from the other worker (no deadline).
        assert!(
            parks > 1000,
            "only {parks} parks: the wake path was not exercised"
        );
    }
}
