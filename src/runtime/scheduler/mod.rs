//! One scheduler per OS thread: a FIFO run queue, timers and a reactor, driven by
//! whichever plain code on that thread waits (`join`, `sleep`, `run`), as gevent's
//! main greenlet blocks into the hub.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use corosensei::Coroutine;

use super::control::TaskHandle;
use super::dispatch;
use super::monitor::{self, Hold};
use super::observe::{self, Counters, Label};
use super::overflow::{self, AltStack};
use super::reactor::{Epoll, FD_REGS, Reactor, Waker};
use super::runq::RunQueue;
use super::signals::Signals;
use super::slice::Slice;
use super::stack::{self, Stack, StackCache};
use super::task::{Co, StackFacts, Task, Unparker, Wake};
use super::timer::Timers;
use super::tls;
use super::tp_local::tp_local;
use crate::config::config;

mod fds;
mod park;
mod run;

pub(crate) use fds::{fd_closing, fd_created, fd_shut_down};
pub(crate) use park::{
    Breaks, park, park_as, park_on_what, ring_io, root_unparker, sleep_until, wait_any_as, wait_fd,
    wait_signal, without_parking, yield_now,
};

tp_local! {
    /// This thread's scheduler, or null. Read by hooks.
    static CURRENT: Cell<*const Scheduler> = zeroed;
}
tp_local! {
    /// The coroutine running on this thread, or null on the scheduler's own stack.
    pub(crate) static RUNNING: Cell<*const Task> = zeroed;
}
thread_local! {
    /// Owns this thread's scheduler; dropping it at thread exit tears it down.
    static OWNER: Owner = const { Owner(RefCell::new(None)) };
}

struct Owner(RefCell<Option<Box<Scheduler>>>);

impl Owner {
    /// Leaks the scheduler: it lives until the process ends.
    fn leak(&self) {
        if let Ok(mut owned) = self.0.try_borrow_mut() {
            if let Some(s) = owned.take() {
                Box::leak(s);
            }
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // `exit` runs the main thread's thread-local destructors before the
        // atexit handlers: the exit report must see this scheduler first.
        // SAFETY: getpid and gettid have no preconditions.
        if unsafe { libc::getpid() == libc::gettid() } {
            super::dump::exit_report();
        }
        // `exit()` called in a coroutine runs this thread's thread-local
        // destructors on the coroutine's stack, then the atexit handlers and
        // destructors, which may join or wait for other coroutines of this
        // scheduler (contract 13): it must outlive them. The process is
        // ending: it is leaked, and the coroutine stays one.
        if in_coroutine() {
            self.leak();
            return;
        }
        // A kept scheduler (`keep_scheduler`) is not ours to forget.
        let Some(owned) = self.0.borrow_mut().take() else {
            return;
        };
        CURRENT.with(|c| c.set(ptr::null()));
        RUNNING.with(|r| r.set(ptr::null()));
        drop(owned);
    }
}

/// Messages other threads leave for a scheduler.
pub(crate) enum Mail {
    Unpark(Option<Arc<Task>>, u64, Wake),
    Closed(RawFd, u32),
    Cancel(Arc<Task>),
    /// Run on the owner's thread, outside any coroutine (a spawn from elsewhere).
    Run(Box<dyn FnOnce() + Send>),
}

/// The part of a scheduler other threads may touch.
pub(crate) struct Remote {
    pub(crate) id: usize,
    /// Unique in the process's life (`id`, a slot, and the address are reused).
    serial: usize,
    inbox: Mutex<Vec<Mail>>,
    has_mail: AtomicBool,
    /// True while the owner may be blocked in `epoll_wait`.
    polling: AtomicBool,
    waker: Waker,
    epoll: Arc<Epoll>,
    /// Written at every switch; read by the blocking monitor.
    pub(crate) hold: Hold,
    /// Written by the owner only; on lines of their own (other threads write
    /// `inbox` and `has_mail`).
    pub(crate) counters: Counters,
}

impl Remote {
    /// The `Scheduler::id` of the scheduler this mailbox belongs to.
    pub(crate) fn serial(&self) -> usize {
        self.serial
    }

