//! Spawning, joining and sleeping: the std::thread-shaped face of the runtime.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::runtime::control::{self, TaskHandle};
use crate::runtime::{self, Remote, Unparker, Wake};

/// What a coroutine's `join` gives: its value, or the payload of its panic.
pub type Result<T> = std::result::Result<T, Box<dyn Any + Send + 'static>>;

/// Runs `f` in a new coroutine on the current thread's scheduler.
///
/// Blocking calls inside `f` (`std::net`, `std::thread::sleep`, `read`, `recv`…)
/// park this coroutine and let the others run. The coroutine starts when the
/// thread next waits: in `join`, `join_all`, `sleep`, `run`, or when the spawning
/// coroutine blocks.
///
/// Fails (never panics, never hangs) when no stack can be had.
///
/// ```
/// let a = patchall::spawn(|| 6 * 7).unwrap();
/// assert_eq!(a.join().unwrap(), 42);
/// ```
pub fn spawn<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn(f)
}

/// Configures a coroutine before spawning it: name and stack size.
///
/// ```
/// let h = patchall::Builder::new()
///     .name("worker")
///     .stack_size(64 * 1024)
///     .spawn(|| patchall::current().unwrap().name().map(String::from))
///     .unwrap();
/// assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    own_tls: Option<bool>,
}

impl Builder {
    /// A builder with the defaults: no name, `PATCHALL_STACK_SIZE` bytes of stack.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine (shown by `current()` and in overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack bytes, rounded up to whole pages (at least 16 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Gives the coroutine thread-local storage and a thread descriptor of its
    /// own (`true`) or its OS thread's (`false`); by default
    /// `PATCHALL_GREEN_TLS` decides (`own` or `shared`, the default). With its
    /// own, `thread_local!`, `__thread`, errno and the per-thread state of
    /// blocking crates are the coroutine's, as in a thread of its own. Asked
    /// where glibc's layout or the CPU does not allow it, it shares (said once
    /// on stderr).
    ///
    /// ```
    /// use std::cell::Cell;
    /// thread_local!(static N: Cell<u32> = const { Cell::new(0) });
    /// N.with(|n| n.set(7));
    /// let own = patchall::Builder::new()
    ///     .own_tls(true)
    ///     .spawn(|| N.with(|n| n.get()))
    ///     .unwrap();
    /// let seen = own.join().unwrap();
    /// assert!(seen == 0 || !patchall::own_tls_available());
    /// ```
    pub fn own_tls(mut self, own: bool) -> Builder {
        self.own_tls = Some(own);
        self
    }

    /// Spawns `f` with this configuration. See [`spawn`].
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_in(None, None, f)
    }

    /// Spawns a coroutine, on this thread's scheduler or on `home`'s (another
    /// thread's), that sleeps `delay` (if any), then runs `f`, unless it was
    /// killed first.
    pub(crate) fn spawn_in<F, T>(
        self,
        home: Option<&Arc<Remote>>,
        delay: Option<Duration>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::hooks::register_with_runtime();
        let (packet, theirs) = Shared::pair();
        let name: Option<Arc<str>> = self.name.map(Into::into);
        let body = move || {
            runtime::note_entry(runtime::Entry::Type(std::any::type_name::<F>()));
            if theirs.start() {
                if let Some(d) = delay {
                    sleep(d);
                }
                if !control::cancel_requested() {
                    theirs.complete(panic::catch_unwind(AssertUnwindSafe(f)));
                    return;
                }
            }
            // Killed before the body began: it never runs, as a greenlet killed
            // before it started.
            theirs.complete(Err(Box::new(Killed)));
        };
        let (task, home) = match home {
            None => runtime::with_scheduler(|s| {
                let task = s.spawn_tls(name.clone(), self.stack_size, self.own_tls, body)?;
                Ok::<_, io::Error>((task, s.id()))
            })??,
            Some(home) => (
                runtime::spawn_at(home, name.clone(), self.stack_size, self.own_tls, body)?,
                home.serial(),
            ),
        };
        Ok(JoinHandle {
            packet,
            coroutine: Coroutine {
                id: task.id(),
                name,
            },
            task,
            home,
        })
    }
}

