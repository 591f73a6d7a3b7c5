//! Multi-producer multi-consumer channels: bounded, unbounded and zero-capacity
//! (rendezvous), between coroutines of one thread, of many threads, and plain
//! threads.
//!
//! Values are handed over, not raced for: a sender that finds a receiver waiting
//! puts the value into its hands; a receiver that frees a place in a full buffer
//! moves the oldest waiting sender's value in. So senders and receivers are each
//! served in arrival order, and nobody starves.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::waiter::{WaitQueue, block, lock};
use crate::runtime::{self, Breaks, Family, Label, Wake};
use crate::sys::deadline_after;

/// A channel holding at most `cap` values; a sender waits while it is full.
/// `bounded(0)` is a rendezvous channel: each send waits for a receiver.
///
/// ```
/// use patchall::sync::bounded;
/// let (tx, rx) = bounded(1);
/// let producer = patchall::spawn(move || for i in 0..3 { tx.send(i).unwrap() }).unwrap();
/// let got: Vec<i32> = rx.iter().collect(); // ends when every sender is gone
/// producer.join().unwrap();
/// assert_eq!(got, [0, 1, 2]);
/// ```
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    new(Some(cap))
}

/// A channel without a limit: `send` never waits.
///
/// ```
/// let (tx, rx) = patchall::sync::unbounded();
/// for i in 0..1000 {
///     tx.send(i).unwrap();
/// }
/// drop(tx);
/// assert_eq!(rx.iter().sum::<i32>(), 499_500);
/// ```
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    new(None)
}

fn new<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Mutex::new(State {
        buf: VecDeque::new(),
        cap,
        senders: 1,
        receivers: 1,
        send_q: WaitQueue::default(),
        recv_q: WaitQueue::default(),
    }));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

type Chan<T> = Arc<Mutex<State<T>>>;

/// Invariants: `recv_q` non-empty ⇒ `buf` and `send_q` empty; `send_q` non-empty
/// ⇒ `buf` full. Each queued sender's value waits in its slot.
struct State<T> {
    buf: VecDeque<T>,
    cap: Option<usize>,
    senders: usize,
    receivers: usize,
    send_q: WaitQueue<T>,
    recv_q: WaitQueue<T>,
}

impl<T> State<T> {
    /// The next value, if one can be had without waiting.
    fn take(&mut self) -> Option<T> {
        let Some(v) = self.buf.pop_front() else {
            // No buffer (or an empty one): straight from the oldest sender.
            let s = self.send_q.pop()?;
            let v = s.take();
            s.wake();
            return v;
        };
        if let Some(s) = self.send_q.pop() {
            self.buf.extend(s.take());
            s.wake();
        }
        Some(v)
    }

    /// Places `v` without waiting, or gives it back.
    fn give(&mut self, v: T) -> Result<(), T> {
        if let Some(r) = self.recv_q.pop() {
            r.put(v);
            r.wake();
            return Ok(());
        }
        if self.cap.is_none_or(|c| self.buf.len() < c) {
            self.buf.push_back(v);
            return Ok(());
        }
        Err(v)
    }
}

/// The sending half; clone it for more producers. The channel disconnects for
/// receivers when the last `Sender` is dropped.
///
/// ```
/// let (tx, rx) = patchall::sync::unbounded();
/// let producers: Vec<_> = (0..3).map(|i| {
///     let tx = tx.clone();
///     patchall::spawn(move || tx.send(i).unwrap()).unwrap()
/// }).collect();
/// drop(tx);
/// patchall::join_all(producers);
/// assert_eq!(rx.iter().sum::<i32>(), 3);
/// ```
pub struct Sender<T> {
    chan: Chan<T>,
}