    pub(crate) fn post(&self, mail: Mail) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mail);
        self.has_mail.store(true, Ordering::SeqCst);
        if self.polling.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// Live schedulers by id, so that `close` on any thread can reach every reactor.
static REMOTES: Mutex<Vec<Option<Arc<Remote>>>> = Mutex::new(Vec::new());
static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);
/// How many ids a scheduler takes from `NEXT_TASK_ID` at once.
const ID_BLOCK: u64 = 1024;
/// How many finished tasks' allocations a scheduler keeps.
const SPARE_TASKS: usize = 64;
/// Names schedulers for as long as the process lives (`Remote::serial`).
static NEXT_SCHEDULER: AtomicUsize = AtomicUsize::new(1);

pub(crate) struct Scheduler {
    pub(super) remote: Arc<Remote>,
    runq: RunQueue,
    timers: RefCell<Timers>,
    reactor: RefCell<Reactor>,
    stacks: RefCell<StackCache>,
    /// Coroutines spawned here that have not finished, linked through the
    /// tasks (`Task::live_next`), for snapshots. Each listed task is alive:
    /// runnable (the run queue holds it), running (`resume` holds it) or
    /// parked, and a parked task holds itself (`Task::held`) from the end of
    /// the run that parked it (the reference `resume` used to drop there, so
    /// no extra reference-count traffic) until it parks again or finishes.
    live_head: Cell<*const Task>,
    /// How many tasks are listed.
    live: Cell<usize>,
    /// When the run going on began, while runs are timed.
    began: Cell<Option<Instant>>,
    /// Coroutine runs since the reactor was last polled.
    runs_since_poll: Cell<u32>,
    /// Time slices (contract 12).
    slice: Slice,
    /// A wake for the driving plain thread arrived since `run_until` last asked
    /// `done()`: it must ask again before blocking in the reactor.
    root_woken: Cell<bool>,
    /// Coroutines parked in a way a signal handler interrupts (I/O, sleep,
    /// waits with a signal mask) or waiting for a signal.
    pub(super) signals: Signals,
    /// Set in the child of a `fork`: this is the parent's scheduler, copied.
    /// It must never run again (its epoll instance is the parent's).
    orphaned: Cell<bool>,
    /// This thread's errno: its address is fixed for the thread's life, and
    /// every switch to a coroutine without a TLS block of its own saves and
    /// restores it.
    errno_slot: *mut libc::c_int,
    /// This thread's own `RUNNING`, which a coroutine without a TLS block of
    /// its own reads: set and cleared around its runs through this address,
    /// fixed for the thread's life (a `tp_local` has no destructor), without a
    /// thread-local access each time.
    running_slot: *const Cell<*const Task>,
    /// This thread's Syscall User Dispatch state: every switch saves and
    /// restores the selector, as errno.
    gate: dispatch::GateRef,
    /// This thread's own thread pointer, switched back to after coroutines
    /// with their own TLS block (`tls`) ran.
    tp: usize,
    /// The block `fs` points at now: `tp`, or that of the coroutine with its
    /// own block that ran last. Between two such coroutines of one round the
    /// scheduler stays on the first one's (a `wrfsbase` fewer per switch);
    /// it touches no thread-local there, and goes back to `tp` before
    /// anything else.
    fs: Cell<usize>,
    /// Task ids taken from `NEXT_TASK_ID` a block at a time: (next, end).
    ids: Cell<(u64, u64)>,
    /// Finished tasks nobody else holds, whose allocations the next spawns
    /// reuse (a malloc and a free fewer per spawn).
    spare_tasks: RefCell<Vec<Arc<Task>>>,
    /// The waiters a poll woke, kept between polls for its capacity.
    woken: RefCell<Vec<Unparker>>,
    _altstack: Option<AltStack>,
}

