//! `timeout(dur, || body)`: gevent's `Timeout` as a scope. The deadline lives in
//! the running coroutine; every wait that may be stopped ends at it, so a blocking
//! call fails with ETIMEDOUT and plain code unwinds through its own `?`.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::coroutine::run_as_coroutine;
use crate::runtime::{self, control};

/// The error [`timeout`] returns when its deadline passed before the body returned.
///
/// ```
/// use std::time::Duration;
/// let err = patchall::timeout(Duration::ZERO, || patchall::sleep(Duration::from_secs(5)));
/// assert_eq!(err, Err(patchall::Elapsed));
/// let e: std::io::Error = patchall::Elapsed.into();
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// Runs `body` with a deadline `dur` from now; `Err(Elapsed)` if the deadline
/// passed before `body` returned (its value is then dropped).
///
/// Once the deadline passes, inside `body`:
/// - a hooked call that would block (read, recv, accept, connect, `std::net`…)
///   fails with ETIMEDOUT, `io::ErrorKind::TimedOut`; a call that can complete
///   without waiting still completes;
/// - [`sleep`](crate::sleep()) returns early;
/// - a channel operation fails with `Timeout`, [`Event::wait`](crate::sync::Event::wait)
///   returns false; locks, condition variables, semaphores and `join` are not
///   interrupted (they can only report success);
/// - code that never blocks is not interrupted: Rust has no asynchronous
///   exceptions. It runs on, and `timeout` returns `Err(Elapsed)` at its end.
///
/// Nested timeouts: the nearest deadline governs the calls; each `timeout`
/// reports on its own deadline only.
///
/// On a plain thread `body` runs as a coroutine on this thread's scheduler (so
/// that its calls can be interrupted) with the default coroutine stack
/// (`PATCHALL_STACK_SIZE`); this thread's other coroutines run meanwhile. Should
/// no coroutine be available (out of memory), `body` runs directly, and only
/// its result is checked against the deadline.
///
/// ```
/// use std::io::Read;
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
///
/// let server = TcpListener::bind("127.0.0.1:0").unwrap();
/// let mut quiet = TcpStream::connect(server.local_addr().unwrap()).unwrap();
/// let result = patchall::timeout(Duration::from_millis(50), || {
///     let mut buf = [0u8; 16];
///     let err = quiet.read(&mut buf).unwrap_err(); // the peer never writes
///     assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// });
/// assert_eq!(result, Err(patchall::Elapsed));
/// assert_eq!(patchall::timeout(Duration::from_secs(5), || 42), Ok(42));
/// ```
pub fn timeout<R>(dur: Duration, body: impl FnOnce() -> R) -> Result<R, Elapsed> {
    // A deadline beyond `Instant`'s range never comes.
    let deadline = Instant::now().checked_add(dur);
    let scoped = move || within(deadline, body);
    if runtime::in_coroutine() {
        return scoped();
    }
    run_as_coroutine(scoped).unwrap_or_else(|scoped| scoped())
}

fn within<R>(deadline: Option<Instant>, body: impl FnOnce() -> R) -> Result<R, Elapsed> {
    let outer = control::deadline();
    let nearest = match (outer, deadline) {
        (Some(o), Some(d)) => Some(o.min(d)),
        (o, d) => o.or(d),
    };
    let restore = Restore(outer);
    control::replace_deadline(nearest);
    let result = body();
    drop(restore);
    match deadline {
        Some(d) if Instant::now() >= d => Err(Elapsed),
        _ => Ok(result),
    }
}

/// Puts the enclosing deadline back when the body ends, even by panicking.
struct Restore(Option<Instant>);

impl Drop for Restore {
    fn drop(&mut self) {
        control::replace_deadline(self.0);
    }
}