/// The receiving half; clone it for more consumers (each value goes to one).
/// The channel disconnects for senders when the last `Receiver` is dropped.
///
/// ```
/// let (tx, rx) = patchall::sync::bounded(1);
/// let consumers: Vec<_> = (0..2).map(|_| {
///     let rx = rx.clone();
///     patchall::spawn(move || rx.iter().count()).unwrap()
/// }).collect();
/// for i in 0..10 {
///     tx.send(i).unwrap();
/// }
/// drop(tx);
/// let counts: usize = patchall::join_all(consumers).into_iter().map(Result::unwrap).sum();
/// assert_eq!(counts, 10); // each value went to exactly one consumer
/// ```
pub struct Receiver<T> {
    chan: Chan<T>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while the channel is full (for a rendezvous channel,
    /// until a receiver takes it). In a coroutine only the coroutine waits.
    ///
    /// Fails, giving `v` back, if every receiver is gone (`Disconnected`), or,
    /// when it would have to wait, if the coroutine is killed (`Killed`) or the
    /// deadline of an enclosing [`timeout`](crate::timeout()) passes (`Timeout`).
    ///
    /// ```
    /// let (tx, rx) = patchall::sync::bounded(0);
    /// let rx = patchall::spawn(move || rx.recv().unwrap()).unwrap();
    /// tx.send("hand to hand").unwrap(); // waits for the receiver
    /// assert_eq!(rx.join().unwrap(), "hand to hand");
    /// ```
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_until(v, None)
    }

    /// `send`, waiting at most `dur`: `Timeout(v)` after that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use patchall::sync::{bounded, SendError};
    /// let (tx, _rx) = bounded(1);
    /// tx.send(1).unwrap();
    /// let err = tx.send_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, SendError::Timeout(2)));
    /// ```
    pub fn send_timeout(&self, v: T, dur: Duration) -> Result<(), SendError<T>> {
        self.send_until(v, Some(deadline_after(dur)))
    }