/// How many coroutine runs may pass before I/O is polled while work is runnable:
/// a bound on how long a ready socket waits behind busy coroutines, counted in
/// runs (not rounds) so that two coroutines yielding to each other do not pay an
/// `epoll_wait` every few switches.
const POLL_EVERY: u32 = 256;

/// How many live coroutines a scheduler needs before the next one's stack is
/// prefetched (`prefetch_resumption`): the stacks of a few stay in the caches
/// between their turns, and the prefetches cost a yield round trip between
/// two coroutines 45 % more instructions (callgrind).
const PREFETCH_FROM: usize = 32;

impl Scheduler {
    fn new() -> io::Result<Scheduler> {
        let mut remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
        let id = remotes
            .iter()
            .position(Option::is_none)
            .unwrap_or(remotes.len());
        let reactor = Reactor::new(id)?;
        let remote = Arc::new(Remote {
            id,
            serial: NEXT_SCHEDULER.fetch_add(1, Ordering::Relaxed),
            inbox: Mutex::new(Vec::new()),
            has_mail: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            waker: Waker::new(reactor.epoll())?,
            epoll: reactor.epoll().clone(),
            hold: Hold::new(),
            counters: Counters::default(),
        });
        if id == remotes.len() {
            remotes.push(None);
        }
        remotes[id] = Some(remote.clone());
        drop(remotes);
        overflow::install_handler();
        monitor::start_if_wanted();
        dispatch::enable_for_thread();
        let cfg = config();
        Ok(Scheduler {
            remote,
            runq: RunQueue::new(),
            timers: RefCell::new(Timers::default()),
            reactor: RefCell::new(reactor),
            stacks: RefCell::new(StackCache::new(cfg.stack_mode)),
            live_head: Cell::new(ptr::null()),
            live: Cell::new(0),
            began: Cell::new(None),
            runs_since_poll: Cell::new(0),
            slice: Slice::new(),
            root_woken: Cell::new(false),
            signals: Signals::default(),
            orphaned: Cell::new(false),
            // SAFETY: __errno_location has no preconditions and returns this
            // thread's errno, which outlives the scheduler (owned by this thread).
            errno_slot: unsafe { libc::__errno_location() },
            running_slot: RUNNING.with(ptr::from_ref),
            gate: dispatch::gate_ref(),
            tp: tls::thread_pointer(),
            fs: Cell::new(tls::thread_pointer()),
            ids: Cell::new((0, 0)),
            spare_tasks: RefCell::new(Vec::new()),
            woken: RefCell::new(Vec::new()),
            _altstack: AltStack::ensure(),
        })
    }

