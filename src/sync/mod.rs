//! gevent's `queue`, `event` and `lock`, for coroutines: channels, [`Event`],
//! [`Semaphore`], [`Mutex`], [`RwLock`], [`Condvar`].
//!
//! Every wait parks the calling coroutine, not its thread; a plain thread that
//! waits runs its own coroutines meanwhile (as `join` does), and is woken from
//! any thread. All of them work between coroutines of one thread, across
//! threads, and with plain threads. Waiters are served in arrival order: a
//! released lock, permit or buffer place is handed to the longest waiter, so
//! none starves.
//!
//! [`kill`](crate::JoinHandle::kill) and [`timeout`](crate::timeout()) end the
//! waits whose result can say so: channel operations (`Err(Killed)`,
//! `Err(Timeout)`) and [`Event::wait`] (false). A wait that could only report
//! success (a lock, a permit, a condition variable) runs to the end, as in std.
//!
//! ```
//! use patchall::sync::bounded;
//! let (tx, rx) = bounded(0); // a rendezvous channel
//! let consumer = patchall::spawn(move || rx.iter().sum::<u64>()).unwrap();
//! for i in 1..=100 {
//!     tx.send(i).unwrap();
//! }
//! drop(tx); // disconnects: the consumer's iteration ends
//! assert_eq!(consumer.join().unwrap(), 5050);
//! ```

mod channel;
mod condvar;
mod event;
mod mutex;
mod rwlock;
mod semaphore;
mod waiter;

pub use channel::{
    IntoIter, Iter, Receiver, RecvError, SendError, Sender, TryIter, TryRecvError, TrySendError,
    bounded, unbounded,
};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use event::Event;
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{Permit, Semaphore};

/// `value` as std's locks hand it out: `Err` carrying it when the lock is poisoned.
fn poison_result<T>(poisoned: bool, value: T) -> std::sync::LockResult<T> {
    if poisoned {
        Err(std::sync::PoisonError::new(value))
    } else {
        Ok(value)
    }
}