    /// Sends `v` only if that needs no wait.
    ///
    /// ```
    /// use patchall::sync::{bounded, TrySendError};
    /// let (tx, rx) = bounded(1);
    /// assert!(tx.try_send(1).is_ok());
    /// assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
    /// drop(rx);
    /// assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
    /// ```
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut st = lock(&self.chan);
        if st.receivers == 0 {
            return Err(TrySendError::Disconnected(v));
        }
        st.give(v).map_err(TrySendError::Full)
    }

    fn send_until(&self, v: T, deadline: Option<Instant>) -> Result<(), SendError<T>> {
        let mut value = Some(v);
        loop {
            let v = value.take().expect("the value is ours until handed over");
            match self.try_send(v) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(v)) => return Err(SendError::Disconnected(v)),
                Err(TrySendError::Full(v)) => value = Some(v),
            }
            let mut done = None;
            runtime::label(&const { Label::new("channel send", Family::Channel) });
            let (waiter, wake) = block(deadline, Breaks::Stop, |w| {
                let v = value.take().expect("not yet handed over");
                let mut st = lock(&self.chan);
                if st.receivers == 0 {
                    done = Some(Err(SendError::Disconnected(v)));
                    return false;
                }
                match st.give(v) {
                    Ok(()) => {
                        done = Some(Ok(()));
                        false
                    }
                    Err(v) => {
                        w.put(v);
                        st.send_q.push(w);
                        true
                    }
                }
            });
            if let Some(result) = done {
                return result;
            }
            let Some(w) = waiter else {
                let v = value.take().expect("refused before handing over");
                return Err(SendError::stopped(wake, v));
            };
            let mut st = lock(&self.chan);
            if w.is_woken() {
                // Served: a receiver took the value, or the last one left.
                return match w.take() {
                    None => Ok(()),
                    Some(v) => Err(SendError::Disconnected(v)),
                };
            }
            st.send_q.remove(&w);
            drop(st);
            let v = w.take().expect("an unserved sender still holds its value");
            match wake {
                Wake::TimedOut | Wake::Expired | Wake::Cancelled => {
                    return Err(SendError::stopped(wake, v));
                }
                _ => value = Some(v),
            }
        }
    }

    /// How many values wait in the buffer.
    ///
    /// ```
    /// let (tx, _rx) = patchall::sync::unbounded();
    /// tx.send(()).unwrap();
    /// assert_eq!(tx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        lock(&self.chan).buf.len()
    }

    /// True if no value waits in the buffer.
    ///
    /// ```
    /// let (tx, _rx) = patchall::sync::bounded::<u8>(4);
    /// assert!(tx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given to [`bounded`]; None for [`unbounded`].
    ///
    /// ```
    /// assert_eq!(patchall::sync::bounded::<u8>(3).0.capacity(), Some(3));
    /// assert_eq!(patchall::sync::unbounded::<u8>().0.capacity(), None);
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        lock(&self.chan).cap
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting for one. In a coroutine only the
    /// coroutine waits; a plain thread runs its coroutines meanwhile.
    ///
    /// Fails once the channel is empty and every sender is gone
    /// (`Disconnected`), or, when it would have to wait, if the coroutine is
    /// killed (`Killed`) or the deadline of an enclosing
    /// [`timeout`](crate::timeout()) passes (`Timeout`).
    ///
    /// ```
    /// use patchall::sync::{unbounded, RecvError};
    /// let (tx, rx) = unbounded();
    /// std::thread::spawn(move || tx.send(7).unwrap());
    /// assert_eq!(rx.recv(), Ok(7)); // from another thread
    /// assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None)
    }

    /// `recv`, waiting at most `dur`: `Err(RecvError::Timeout)` after that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use patchall::sync::{bounded, RecvError};
    /// let (_tx, rx) = bounded::<u8>(1);
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Err(RecvError::Timeout));
    /// ```
    pub fn recv_timeout(&self, dur: Duration) -> Result<T, RecvError> {
        self.recv_until(Some(deadline_after(dur)))
    }

    /// Receives a value only if one can be had without waiting.
    ///
    /// ```
    /// use patchall::sync::{unbounded, TryRecvError};
    /// let (tx, rx) = unbounded();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// drop(tx);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut st = lock(&self.chan);
        match st.take() {
            Some(v) => Ok(v),
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(RecvError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let mut done = None;
            runtime::label(&const { Label::new("channel recv", Family::Channel) });
            let (waiter, wake) = block(deadline, Breaks::Stop, |w| {
                let mut st = lock(&self.chan);
                match st.take() {
                    Some(v) => done = Some(Ok(v)),
                    None if st.senders == 0 => done = Some(Err(RecvError::Disconnected)),
                    None => st.recv_q.push(w),
                }
                done.is_none()
            });
            if let Some(result) = done {
                return result;
            }
            let Some(w) = waiter else {
                return Err(RecvError::stopped(wake));
            };
            let mut st = lock(&self.chan);
            if w.is_woken() {
                match w.take() {
                    Some(v) => return Ok(v),
                    // Woken empty-handed: the last sender left. Look again.
                    None => continue,
                }
            }
            st.recv_q.remove(&w);
            drop(st);
            if matches!(wake, Wake::TimedOut | Wake::Expired | Wake::Cancelled) {
                return Err(RecvError::stopped(wake));
            }
        }
    }

    /// Values as they come, until the channel is disconnected (or a wait fails:
    /// kill, timeout).
    ///
    /// ```
    /// let (tx, rx) = patchall::sync::bounded(2);
    /// let p = patchall::spawn(move || for c in "abc".chars() { tx.send(c).unwrap() }).unwrap();
    /// assert_eq!(rx.iter().collect::<String>(), "abc");
    /// p.join().unwrap();
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// The values available now, without waiting.
    ///
    /// ```
    /// let (tx, rx) = patchall::sync::unbounded();
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// How many values wait in the buffer.
    ///
    /// ```
    /// let (tx, rx) = patchall::sync::bounded(2);
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        lock(&self.chan).buf.len()
    }

    /// True if no value waits in the buffer.
    ///
    /// ```
    /// let (_tx, rx) = patchall::sync::unbounded::<()>();
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.chan).senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        lock(&self.chan).receivers += 1;
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.chan);
        st.senders -= 1;
        if st.senders == 0 {
            st.recv_q.wake_all();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.chan);
        st.receivers -= 1;
        if st.receivers > 0 {
            return;
        }
        // Waiting senders get their values back with the error; buffered values
        // can never be received. Drop them after unlocking: a value's drop may
        // touch this very channel (a message carrying one of its senders).
        st.send_q.wake_all();
        let orphans = std::mem::take(&mut st.buf);
        drop(st);
        drop(orphans);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Blocking iterator over a [`Receiver`]'s values; see [`Receiver::iter`].