    /// Names this scheduler, never another, for as long as the process lives.
    pub(crate) fn id(&self) -> usize {
        self.remote.serial()
    }

    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.remote.counters
    }

    /// A snapshot of this scheduler's live coroutines, by id. On its own
    /// thread only.
    pub(crate) fn snapshot(&self) -> observe::WorkerInfo {
        let now = Instant::now();
        let mut coroutines = Vec::with_capacity(self.live.get());
        let mut at = self.live_head.get();
        // SAFETY: every listed task is alive (see `live_head`).
        while let Some(task) = unsafe { at.as_ref() } {
            coroutines.push(observe::task_info(task, now));
            at = task.live_next.get();
        }
        coroutines.sort_by_key(|c| c.id);
        observe::WorkerInfo {
            id: self.id(),
            thread: self.remote.hold.tid,
            answered: true,
            coroutines,
        }
    }

    pub(super) fn slice(&self) -> &Slice {
        &self.slice
    }

    /// Makes the next round poll I/O even if coroutines are runnable: one that
    /// yields for its time slice must let the others' fds be seen.
    pub(super) fn poll_soon(&self) {
        self.runs_since_poll.set(POLL_EVERY);
    }

    /// Creates a coroutine running `body` and queues it. `body` must not unwind.
    /// It gets a TLS block of its own if `PATCHALL_GREEN_TLS=own` says so.
    pub(crate) fn spawn<F: FnOnce() + 'static>(
        &self,
        name: Option<Arc<str>>,
        stack_size: Option<usize>,
        body: F,
    ) -> io::Result<TaskHandle> {
        self.spawn_tls(name, stack_size, None, body)
    }

    /// `spawn`, with `own_tls` deciding the TLS block (None: the variable).
    pub(crate) fn spawn_tls<F: FnOnce() + 'static>(
        &self,
        name: Option<Arc<str>>,
        stack_size: Option<usize>,
        own_tls: Option<bool>,
        body: F,
    ) -> io::Result<TaskHandle> {
        let mut stack = self.stacks.borrow_mut().get(stack_size)?;
        let tp = match take_tls(own_tls, &mut stack) {
            Ok(tp) => tp,
            Err(e) => {
                self.stacks.borrow_mut().put(stack);
                return Err(e);
            }
        };
        let id = self.next_id();
        let (facts, co) = coroutine(stack, body);
        // `Task::new` is written in each arm so that it is built where it
        // ends up: built once before the match and moved in, it cost 19
        // instructions more per spawn+join (callgrind; a copy of the task).
        let spare = self.spare_tasks.borrow_mut().pop();
        let task = match spare {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(t) => {
                    *t = Task::new(id, name, Some(co), facts);
                    spare
                }
                None => Arc::new(Task::new(id, name, Some(co), facts)),
            },
            None => Arc::new(Task::new(id, name, Some(co), facts)),
        };
        task.tls.set(tp);
        let handle = TaskHandle(task.clone());
        self.start(task);
        Ok(handle)
    }

    /// A task id unique in the process: a shared counter bumped once per spawn
    /// would be a locked instruction on a line every spawning thread writes.
    fn next_id(&self) -> u64 {
        let (next, end) = self.ids.get();
        if next < end {
            self.ids.set((next + 1, end));
            return next;
        }
        let base = NEXT_TASK_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
        self.ids.set((base + 1, base + ID_BLOCK));
        base
    }

    /// Keeps a finished task's allocation for a later spawn, if no one else
    /// holds the task (checked for good when it is reused).
    pub(super) fn keep_task(&self, task: Arc<Task>) {
        let mut spare = self.spare_tasks.borrow_mut();
        if spare.len() < SPARE_TASKS && Arc::strong_count(&task) == 1 {
            spare.push(task);
        }
    }

    /// Queues a task `new_task` made.
    fn start(&self, task: Arc<Task>) {
        let tp = task.tls.get();
        if tp != 0 {
            tls::bind(tp, self.tp, (task.guard.1, task.stack_size));
        }
        let me = Arc::as_ptr(&task);
        let head = self.live_head.replace(me);
        task.live_next.set(head);
        // SAFETY: a listed task is alive (see `live_head`).
        if let Some(head) = unsafe { head.as_ref() } {
            head.live_prev.set(me);
        }
        let live = self.live.get() + 1;
        self.live.set(live);
        if observe::on() {
            self.remote.counters.started(live);
        }
        self.runq.push_back(task);
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        dispatch::disable_for_thread();
        observe::retire(&self.remote.counters, &self.remote.hold);
        // Parked tasks hold themselves: let go, as their other holders do.
        let mut at = self.live_head.replace(ptr::null());
        // SAFETY: listed tasks are alive until their own reference goes,
        // which is after their successor is read.
        while let Some(task) = unsafe { at.as_ref() } {
            at = task.live_next.get();
            drop(task.held.take());
        }
        let mut remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = remotes.get_mut(self.remote.id) {
            *slot = None;
        }
    }
}