/// True if coroutines can have TLS of their own here (glibc's layout known,
/// user-space FSGSBASE): see [`Builder::own_tls`].
pub fn own_tls_available() -> bool {
    runtime::tls::available()
}

/// Spawns `f` to run after `dur` (gevent's `spawn_later`): the coroutine exists
/// at once and sleeps first. Killed during the delay, `f` never runs.
///
/// ```
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// let h = patchall::spawn_later(Duration::from_millis(30), move || start.elapsed()).unwrap();
/// assert!(h.join().unwrap() >= Duration::from_millis(30));
///
/// let never = patchall::spawn_later(Duration::from_secs(3600), || unreachable!()).unwrap();
/// never.kill();
/// assert!(never.join().unwrap_err().is::<patchall::Killed>());
/// ```
pub fn spawn_later<F, T>(dur: Duration, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn_in(None, Some(dur), f)
}

/// The error a killed coroutine's [`JoinHandle::join`] returns, boxed as the
/// `Err` payload: `err.is::<Killed>()`.
///
/// ```
/// let h = patchall::spawn(|| ()).unwrap();
/// h.kill(); // before it started: it never runs
/// let payload = h.join().unwrap_err();
/// assert_eq!(payload.downcast_ref::<patchall::Killed>(), Some(&patchall::Killed));
/// assert_eq!(patchall::Killed.to_string(), "coroutine killed");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Killed;

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("coroutine killed")
    }
}

impl std::error::Error for Killed {}

/// `kill` came before the coroutine completed. Never set once DONE is: with
/// DONE, it says the outcome is `Killed`.
const KILLED: u8 = 2;
/// The coroutine completed: the outcome is final.
const DONE: u8 = 4;
/// The joiner's `waiter` is in its cell, for the coroutine to take at DONE.
const WAITER: u8 = 8;
/// Owner bits, the reference count of a packet on the heap: the `JoinHandle`
/// holds it…
const HANDLE: u8 = 16;
/// …and so does the coroutine's body, until it completes (or is dropped unrun).
const BODY: u8 = 32;

/// What a coroutine and its handle share: its outcome and the joiner's
/// wake-up. (The handle names the coroutine itself, for `kill`.)
///
/// Lock-free. Every read-modify-write of `state` is one step in a single total
/// order, and who may touch a cell is decided by the bits they saw:
/// - `result`: written by the coroutine before DONE; after DONE the joiner's if
///   not KILLED, else the coroutine takes its value back to drop it;
/// - `waiter`: the joiner's while WAITER is clear; the coroutine's once its DONE
///   step saw WAITER. The joiner clears WAITER (a step that fails once DONE is
///   set) to register again.
///
/// Whoever clears the last owner bit frees it: no separate reference count.
/// A detached coroutine (HANDLE clear: no kill or join can come) is the only
/// owner and reads `state` without changing it.
struct Packet<T> {
    state: AtomicU8,
    result: UnsafeCell<Option<Result<T>>>,
    waiter: UnsafeCell<Option<Unparker>>,
}

