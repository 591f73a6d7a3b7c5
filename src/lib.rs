//! # patchall
//!
//! `monkey.patch_all` for native code: blocking libc calls made inside a coroutine
//! park that coroutine and let the others run; made anywhere else, they are exactly
//! the libc call they always were.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! let start = Instant::now();
//! let sleepers: Vec<_> = (0..100)
//!     .map(|_| patchall::spawn(|| std::thread::sleep(Duration::from_millis(100))).unwrap())
//!     .collect();
//! patchall::join_all(sleepers);
//! // One hundred blocking sleeps overlapped on this one thread.
//! assert!(start.elapsed() < Duration::from_secs(2));
//! ```
//!
//! The runtime: one scheduler per OS thread, created on first use, stackful
//! coroutines (corosensei) on pooled stacks, an epoll reactor. A plain thread
//! that waits (`join`, `join_all`, `sleep`, `run`) drives its scheduler meanwhile.
//! See `PATCHALL_*` variables in [`Config`].
//!
//! gevent's toolbox: [`sync`] (channels, `Event`, `Semaphore`, `Mutex`, `RwLock`,
//! `Condvar`), [`timeout()`], [`Pool`], [`JoinHandle::kill`], [`spawn_later`].

#![warn(missing_docs)]

mod config;
mod coroutine;
mod fdmap;
mod fdtable;
pub mod ffi;
mod generator;
mod greenlet;
pub mod hooks;
mod limits;
mod pool;
mod runtime;
pub mod sync;
mod sys;
mod timeout;
mod workers;

pub use config::{
    Config, MAX_STACK_SIZE, MAX_WORKERS, MIN_STACK_SIZE, OffloadFiles, StackMode, config,
    parse_bool, parse_size,
};
pub use coroutine::{
    Builder, Coroutine, JoinHandle, Killed, Result, current, in_coroutine, join_all,
    own_tls_available, run, sleep, spawn, spawn_later, yield_now,
};
pub use generator::{Generator, GeneratorState, Yielder};
pub use greenlet::Greenlet;
pub use pool::Pool;
pub use runtime::offload::offloaded_calls;
pub use runtime::{
    CoroutineInfo, CoroutineState, Direction, RunInfo, Stats, WaitInfo, WaitsOn, WorkerInfo,
    run_info, stats,
};
pub use timeout::{Elapsed, timeout};
pub use workers::{Handle, Runtime, RuntimeBuilder};
