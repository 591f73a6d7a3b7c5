//! A flag that waiters wait to see set (gevent's `Event`).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::waiter::{WaitQueue, block, lock};
use crate::runtime::{self, Breaks, Family, Label, Wake};
use crate::sys::deadline_after;

/// A flag: [`set`](Event::set) wakes everyone waiting and lets later waiters
/// through until [`clear`](Event::clear).
///
/// ```
/// use std::sync::Arc;
/// use patchall::sync::Event;
/// let ready = Arc::new(Event::new());
/// let waiters: Vec<_> = (0..3).map(|i| {
///     let ready = ready.clone();
///     patchall::spawn(move || { assert!(ready.wait()); i }).unwrap()
/// }).collect();
/// patchall::yield_now(); // they start and wait
/// ready.set();
/// let sum: i32 = patchall::join_all(waiters).into_iter().map(Result::unwrap).sum();
/// assert_eq!(sum, 3);
/// ```
pub struct Event {
    state: Mutex<State>,
}

struct State {
    set: bool,
    waiters: WaitQueue,
}

impl Event {
    /// A cleared event; `const`, so it can be a `static`.
    ///
    /// ```
    /// static STARTED: patchall::sync::Event = patchall::sync::Event::new();
    /// assert!(!STARTED.is_set());
    /// ```
    pub const fn new() -> Event {
        Event {
            state: Mutex::new(State {
                set: false,
                waiters: WaitQueue::new(),
            }),
        }
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = patchall::sync::Event::new();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    pub fn set(&self) {
        let mut st = lock(&self.state);
        st.set = true;
        st.waiters.wake_all();
    }

    /// Clears the flag: later waiters wait again.
    ///
    /// ```
    /// let e = patchall::sync::Event::new();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        lock(&self.state).set = false;
    }

    /// True if the flag is set.
    ///
    /// ```
    /// assert!(!patchall::sync::Event::new().is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        lock(&self.state).set
    }

    /// Waits until the flag is set; true then. A waiter woken by `set` returns
    /// true even if the flag was cleared again before it ran.
    ///
    /// Returns false, without waiting, in a coroutine that is
    /// [killed](crate::JoinHandle::kill) or past the deadline of an enclosing
    /// [`timeout`](crate::timeout()) (unless the flag is set).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = patchall::sync::Event::new();
    /// let r = patchall::timeout(Duration::from_millis(10), || e.wait());
    /// assert_eq!(r, Err(patchall::Elapsed)); // the wait returned false at the deadline
    /// ```
    pub fn wait(&self) -> bool {
        self.wait_until(None)
    }

    /// `wait`, at most `dur`: false if the flag was not set in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = patchall::sync::Event::new();
    /// assert!(!e.wait_timeout(Duration::from_millis(5)));
    /// e.set();
    /// assert!(e.wait_timeout(Duration::from_millis(5)));
    /// ```
    pub fn wait_timeout(&self, dur: Duration) -> bool {
        self.wait_until(Some(deadline_after(dur)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            runtime::label(&const { Label::new("event", Family::Channel) });
            let (waiter, wake) = block(deadline, Breaks::Stop, |w| {
                let mut st = lock(&self.state);
                if !st.set {
                    st.waiters.push(w);
                }
                !st.set
            });
            let Some(w) = waiter else {
                return wake == Wake::Ready;
            };
            let mut st = lock(&self.state);
            if w.is_woken() {
                return true;
            }
            st.waiters.remove(&w);
            if matches!(wake, Wake::TimedOut | Wake::Expired | Wake::Cancelled) {
                return false;
            }
        }
    }
}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