// SAFETY: the cells are only touched by the party `state` gives them to (see
// `Packet`), and each hand-over is a release/acquire pair on `state`. The
// result moves from the coroutine's thread to the joiner's, hence `T: Send`;
// no `&T` is ever shared, so `T: Sync` is not needed. Unparkers are
// Send + Sync.
unsafe impl<T: Send> Send for Packet<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            state: AtomicU8::new(HANDLE | BODY),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }

    /// Called first thing in the coroutine: false if killed already, and the
    /// body must not run. A kill that comes later cancels the running body.
    fn start(&self) -> bool {
        self.state.load(Ordering::Acquire) & KILLED == 0
    }

    /// Marks the outcome `Killed` unless the coroutine completed first; true
    /// if this call did (the caller then cancels the coroutine).
    fn kill(&self) -> bool {
        let mut seen = self.state.load(Ordering::Acquire);
        loop {
            // Finished: nothing to change. Killed: that kill cancels it.
            if seen & (DONE | KILLED) != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                seen,
                seen | KILLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Records the body's outcome (`Killed` instead if a kill came first),
    /// wakes the joiner and gives up the body's share (BODY). True if the
    /// handle had let go already: the caller, the last owner, frees the packet.
    #[must_use]
    fn finish(&self, result: Result<T>) -> bool {
        let mut seen = self.state.load(Ordering::Acquire);
        if seen & HANDLE == 0 {
            // Detached (the handle let go with Release, seen with Acquire):
            // the body is the last owner, and no one will ask for the outcome.
            drop(result);
            return true;
        }
        // SAFETY: the joiner reads `result` only after seeing DONE, set below
        // with Release after this write; no one else touches it before DONE.
        unsafe { *self.result.get() = Some(result) };
        let mut alone;
        loop {
            // Nothing to do after DONE (no waiter to wake, no killed value to
            // drop): let go in the same step.
            alone = seen & (WAITER | KILLED) == 0;
            let next = if alone {
                (seen | DONE) & !BODY
            } else {
                seen | DONE
            };
            match self
                .state
                .compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        if alone {
            return seen & HANDLE == 0;
        }
        // The body's own outcome of a killed coroutine, dropped below: it may
        // run arbitrary code.
        let dropped = if seen & KILLED != 0 {
            // SAFETY: with KILLED the joiner never reads `result` (it reports
            // `Killed`), and BODY, still ours, keeps the packet alive.
            unsafe { (*self.result.get()).take() }
        } else {
            None
        };
        let waiter = if seen & WAITER != 0 {
            // SAFETY: WAITER was set with Release after the joiner wrote the
            // cell, and read here with Acquire. The joiner gives the cell up
            // while WAITER is set, and can no longer clear it (DONE is set).
            unsafe { (*self.waiter.get()).take() }
        } else {
            None
        };
        let last = self.release(BODY);
        drop(dropped);
        if let Some(w) = waiter {
            w.unpark(Wake::Ready);
        }
        last
    }

    /// Gives up `owner`'s share; true if it was the last: the caller frees.
    fn release(&self, owner: u8) -> bool {
        let other = (HANDLE | BODY) & !owner;
        // The other owner let go already (with Release, never to come back):
        // we are alone, and need no read-modify-write.
        self.state.load(Ordering::Acquire) & other == 0
            || self.state.fetch_and(!owner, Ordering::AcqRel) & other == 0
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }

    /// Registers `who` to be woken at completion (replacing an earlier
    /// registration); false if already complete. Called by the joiner only.
    fn watch(&self, who: Unparker) -> bool {
        let mut seen = self.state.load(Ordering::Acquire);
        // Take the cell back from an earlier registration, unless the
        // coroutine has completed (and so may be taking it).
        while seen & WAITER != 0 {
            if seen & DONE != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                seen,
                seen & !WAITER,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => seen &= !WAITER,
                Err(now) => seen = now,
            }
        }
        if seen & DONE != 0 {
            return false;
        }
        // SAFETY: WAITER is clear, so the cell is the joiner's (the coroutine
        // takes it only when its DONE step sees WAITER); the joiner is us.
        unsafe { *self.waiter.get() = Some(who) };
        // Completed meanwhile: the coroutine did not see WAITER and leaves the
        // cell alone; the unused unparker is dropped with the packet.
        self.state.fetch_or(WAITER, Ordering::AcqRel) & DONE == 0
    }

    /// Waits until complete (parking, or driving this plain thread) and takes the
    /// result. `home` is the coroutine's scheduler, if known. Called once, by
    /// the joiner.
    fn wait(&self, home: Option<usize>) -> Result<T> {
        if runtime::in_coroutine() {
            while !self.is_done() {
                runtime::label(&const { runtime::Label::new("join", runtime::Family::Join) });
                runtime::park(None, |who| self.watch(who));
            }
        } else if home.is_some() && runtime::current_scheduler_id() == home {
            // The coroutine runs here: driving this scheduler is what finishes it,
            // no wake-up from elsewhere is needed.
            let _ = runtime::with_scheduler(|s| s.run_until(None, &mut || self.is_done()));
        } else {
            drive_until(&mut || self.is_done(), |who| {
                self.watch(who);
            });
        }
        // Read after DONE: KILLED can no longer change.
        if self.state.load(Ordering::Acquire) & KILLED != 0 {
            return Err(Box::new(Killed));
        }
        // SAFETY: DONE (seen above with Acquire, after the coroutine's Release)
        // without KILLED: the coroutine is done with `result`, and it is the
        // joiner's alone; the joiner takes it once.
        unsafe { (*self.result.get()).take() }.expect("a finished coroutine left its result")
    }
}

/// One owner's share of a packet on the heap: the handle's or the body's.
struct Shared<T> {
    packet: NonNull<Packet<T>>,
    owner: u8,
}

// SAFETY: a `Shared` is a reference to a `Packet`, which is Send + Sync for
// `T: Send` (above); the owner bits make its lifetime right across threads.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// A new packet: (the handle's share, the body's share).
    fn pair() -> (Shared<T>, Shared<T>) {
        let packet = spare::alloc(Packet::new());
        (
            Shared {
                packet,
                owner: HANDLE,
            },
            Shared {
                packet,
                owner: BODY,
            },
        )
    }

    /// The body's last act: `Packet::finish`, which gives up its share.
    fn complete(self, result: Result<T>) {
        let this = ManuallyDrop::new(self);
        if this.finish(result) {
            // SAFETY: both owner bits are clear: no one else holds the packet,
            // which came from `spare::alloc`.
            unsafe { spare::free(this.packet) };
        }
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = Packet<T>;

    fn deref(&self) -> &Packet<T> {
        // SAFETY: the packet lives while an owner bit is set, and this share's
        // bit stays set until it is dropped (or completes, consuming it).
        unsafe { self.packet.as_ref() }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if self.release(self.owner) {
            // SAFETY: both owner bits are clear: no one else holds the packet,
            // which came from `spare::alloc`.
            unsafe { spare::free(self.packet) };
        }
    }
}

/// Owns the right to wait for a coroutine and take its result.
///
/// Dropping the handle detaches the coroutine: it keeps running.
pub struct JoinHandle<T> {
    packet: Shared<T>,
    /// The coroutine, for `kill`: held from the spawn, so no kill can reach a
    /// freed task, and the coroutine need publish nothing when it starts.
    task: TaskHandle,
    /// The scheduler the coroutine runs on (`Scheduler::id`).
    home: usize,
    coroutine: Coroutine,
}

impl<T> JoinHandle<T> {
    /// Waits for the coroutine to finish and returns its value, or the payload
    /// of the panic that ended it (as `std::thread::JoinHandle::join`), or, if
    /// it was [killed](Self::kill) before it finished, a [`Killed`] payload.
    ///
    /// Inside a coroutine this parks only the caller; on a plain thread it drives
    /// this thread's scheduler until the coroutine is done. Not interrupted by
    /// `kill` or `timeout`.
    ///
    /// ```
    /// let h = patchall::spawn(|| panic!("boom")).unwrap();
    /// let err = h.join().unwrap_err();
    /// assert_eq!(err.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn join(self) -> Result<T> {
        let result = self.packet.wait(Some(self.home));
        self.task.release();
        result
    }

    /// Kills the coroutine, as gevent's `Greenlet.kill`: its current or next
    /// blocking call fails, so plain code unwinds through its own `?`:
    /// - a hooked call (read, recv, accept, connect…) fails with ECANCELED
    ///   (`raw_os_error() == Some(libc::ECANCELED)`; std files it under
    ///   `io::ErrorKind::Uncategorized`, which cannot be matched on);
    /// - [`sleep`] returns early;
    /// - a channel operation or [`Event::wait`](crate::sync::Event::wait) fails
    ///   with `Killed`; locks, condition variables, semaphores and `join` are not
    ///   interrupted (they can only report success).
    ///
    /// A coroutine that has not started yet never runs. Does not wait: call
    /// [`join`](Self::join) for that. If `kill` came before the coroutine
    /// finished, `join` returns `Err` with a [`Killed`] payload, whatever the
    /// body returned (the body's value, or its panic payload, is dropped); if the
    /// coroutine had already finished, `kill` does nothing. Any thread may kill.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let start = Instant::now();
    /// let sleeper = patchall::spawn(|| patchall::sleep(Duration::from_secs(3600))).unwrap();
    /// patchall::sleep(Duration::from_millis(10)); // let it start sleeping
    /// sleeper.kill();
    /// assert!(sleeper.join().unwrap_err().is::<patchall::Killed>());
    /// assert!(start.elapsed() < Duration::from_secs(60));
    /// ```
    pub fn kill(&self) {
        // Before the body began, it never will (`Packet::start`); cancelling
        // then only marks the task, which ends unrun at its first step.
        if self.packet.kill() {
            self.task.cancel_at(self.home);
        }
    }

    /// True once the coroutine has returned, panicked, or ended killed.
    pub fn is_finished(&self) -> bool {
        self.packet.is_done()
    }

    /// The coroutine this handle waits for.
    pub fn coroutine(&self) -> &Coroutine {
        &self.coroutine
    }
}