/// Spawns `body` as a coroutine on the scheduler `home` (usually another thread's).
/// The stack is taken here, so running out of memory is the caller's error; the
/// coroutine starts when `home` reads its mail.
pub(crate) fn spawn_at<F: FnOnce() + Send + 'static>(
    home: &Arc<Remote>,
    name: Option<Arc<str>>,
    stack_size: Option<usize>,
    own_tls: Option<bool>,
    body: F,
) -> io::Result<TaskHandle> {
    let cfg = config();
    let size = stack::usable_size(stack_size, crate::config::DEFAULT_STACK_SIZE)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    let mut stack = stack::allocate(size, cfg.stack_mode)?;
    let tp = match take_tls(own_tls, &mut stack) {
        Ok(tp) => tp,
        Err(e) => {
            stack::release([stack]);
            return Err(e);
        }
    };
    let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
    let task = new_task(id, name, stack, body);
    task.tls.set(tp);
    let handle = TaskHandle(task.clone());
    home.post(Mail::Run(Box::new(move || {
        let s = current_scheduler().expect("mail is read by its scheduler's thread");
        s.start(task);
    })));
    Ok(handle)
}

/// A coroutine that will run `body` on `stack`, not queued anywhere yet. Only
/// the scheduler that queues it touches it afterwards (see `Task`).
fn new_task<F: FnOnce() + 'static>(
    id: u64,
    name: Option<Arc<str>>,
    stack: Stack,
    body: F,
) -> Arc<Task> {
    let (facts, co) = coroutine(stack, body);
    Arc::new(Task::new(id, name, Some(co), facts))
}

/// A coroutine running `body` on `stack`, and the stack's facts.
fn coroutine<F: FnOnce() + 'static>(stack: Stack, body: F) -> (StackFacts, Co) {
    let facts = StackFacts::of(&stack);
    let co = Coroutine::with_stack(stack, move |yielder, ()| {
        let task = current_task().expect("a coroutine body runs as the current task");
        task.yielder.set(yielder);
        dispatch::coroutine_start();
        body();
        if task.tls.get() != 0 {
            tls::exiting();
        }
    });
    (facts, co)
}

/// Every live scheduler's mailbox (for the monitor and the dump).
pub(crate) fn remotes() -> Vec<Arc<Remote>> {
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    remotes.iter().flatten().cloned().collect()
}

/// Names the next park of the running coroutine (none outside a coroutine).
#[inline]
pub(crate) fn label(label: &'static Label) {
    if let Some(task) = current_task() {
        task.label.set(label);
    }
}

