//! Spawning, joining and sleeping: the std::thread-shaped face of the runtime.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

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
        self.spawn_in(None, f)
    }

    /// Spawns on this thread's scheduler, or on `home`'s (another thread's).
    pub(crate) fn spawn_in<F, T>(
        self,
        home: Option<&Arc<Remote>>,
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
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            theirs.complete(result);
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

/// The one-shot hand-over of a coroutine's result to its joiner: the coroutine
/// writes `result` then publishes DONE; the joiner parks a waiter with WAITING.
/// No lock: spawn+join is on the hot path of every fan-out.
struct Packet<T> {
    state: AtomicU8,
    result: UnsafeCell<Option<Result<T>>>,
    waiter: UnsafeCell<Option<Unparker>>,
}

const EMPTY: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;

// SAFETY: `result` is written once by the coroutine before DONE is published
// (Release) and read only by the joiner after it saw DONE (Acquire); `waiter` is
// written by the joiner only while the state is EMPTY (nobody else reads it then)
// and read by the coroutine only after its swap to DONE returned WAITING, after
// which the joiner never touches it again. T crosses threads, so T: Send.
unsafe impl<T: Send> Sync for Packet<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Packet<T> {}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            state: AtomicU8::new(EMPTY),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }

    fn complete(&self, result: Result<T>) {
        // SAFETY: only the coroutine writes `result`, once, before DONE.
        unsafe { *self.result.get() = Some(result) };
        if self.state.swap(DONE, Ordering::AcqRel) == WAITING {
            // SAFETY: the joiner published its waiter with WAITING and will not
            // touch it again now that the state is DONE.
            if let Some(w) = unsafe { (*self.waiter.get()).take() } {
                w.unpark(Wake::Ready);
            }
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Registers `who` to be woken at completion (replacing an earlier waiter);
    /// false if already complete.
    fn watch(&self, who: Unparker) -> bool {
        // Take back a waiter published earlier, so the cell is ours to write.
        if self
            .state
            .compare_exchange(WAITING, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            == Err(DONE)
        {
            return false;
        }
        // SAFETY: the state is EMPTY (or DONE, checked below): the coroutine reads
        // `waiter` only after seeing WAITING.
        unsafe { *self.waiter.get() = Some(who) };
        self.state
            .compare_exchange(EMPTY, WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The result, once `is_done()`.
    fn take(&self) -> Option<Result<T>> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: DONE was observed with Acquire: the coroutine's write is visible
        // and it never touches `result` again; only the handle's owner calls this.
        unsafe { (*self.result.get()).take() }
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
    /// of the panic that ended it (as `std::thread::JoinHandle::join`).
    ///
    /// Inside a coroutine this parks only the caller; on a plain thread it drives
    /// this thread's scheduler until the coroutine is done.
    ///
    /// ```
    /// let h = patchall::spawn(|| panic!("boom")).unwrap();
    /// let err = h.join().unwrap_err();
    /// assert_eq!(err.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn join(self) -> Result<T> {
        let packet = &self.packet;
        if runtime::in_coroutine() {
            while !packet.is_done() {
                runtime::park(None, |who| packet.watch(who));
            }
        } else if runtime::current_scheduler_id() == Some(self.home) {
            // The coroutine runs here: driving this scheduler is what finishes it,
            // no wake-up from elsewhere is needed.
            let _ = runtime::with_scheduler(|s| s.run_until(None, &mut || packet.is_done()));
        } else {
            drive_until(&mut || packet.is_done(), |who| {
                packet.watch(who);
            });
        }
        packet.take().expect("a finished coroutine left its result")
    }

    /// True once the coroutine has returned or panicked.
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
            if runtime::sleep_until(deadline) != Wake::TimedOut {
                continue;
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
