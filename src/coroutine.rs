//! Spawning, joining and sleeping: the std::thread-shaped face of the runtime.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runtime::control::{self, TaskHandle, TaskHome};
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
        let packet = Arc::new(Packet::new());
        let name: Option<Arc<str>> = self.name.map(Into::into);
        let theirs = packet.clone();
        let body = move || {
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
        let (id, home) = match home {
            None => runtime::with_scheduler(|s| {
                let id = s.spawn(name.clone(), self.stack_size, body)?;
                Ok::<_, io::Error>((id, s.id()))
            })??,
            Some(home) => (
                runtime::spawn_at(home, name.clone(), self.stack_size, body)?,
                home.id_addr(),
            ),
        };
        Ok(JoinHandle {
            packet,
            home,
            coroutine: Coroutine { id, name },
        })
    }
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

struct Slot<T> {
    result: Option<Result<T>>,
    waiter: Option<Unparker>,
    /// Set by `kill` before the coroutine finished: its result becomes `Killed`.
    killed: bool,
    /// The running coroutine, for `kill` to cancel; None before it starts.
    target: Option<(TaskHandle, TaskHome)>,
}

struct Packet<T> {
    done: AtomicBool,
    slot: Mutex<Slot<T>>,
}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            done: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                result: None,
                waiter: None,
                killed: false,
                target: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called first thing in the coroutine: publishes it as the target of `kill`,
    /// under the lock `kill` takes, so no kill falls between. False if already killed.
    fn start(&self) -> bool {
        let mut slot = self.lock();
        slot.target = control::current_handle();
        !slot.killed
    }

    fn kill(&self) {
        let target = {
            let mut slot = self.lock();
            if self.is_done() {
                return;
            }
            slot.killed = true;
            slot.target.clone()
        };
        if let Some((task, home)) = target {
            task.cancel(&home);
        }
    }

    fn complete(&self, result: Result<T>) {
        let (waiter, dropped) = {
            let mut slot = self.lock();
            let dropped = if slot.killed {
                slot.result.replace(Err(Box::new(Killed)));
                Some(result)
            } else {
                slot.result = Some(result);
                None
            };
            slot.target = None;
            self.done.store(true, Ordering::Release);
            (slot.waiter.take(), dropped)
        };
        // The body's own result may run arbitrary code as it drops: not under the lock.
        drop(dropped);
        if let Some(w) = waiter {
            w.unpark(Wake::Ready);
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Registers `who` to be woken at completion; false if already complete.
    fn watch(&self, who: Unparker) -> bool {
        let mut slot = self.lock();
        if self.is_done() {
            return false;
        }
        slot.waiter = Some(who);
        true
    }

    /// Waits until complete (parking, or driving this plain thread) and takes the
    /// result. `home` is the coroutine's scheduler, if known.
    fn wait(&self, home: Option<usize>) -> Result<T> {
        if runtime::in_coroutine() {
            while !self.is_done() {
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
        self.lock()
            .result
            .take()
            .expect("a finished coroutine left its result")
    }
}

/// Owns the right to wait for a coroutine and take its result.
///
/// Dropping the handle detaches the coroutine: it keeps running.
pub struct JoinHandle<T> {
    packet: Arc<Packet<T>>,
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
        self.packet.wait(Some(self.home))
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
        self.packet.kill();
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
    let packet = Packet::new();
    let f = Cell::new(Some(f));
    let body: Box<dyn FnOnce() + '_> = Box::new(|| {
        let f = f.take().expect("a coroutine body runs once");
        packet.complete(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    // SAFETY: `body` borrows `f` and `packet` from this frame, which outlives its
    // run: the coroutine runs only on this thread, only while this thread drives
    // the scheduler, and `packet.wait()` below drives until `complete` has run.
    // After `complete` the body touches neither borrow and never suspends again
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