// Unwind-safe, as `std::thread::JoinHandle`: a panic never leaves the packet
// half-changed (each transition is one atomic step, the cells are moved in and
// out whole), and through `&JoinHandle` only `kill`, `is_finished` and the
// coroutine's id and name can be reached, none of which a panic elsewhere can
// leave inconsistent. (Its task is full of `Cell`s, which only its own
// scheduler's thread touches.)
impl<T> UnwindSafe for JoinHandle<T> {}
impl<T> RefUnwindSafe for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("coroutine", &self.coroutine)
            .finish()
    }
}

/// Runs `f` as a coroutine on this plain thread's scheduler, driving it until `f`
/// returns (a panic in `f` resumes here). `f` may borrow from the caller, as with
/// `std::thread::scope`. Gives `f` back, unrun, if no coroutine can be made here.
pub(crate) fn run_as_coroutine<F, R>(f: F) -> std::result::Result<R, F>
where
    F: FnOnce() -> R,
{
    debug_assert!(!runtime::in_coroutine());
    crate::hooks::register_with_runtime();
    let packet = Packet::new();
    let f = Cell::new(Some(f));
    let body: Box<dyn FnOnce() + '_> = Box::new(|| {
        let f = f.take().expect("a coroutine body runs once");
        // The frame keeps the handle's share: never the last owner.
        let last = packet.finish(panic::catch_unwind(AssertUnwindSafe(f)));
        debug_assert!(!last);
    });
    // SAFETY: `body` borrows `f` and `packet` from this frame, which outlives its
    // run: the coroutine runs only on this thread, only while this thread drives
    // the scheduler, and `packet.wait()` below drives until `finish` has run
    // (the body does not suspend inside `finish`, so the driver cannot see DONE
    // before `finish` returns). After it the body touches neither borrow and never suspends again
    // (nothing can kill it: no handle to it exists), so this frame may end. If
    // `spawn` fails, `body` is dropped unrun, touching nothing.
    let body: Box<dyn FnOnce() + 'static> = unsafe { std::mem::transmute(body) };
    match runtime::with_scheduler(|s| s.spawn(None, None, body)) {
        Ok(Ok(_)) => {}
        _ => return Err(f.take().expect("an unspawned body did not run")),
    }
    match packet.wait(None) {
        Ok(r) => Ok(r),
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Drives this plain thread's scheduler until `done()`. `watch` registers a
/// handle that wakes this thread should the event come from another thread.
fn drive_until(done: &mut dyn FnMut() -> bool, watch: impl FnOnce(Unparker)) {
    match runtime::root_unparker() {
        Ok(me) => {
            watch(me);
            let _ = runtime::with_scheduler(|s| s.run_until(None, done));
        }
        Err(_) => {
            // No scheduler can be made here (out of fds or memory): nothing of
            // ours runs on this thread, so the event comes from elsewhere.
            while !done() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Waits for every handle in order and returns their results in the same order.
///
/// ```
/// use std::time::Duration;
/// let hs = (1..=3u64)
///     .map(|i| patchall::spawn(move || { patchall::sleep(Duration::from_millis(10 * i)); i }).unwrap())
///     .collect::<Vec<_>>();
/// let got: Vec<u64> = patchall::join_all(hs).into_iter().map(Result::unwrap).collect();
/// assert_eq!(got, [1, 2, 3]);
/// ```
pub fn join_all<T, I>(handles: I) -> Vec<Result<T>>
where
    I: IntoIterator<Item = JoinHandle<T>>,
{
    handles.into_iter().map(JoinHandle::join).collect()
}

/// Sleeps for `dur`: parks the calling coroutine, or, on a plain thread, runs this
/// thread's coroutines meanwhile.
///
/// Returns early, with nothing to say so, in a coroutine that is
/// [killed](JoinHandle::kill) or inside a [`timeout`](crate::timeout()) body whose
/// deadline passes: the enclosing `timeout` reports `Err(Elapsed)`, a `join`
/// of the killed coroutine reports [`Killed`].
///
/// ```
/// use std::time::{Duration, Instant};
/// let t = Instant::now();
/// let a = patchall::spawn(|| patchall::sleep(Duration::from_millis(50))).unwrap();
/// let b = patchall::spawn(|| patchall::sleep(Duration::from_millis(50))).unwrap();
/// patchall::join_all([a, b]);
/// assert!(t.elapsed() < Duration::from_millis(95)); // concurrently, not one after the other
/// ```
pub fn sleep(dur: Duration) {
    let deadline = Instant::now() + dur;
    if runtime::in_coroutine() {
        while Instant::now() < deadline {
            runtime::label(&const { runtime::Label::new("sleep", runtime::Family::Sleep) });
            match runtime::sleep_until(deadline) {
                Wake::Cancelled | Wake::Expired => return,
                _ => continue,
            }
        }
    } else if runtime::with_scheduler(|s| s.run_until(Some(deadline), &mut || false)).is_err() {
        std::thread::sleep(dur);
    }
}

/// Lets every other runnable coroutine run once before the caller continues.
/// On a plain thread, runs the coroutines that are runnable now.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let hs: Vec<_> = ["a", "b"].into_iter().map(|who| {
///     let log = log.clone();
///     patchall::spawn(move || for i in 0..2 {
///         log.lock().unwrap().push(format!("{who}{i}"));
///         patchall::yield_now();
///     }).unwrap()
/// }).collect();
/// patchall::join_all(hs);
/// assert_eq!(*log.lock().unwrap(), ["a0", "b0", "a1", "b1"]);
/// ```
#[inline]
pub fn yield_now() {
    if runtime::in_coroutine() {
        runtime::yield_now();
    } else {
        let _ = runtime::with_scheduler(|s| s.run_until(Some(Instant::now()), &mut || false));
    }
}

/// Runs this thread's coroutines until all of them (and all they spawn) are done.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
/// static DONE: AtomicUsize = AtomicUsize::new(0);
/// for _ in 0..3 {
///     patchall::spawn(|| { DONE.fetch_add(1, SeqCst); }).unwrap();
/// }
/// patchall::run();
/// assert_eq!(DONE.load(SeqCst), 3);
/// ```
pub fn run() {
    if runtime::in_coroutine() {
        return;
    }
    let _ = runtime::with_scheduler(|s| s.run_until(None, &mut || s.live() == 0));
}

/// Which coroutine is running: its id and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coroutine {
    id: u64,
    name: Option<Arc<str>>,
}

impl Coroutine {
    /// A process-wide unique number, never reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name given with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The running coroutine, or `None` on a plain thread.
///
/// ```
/// assert!(patchall::current().is_none());
/// let id = patchall::spawn(|| patchall::current().unwrap().id()).unwrap();
/// let expected = id.coroutine().id();
/// assert_eq!(id.join().unwrap(), expected);
/// ```
pub fn current() -> Option<Coroutine> {
    runtime::current_task().map(|t| Coroutine {
        id: t.id,
        name: t.name.clone(),
    })
}

/// True when called inside a coroutine.
///
/// ```
/// assert!(!patchall::in_coroutine());
/// assert!(patchall::spawn(patchall::in_coroutine).unwrap().join().unwrap());
/// ```
pub fn in_coroutine() -> bool {
    runtime::in_coroutine()
}

/// Packets' memory, kept by each thread for its next spawns: a spawn+join would
/// otherwise pay a malloc and a free (about a tenth of its cost) for a block
/// that the next spawn on the same thread asks for again.
mod spare {
    use std::alloc::{self, Layout};
    use std::cell::Cell;
    use std::ptr::{self, NonNull};

    /// The one block size kept; larger packets (a large `T`) use the heap as is.
    const BLOCK: Layout = match Layout::from_size_align(128, 16) {
        Ok(l) => l,
        Err(_) => panic!("a valid layout"),
    };
    /// At most this many blocks wait per thread (4 KiB).
    const KEEP: usize = 32;

    struct Free {
        next: *mut Free,
    }

    /// A list threaded through the free blocks themselves.
    struct Spare {
        head: Cell<*mut Free>,
        len: Cell<usize>,
    }

    impl Drop for Spare {
        fn drop(&mut self) {
            let mut p = self.head.replace(ptr::null_mut());
            while !p.is_null() {
                // SAFETY: each listed block is an unused BLOCK allocation that
                // starts with its `Free` link, and only this list holds it.
                unsafe {
                    let next = (*p).next;
                    alloc::dealloc(p.cast(), BLOCK);
                    p = next;
                }
            }
        }
    }

    thread_local! {
        static SPARE: Spare = const {
            Spare {
                head: Cell::new(ptr::null_mut()),
                len: Cell::new(0),
            }
        };
    }

    const fn fits<T>() -> bool {
        size_of::<T>() <= BLOCK.size() && align_of::<T>() <= BLOCK.align()
    }

    /// Moves `value` to the heap, into a kept block if one fits.
    pub(super) fn alloc<T>(value: T) -> NonNull<T> {
        if !fits::<T>() {
            return NonNull::from(Box::leak(Box::new(value)));
        }
        let kept = SPARE
            .try_with(|s| {
                let p = s.head.get();
                if !p.is_null() {
                    // SAFETY: a listed block starts with its `Free` link.
                    s.head.set(unsafe { (*p).next });
                    s.len.set(s.len.get() - 1);
                }
                p
            })
            .unwrap_or(ptr::null_mut());
        let block = match NonNull::new(kept) {
            Some(p) => p.cast::<T>(),
            None => {
                // SAFETY: BLOCK has a non-zero size.
                let p = unsafe { alloc::alloc(BLOCK) };
                NonNull::new(p.cast::<T>()).unwrap_or_else(|| alloc::handle_alloc_error(BLOCK))
            }
        };
        // SAFETY: the block is unused, and large and aligned enough for T.
        unsafe { block.as_ptr().write(value) };
        block
    }

    /// Drops the value `alloc` made and keeps or frees its memory.
    ///
    /// # Safety
    /// `p` came from `alloc::<T>` and nothing uses it any more.
    pub(super) unsafe fn free<T>(p: NonNull<T>) {
        if !fits::<T>() {
            // SAFETY: `alloc` made it with `Box::new` (the caller's promise).
            drop(unsafe { Box::from_raw(p.as_ptr()) });
            return;
        }
        // SAFETY: a live, unused value (the caller's promise).
        unsafe { ptr::drop_in_place(p.as_ptr()) };
        let block = p.cast::<Free>().as_ptr();
        let kept = SPARE
            .try_with(|s| {
                if s.len.get() >= KEEP {
                    return false;
                }
                // SAFETY: the block is a BLOCK allocation nobody uses any
                // more, large and aligned enough for the link.
                unsafe { block.write(Free { next: s.head.get() }) };
                s.head.set(block);
                s.len.set(s.len.get() + 1);
                true
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: a BLOCK allocation (it fits) nobody uses any more.
            unsafe { alloc::dealloc(block.cast(), BLOCK) };
        }
    }
}