///
/// ```
/// let (tx, rx) = patchall::sync::unbounded();
/// tx.send(1).unwrap();
/// drop(tx);
/// let mut it: patchall::sync::Iter<'_, i32> = rx.iter();
/// assert_eq!((it.next(), it.next()), (Some(1), None));
/// ```
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator over a [`Receiver`]'s values; see [`Receiver::try_iter`].
///
/// ```
/// let (_tx, rx) = patchall::sync::unbounded::<u8>();
/// let mut it: patchall::sync::TryIter<'_, u8> = rx.try_iter();
/// assert_eq!(it.next(), None); // empty now, though still connected
/// ```
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Owning blocking iterator over a [`Receiver`]'s values.
///
/// ```
/// let (tx, rx) = patchall::sync::unbounded();
/// tx.send('a').unwrap();
/// drop(tx);
/// let it: patchall::sync::IntoIter<char> = rx.into_iter();
/// assert_eq!(it.collect::<String>(), "a");
/// ```
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Why [`Sender::send`] failed; the value comes back in every case.
///
/// ```
/// use patchall::sync::{bounded, SendError};
/// let (tx, rx) = bounded(0);
/// drop(rx);
/// assert!(matches!(tx.send(1), Err(SendError::Disconnected(1))));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendError<T> {
    /// Every receiver is gone.
    Disconnected(T),
    /// The wait's own deadline, or that of an enclosing
    /// [`timeout`](crate::timeout()), passed.
    Timeout(T),
    /// The sending coroutine was [killed](crate::JoinHandle::kill).
    Killed(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// let (tx, rx) = patchall::sync::unbounded();
    /// drop(rx);
    /// assert_eq!(tx.send(5).unwrap_err().into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendError::Disconnected(v) | SendError::Timeout(v) | SendError::Killed(v) => v,
        }
    }

    fn stopped(wake: Wake, v: T) -> SendError<T> {
        match wake {
            Wake::Cancelled => SendError::Killed(v),
            _ => SendError::Timeout(v),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Disconnected(_) => "Disconnected(..)",
            SendError::Timeout(_) => "Timeout(..)",
            SendError::Killed(_) => "Killed(..)",
        })
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Disconnected(_) => "sending on a disconnected channel",
            SendError::Timeout(_) => "timed out waiting to send on a full channel",
            SendError::Killed(_) => "coroutine killed while waiting to send",
        })
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Sender::try_send`] failed; the value comes back.
///
/// ```
/// use patchall::sync::{bounded, TrySendError};
/// let (tx, _rx) = bounded(0); // nobody waits to receive
/// assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// Sending would have to wait.
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// let (tx, _rx) = patchall::sync::bounded(0);
    /// assert_eq!(tx.try_send('x').unwrap_err().into_inner(), 'x');
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "sending on a full channel",
            TrySendError::Disconnected(_) => "sending on a disconnected channel",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Receiver::recv`] or [`Receiver::recv_timeout`] failed.
///
/// ```
/// use std::time::Duration;
/// use patchall::sync::{unbounded, RecvError};
/// let (tx, rx) = unbounded::<()>();
/// assert_eq!(rx.recv_timeout(Duration::ZERO), Err(RecvError::Timeout));
/// let r = patchall::timeout(Duration::ZERO, || rx.recv());
/// assert_eq!(r, Err(patchall::Elapsed)); // the recv inside gave Err(RecvError::Timeout)
/// drop(tx);
/// assert_eq!(rx.recv(), Err(RecvError::Disconnected));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The channel is empty and every sender is gone.
    Disconnected,
    /// The wait's own deadline, or that of an enclosing
    /// [`timeout`](crate::timeout()), passed.
    Timeout,
    /// The receiving coroutine was [killed](crate::JoinHandle::kill).
    Killed,
}

impl RecvError {
    fn stopped(wake: Wake) -> RecvError {
        match wake {
            Wake::Cancelled => RecvError::Killed,
            _ => RecvError::Timeout,
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvError::Disconnected => "receiving on an empty and disconnected channel",
            RecvError::Timeout => "timed out waiting on an empty channel",
            RecvError::Killed => "coroutine killed while waiting to receive",
        })
    }
}

impl std::error::Error for RecvError {}

/// Why [`Receiver::try_recv`] failed.
///
/// ```
/// use patchall::sync::{unbounded, TryRecvError};
/// let (tx, rx) = unbounded::<u8>();
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// drop(tx);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// No value is available now.
    Empty,
    /// The channel is empty and every sender is gone.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "receiving on an empty channel",
            TryRecvError::Disconnected => "receiving on an empty and disconnected channel",
        })
    }
}

impl std::error::Error for TryRecvError {}