/// A TLS block for a new coroutine if `own_tls` (None: the variable) asks for
/// one and blocks can be made, at the top of its `stack` where there is room;
/// 0 for the carrier's.
fn take_tls(own_tls: Option<bool>, stack: &mut Stack) -> io::Result<usize> {
    if !own_tls.unwrap_or_else(|| tls::wanted(false)) || !tls::available() {
        return Ok(0);
    }
    if let Some(top) = stack.reserve_top(tls::room()) {
        match tls::take_at(top) {
            Some(tp) => return Ok(tp),
            None => stack.unreserve(),
        }
    }
    tls::take().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// The mailbox of the live scheduler whose `Scheduler::id` is `id`.
pub(crate) fn remote_of(id: usize) -> Option<Arc<Remote>> {
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    remotes.iter().flatten().find(|r| r.serial == id).cloned()
}

/// This thread's scheduler's mailbox, for other threads to reach it.
pub(crate) fn current_home() -> io::Result<Arc<Remote>> {
    with_scheduler(|s| s.remote.clone())
}

/// Held across `fork`, so that no other thread is half-way through changing the
/// registry of schedulers when the child's copy of it is taken.
pub(crate) struct ForkGuard(MutexGuard<'static, Vec<Option<Arc<Remote>>>>);

pub(crate) fn before_fork() -> ForkGuard {
    ForkGuard(REMOTES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// After `fork`, in both processes. The child keeps nothing of the parent's
/// runtime: every scheduler, epoll instance and waker it inherited is shared
/// with the parent, so it is leaked, never used, never dropped (dropping would
/// run code that touches them). The calling code, on a coroutine's stack or
/// not, goes on as a plain thread (hooks forward), which gets a fresh scheduler
/// if it spawns again; the other coroutines never run in the child.
pub(crate) fn after_fork(held: ForkGuard, child: bool) {
    let ForkGuard(mut remotes) = held;
    if !child {
        return;
    }
    remotes.drain(..).for_each(std::mem::forget);
    FD_REGS.for_each(|_, reg| reg.reactors.store(0, Ordering::Release));
    if let Some(s) = current_scheduler() {
        s.orphaned.set(true);
    }
    // The child's only thread is the caller: its mask is the caller's own.
    if let Some(mask) = super::signals::own_mask() {
        super::signals::set_thread_mask(mask);
    }
    let _ = OWNER.try_with(|o| {
        if let Ok(mut owned) = o.0.try_borrow_mut() {
            std::mem::forget(owned.take());
        }
    });
    CURRENT.with(|c| c.set(ptr::null()));
    RUNNING.with(|r| r.set(ptr::null()));
}

/// The current thread's scheduler, created on first use.
pub(crate) fn with_scheduler<R>(f: impl FnOnce(&Scheduler) -> R) -> io::Result<R> {
    if let Some(s) = current_scheduler() {
        return Ok(f(s));
    }
    let scheduler = Box::new(Scheduler::new()?);
    let ptr: *const Scheduler = &*scheduler;
    OWNER
        .try_with(|o| *o.0.borrow_mut() = Some(scheduler))
        .map_err(|_| io::Error::other("patchall: thread is exiting"))?;
    CURRENT.with(|c| c.set(ptr));
    super::dump::on_first_scheduler();
    // SAFETY: the box is owned by OWNER until thread exit, which clears CURRENT first.
    Ok(f(unsafe { &*ptr }))
}

/// Keeps this thread's scheduler for the rest of the process's life: not
/// dropped with the thread's locals, which `exit()` destroys before it runs
/// the atexit handlers and destructors that may still need it (green `main`'s
/// thread: exit handlers that join green threads drive it).
pub(crate) fn keep_scheduler() {
    let _ = OWNER.try_with(Owner::leak);
}

/// This thread's scheduler, if it has one. Never allocates: safe in hooks.
#[inline]
pub(crate) fn current_scheduler() -> Option<&'static Scheduler> {
    let ptr = CURRENT.with(Cell::get);
    // SAFETY: non-null only while OWNER holds the box (see `with_scheduler`).
    unsafe { ptr.as_ref() }
}

/// The id (`Scheduler::id`) of this thread's scheduler, if it has one.
pub(crate) fn current_scheduler_id() -> Option<usize> {
    current_scheduler().map(Scheduler::id)
}

/// The running coroutine, if code runs on a coroutine stack. Safe in hooks.
#[inline]
pub(crate) fn current_task() -> Option<&'static Task> {
    let ptr = RUNNING.with(Cell::get);
    // SAFETY: RUNNING is non-null only while `resume` holds an Arc to the task.
    unsafe { ptr.as_ref() }
}

/// True when called on a coroutine's stack.
#[inline]
pub fn in_coroutine() -> bool {
    RUNNING.with(|r| !r.get().is_null())
}

pub(super) fn current_arc(task: &Task) -> Arc<Task> {
    // SAFETY: `task` came from RUNNING, which points into an Arc kept alive by
    // `resume`; taking one more strong count and rebuilding an Arc is sound.
    unsafe {
        Arc::increment_strong_count(task);
        Arc::from_raw(task)
    }
}

pub(crate) fn unpark(who: Unparker, wake: Wake) {
    match current_scheduler() {
        Some(s) if Arc::ptr_eq(&s.remote, &who.home) => s.unpark_local(who.task, who.seq, wake),
        _ => who.home.clone().post(Mail::Unpark(who.task, who.seq, wake)),
    }
}
