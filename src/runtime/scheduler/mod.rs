//! One scheduler per OS thread: a FIFO run queue, timers and a reactor, driven by
//! whichever plain code on that thread waits (`join`, `sleep`, `run`), as gevent's
//! main greenlet blocks into the hub.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult};

use super::control::TaskHandle;
use super::dispatch;
use super::monitor::{self, Hold};
use super::observe::{self, Counters, Label, UNNAMED, Wait, WaitsOn};
use super::overflow::{self, AltStack};
use super::reactor::{self, Direction, Epoll, FD_REGS, Prepared, Reactor, Waker};
use super::runq::RunQueue;
use super::signals::Signals;
use super::slice::Slice;
use super::stack::{self, Stack, StackCache};
use super::task::{Co, StackFacts, State, Task, Unparker, Wake};
use super::timer::Timers;
use super::tls;
use crate::config::config;

thread_local! {
    /// This thread's scheduler, or null. Read by hooks: const, no destructor.
    static CURRENT: Cell<*const Scheduler> = const { Cell::new(ptr::null()) };
    /// The coroutine running on this thread, or null on the scheduler's own stack.
    pub(crate) static RUNNING: Cell<*const Task> = const { Cell::new(ptr::null()) };
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
        let _ = CURRENT.try_with(|c| c.set(ptr::null()));
        let _ = RUNNING.try_with(|r| r.set(ptr::null()));
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
            stacks: RefCell::new(StackCache::new(cfg.stack_size, cfg.stack_mode)),
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
            gate: dispatch::gate_ref()
                .ok_or_else(|| io::Error::other("patchall: thread is exiting"))?,
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
        let tp = take_tls(own_tls)?;
        let stack = match self.stacks.borrow_mut().get(stack_size) {
            Ok(stack) => stack,
            Err(e) => {
                if tp != 0 {
                    tls::give_back(tp);
                }
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

    /// Runs `task` until it yields, parks or ends; its run is stamped for the
    /// monitor and timed while something watches (`observe::on`: one flag,
    /// tested as the run starts and again as it ends, when nothing does).
    /// One body for both cases, so that corosensei's switch stays inlined.
    #[inline(always)]
    fn resume(&self, task: Arc<Task>) {
        task.state.set(State::Running);
        let tp = task.tls.get();
        let errno_slot = self.errno_slot;
        let mut own_errno = 0;
        if tp == 0 {
            self.back_to_carrier();
            RUNNING.with(|r| r.set(Arc::as_ptr(&task)));
            // SAFETY: the scheduler runs only on the thread whose errno this is
            // (see `errno_slot`); nothing else holds a reference to it.
            own_errno = unsafe { errno_slot.replace(task.errno.get()) };
        } else {
            // Its errno is its own: nothing to save.
            self.move_fs(tp);
            set_running(self, Arc::as_ptr(&task));
        }
        // SAFETY: `co` is only touched on this thread; a runnable task always still
        // holds its coroutine, and nothing else borrows it while it runs.
        let co = unsafe { (*task.co.get()).as_mut() }.expect("runnable task has a coroutine");
        let watched = observe::on();
        if watched {
            self.watch_start(&task);
        } else {
            self.remote.hold.bump();
        }
        // The selector is saved and restored around the switch as errno is
        // (where dispatch is off the kernel never reads it: no test here,
        // which cost more than the two stores).
        self.gate.switch_in(task.selector.get());
        let result = co.resume(());
        task.selector.set(self.gate.switch_out());
        if tp != 0 {
            // Its copy must not name it as running while it is not.
            set_running(self, ptr::null());
        }
        if watched {
            self.watch_end(&task);
        }
        if self.orphaned.get() {
            self.back_to_carrier();
            // The coroutine that called `fork` was the child's only thread and
            // has ended: as when a process's last thread ends, it exits.
            // SAFETY: exit has no preconditions.
            unsafe { libc::exit(0) }
        }
        if tp == 0 {
            // SAFETY: as above.
            task.errno.set(unsafe { errno_slot.replace(own_errno) });
            RUNNING.with(|r| r.set(ptr::null()));
        }
        // Checked on return too: a finished coroutine's overrun smashed its
        // neighbour just the same, and the pool rewrites the canary.
        if task.canary.is_some_and(|c| !c.intact()) {
            self.back_to_carrier();
            overflow::report_and_abort(&task);
        }
        match result {
            CoroutineResult::Yield(()) if task.exiting.get() => {
                self.back_to_carrier();
                // SAFETY: `exit_current` promised that no frame on this stack owns
                // anything that needs dropping (it is called from C frames and our
                // own frames hold only plain values), so abandoning them is sound.
                unsafe { co.force_reset() };
                self.finish(&task);
            }
            // `yield_now` left it runnable: requeue this very Arc, sparing the
            // reference-count traffic of a clone per yield.
            CoroutineResult::Yield(()) => match task.state.get() {
                State::Runnable => self.runq.push_back(task),
                State::Parked => Scheduler::hold(task),
                _ => {}
            },
            CoroutineResult::Return(()) => {
                self.back_to_carrier();
                self.finish(&task);
                self.keep_task(task);
            }
        }
    }

    /// Keeps a parked task alive in itself (see `live_head`); a reference
    /// kept from an earlier park goes.
    #[inline]
    fn hold(task: Arc<Task>) {
        let me = Arc::as_ptr(&task);
        // SAFETY: `task` keeps the task alive across the call, and then the
        // reference it moved into the task does.
        drop(unsafe { (*me).held.replace(Some(task)) });
    }

    /// Stamps the start of a run that something watches (`resume`).
    #[cold]
    #[inline(never)]
    fn watch_start(&self, task: &Task) {
        self.remote.hold.run_started(task.id);
        if observe::timing() {
            self.began.set(Some(Instant::now()));
        }
    }

    /// Marks the end of a run `watch_start` stamped and records how long it
    /// held the thread and, for a run that parked, since when it waits.
    #[cold]
    #[inline(never)]
    fn watch_end(&self, task: &Task) {
        self.remote.hold.run_ended();
        if !observe::timing() {
            return;
        }
        let now = Instant::now();
        // None for a run that started before timing did, and for the outer
        // run around nested ones (contract 13), whose start they took.
        if let Some(began) = self.began.take() {
            self.remote
                .counters
                .held(now.saturating_duration_since(began));
        }
        if task.state.get() == State::Parked {
            // SAFETY: a parked task's park wrote its record.
            let mut wait = unsafe { task.wait.get().assume_init() };
            wait.since = Some(now);
            task.wait.set(MaybeUninit::new(wait));
        }
    }

    /// Takes `task` off the list of live tasks.
    #[inline(always)]
    fn unlist(&self, task: &Task) {
        let (prev, next) = (
            task.live_prev.replace(ptr::null()),
            task.live_next.replace(ptr::null()),
        );
        // SAFETY: listed tasks are alive (see `live_head`).
        match unsafe { prev.as_ref() } {
            Some(prev) => prev.live_next.set(next),
            None => self.live_head.set(next),
        }
        // SAFETY: as above.
        if let Some(next) = unsafe { next.as_ref() } {
            next.live_prev.set(prev);
        }
        self.live.set(self.live.get() - 1);
    }

    /// Points `fs` at `to` (a coroutine's block or `tp`), unless it is there.
    #[inline]
    fn move_fs(&self, to: usize) {
        if self.fs.get() != to {
            move_tls(to);
            self.fs.set(to);
        }
    }

    /// Back on this thread's own block: before the scheduler does anything
    /// but resume the next coroutine with a block of its own.
    #[inline]
    fn back_to_carrier(&self) {
        self.move_fs(self.tp);
    }

    /// Recycles a finished coroutine's stack.
    fn finish(&self, task: &Task) {
        task.state.set(State::Done);
        self.unlist(task);
        drop(task.held.take());
        // SAFETY: only this thread touches `co`; the coroutine finished (or was
        // reset), so its stack is free.
        let co = unsafe { (*task.co.get()).take() }.expect("a finishing task has its coroutine");
        self.stacks.borrow_mut().put(co.into_stack());
        let tp = task.tls.replace(0);
        if tp != 0 {
            tls::give_back(tp);
        }
        if let Some(mask) = task.sigmask.take() {
            self.signals.masks.ended(mask);
        }
    }

    pub(super) fn cancel_local(&self, task: Arc<Task>) {
        task.cancelled.set(true);
        if task.state.get() == State::Parked {
            let seq = task.park_seq.get();
            self.unpark_local(Some(task), seq, Wake::Cancelled);
        }
    }

    fn unpark_local(&self, task: Option<Arc<Task>>, seq: u64, wake: Wake) {
        // A wake for the driving plain thread: `run_until` re-checks its
        // condition before it next blocks.
        let Some(task) = task else {
            self.root_woken.set(true);
            return;
        };
        if task.state.get() == State::Parked && task.park_seq.get() == seq {
            task.wake.set(wake);
            task.state.set(State::Runnable);
            self.runq.push_back(task);
        }
    }

    #[inline]
    fn drain_mail(&self) {
        // A plain load first: this runs every round, and mail is rare; a swap
        // is a locked instruction. Mail posted after the load is seen next
        // round, or by `poll`'s check before it blocks.
        if self.remote.has_mail.load(Ordering::SeqCst) {
            self.read_mail();
        }
    }

    /// `drain_mail`'s rare half, out of line so that the check inlined into
    /// every round saves no registers.
    #[cold]
    #[inline(never)]
    fn read_mail(&self) {
        if !self.remote.has_mail.swap(false, Ordering::SeqCst) {
            return;
        }
        let mail =
            std::mem::take(&mut *self.remote.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for m in mail {
            match m {
                Mail::Unpark(task, seq, wake) => self.unpark_local(task, seq, wake),
                Mail::Closed(fd, generation) => self.reactor.borrow_mut().forget(fd, generation),
                Mail::Cancel(task) => self.cancel_local(task),
                Mail::Run(job) => job(),
            }
        }
    }

    /// Interrupts the parks whose mask lets in a signal whose handler ran on
    /// this thread since the last check, as the kernel interrupts a blocked call.
    #[inline]
    fn check_signals(&self) {
        if self.signals.pending() {
            self.interrupt_parks();
        }
    }

    /// `check_signals`' rare half. Plain parks are found among the live
    /// tasks (a park only stores its mask in its task: no list to keep per
    /// park, which cost two reference counts and a slab slot each).
    #[cold]
    #[inline(never)]
    fn interrupt_parks(&self) {
        let Some(hits) = self.signals.interrupt() else {
            return;
        };
        let mut at = self.live_head.get();
        // SAFETY: every listed task is alive (see `live_head`), and waking
        // one does not unlist it.
        while let Some(task) = unsafe { at.as_ref() } {
            at = task.live_next.get();
            if task.state.get() != State::Parked {
                continue;
            }
            let Some(wake) = task.plain_mask.get().and_then(|m| hits.plain(m)) else {
                continue;
            };
            task.plain_mask.set(None);
            let seq = task.park_seq.get();
            self.unpark_local(Some(current_arc(task)), seq, wake);
        }
    }

    #[inline]
    fn fire_timers(&self) {
        if self.timers.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let Some(who) = self.timers.borrow_mut().pop_expired(now) else {
                break;
            };
            who.unpark(Wake::TimedOut);
        }
    }

    /// Drives this scheduler until `done()` holds or `deadline` passes.
    pub(crate) fn run_until(&self, deadline: Option<Instant>, done: &mut dyn FnMut() -> bool) {
        // Whether `done()` was asked since the last thing that could change it
        // ran here: two coroutines yielding to each other ask it once a round.
        let mut asked = false;
        loop {
            if !asked {
                self.root_woken.set(false);
                if done() {
                    return;
                }
            }
            asked = false;
            let batch = self.runq.len();
            let cold = self.live.get() >= PREFETCH_FROM;
            for _ in 0..batch {
                let Some(task) = self.runq.pop_front() else {
                    break;
                };
                if cold && let Some(next) = self.runq.front() {
                    prefetch_resumption(next);
                }
                self.resume(task);
            }
            self.back_to_carrier();
            if batch > 0 {
                self.root_woken.set(false);
                if done() {
                    return;
                }
                asked = true;
            }
            self.check_signals();
            self.drain_mail();
            self.fire_timers();
            // The mail just read may be the wake-up `done()` waits for (set from
            // another thread after the check above): blocking now would lose it.
            if self.root_woken.get() {
                asked = false;
                continue;
            }
            let now = (deadline.is_some() || !self.timers.borrow().is_empty()).then(Instant::now);
            if let (Some(d), Some(now)) = (deadline, now) {
                if now >= d {
                    return;
                }
            }
            let busy = !self.runq.is_empty();
            let runs = self.runs_since_poll.get().saturating_add(batch as u32);
            if busy && runs < POLL_EVERY {
                self.runs_since_poll.set(runs);
                continue;
            }
            self.runs_since_poll.set(0);
            asked = false;
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                let next = [deadline, self.timers.borrow().next_deadline()]
                    .into_iter()
                    .flatten()
                    .min();
                next.map(|t| t.saturating_duration_since(now.unwrap_or_else(Instant::now)))
            };
            self.poll(timeout);
        }
    }

    fn poll(&self, timeout: Option<Duration>) {
        let may_block = timeout != Some(Duration::ZERO);
        let mut timeout = timeout;
        if may_block {
            self.remote.polling.store(true, Ordering::SeqCst);
            if self.remote.has_mail.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let mut woken = std::mem::take(&mut *self.woken.borrow_mut());
        let sigmask = self.signals.wait_mask();
        let result = {
            let mut reactor = self.reactor.borrow_mut();
            self.signals.watch(&reactor);
            reactor.poll(timeout, sigmask, |who| woken.push(who))
        };
        self.remote.polling.store(false, Ordering::SeqCst);
        let mut delivered = false;
        match result {
            Ok(polled) => {
                if polled.signalled {
                    self.signals.wake_waiting();
                }
                delivered = polled.interrupted;
            }
            Err(e) => crate::sys::diag(&[
                b"patchall: epoll_wait failed: ",
                e.to_string().as_bytes(),
                b"\n",
            ]),
        }
        if let (Some(mask), false) = (sigmask, delivered) {
            // A wait that found events at once (or had no time) delivered no
            // signal: a signal pending all along would never be, under load.
            // Those pending that `mask` lets in have their handlers run now.
            super::signals::deliver_pending(mask);
        }
        for who in woken.drain(..) {
            self.unpark_local(who.task, who.seq, Wake::Ready);
        }
        *self.woken.borrow_mut() = woken;
        self.check_signals();
        self.drain_mail();
        self.fire_timers();
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

/// Asks the CPU to bring in what resuming `task` (the next in the run queue)
/// will touch first: the top frames of its stack, which the return from its
/// switch and its blocking call pops, and the record of the task queued after
/// it. With a thousand coroutines taking turns, each one's stack and record
/// have left the caches by its next turn; fetched while the one before it
/// runs (its system calls take microseconds), the misses overlap with that
/// work instead of stalling the switch (`perf record` at 1,000 echo
/// connections put a fifth of patchall's own time on the first touch of the
/// resumed stack). The records go one turn ahead of the stacks: where a
/// stack lies is read from the record, and a record fetched only now made
/// that read the stall (`perf annotate`: most of `run_until`'s samples).
#[inline]
fn prefetch_resumption(task: &Task) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        /// The switch's own saves lie below the hint; the frames of the call
        /// that parked (hook, wait, park) and the program's above it.
        const BELOW: usize = 64;
        const ABOVE: usize = 1024;
        const RECORD_LINES: usize = size_of::<Task>().div_ceil(64);
        let after = task.next.get().cast::<i8>();
        if !after.is_null() {
            for line in 0..RECORD_LINES {
                // SAFETY: prefetching is a hint: it never faults, on any address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(after.wrapping_add(line * 64)) };
            }
        }
        let at = task.stack_hint.get();
        if at != 0 {
            let from = at.wrapping_sub(BELOW) as *const i8;
            // A constant count, which the compiler unrolls.
            for line in 0..(BELOW + ABOVE) / 64 {
                // SAFETY: as above.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(line * 64)) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = task;
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
    let size = stack::round_size(stack_size.unwrap_or(cfg.stack_size))
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    let stack = stack::allocate(size, cfg.stack_mode)?;
    let tp = match take_tls(own_tls) {
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
/// one and blocks can be made; 0 for the carrier's.
fn take_tls(own_tls: Option<bool>) -> io::Result<usize> {
    if !own_tls.unwrap_or_else(tls::wanted) || !tls::available() {
        return Ok(0);
    }
    tls::take().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// The running coroutine's record in the block `fs` points at. Out of line,
/// as is `move_tls`: the compiler takes a thread-local's address as fixed
/// within a function, so the ones touched after a switch must be reached from
/// a new call.
#[inline(never)]
fn set_running(s: &Scheduler, task: *const Task) {
    CURRENT.with(|c| c.set(s));
    RUNNING.with(|r| r.set(task));
}

/// Points `fs` at `to`.
#[inline(never)]
fn move_tls(to: usize) {
    tls::switch_to(to);
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
    let _ = CURRENT.try_with(|c| c.set(ptr::null()));
    let _ = RUNNING.try_with(|r| r.set(ptr::null()));
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
    let ptr = CURRENT.try_with(|c| c.get()).ok()?;
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
    let ptr = RUNNING.try_with(|r| r.get()).ok()?;
    // SAFETY: RUNNING is non-null only while `resume` holds an Arc to the task.
    unsafe { ptr.as_ref() }
}

/// True when called on a coroutine's stack.
#[inline]
pub fn in_coroutine() -> bool {
    RUNNING.try_with(|r| !r.get().is_null()).unwrap_or(false)
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

/// What, besides its own wake-up and deadline, may end a park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Breaks {
    /// Nothing: a wait whose caller can only report success (a lock, a join).
    Never,
    /// Cancellation (`Wake::Cancelled`) and the task's `timeout()` deadline
    /// (`Wake::Expired`): a wait whose caller can report failure (a channel).
    Stop,
    /// `Stop`, and a signal handler run on this thread (`Wake::Interrupted`): a
    /// wait that stands in for a system call (I/O, sleep).
    Syscall,
    /// A signal handler only, not `Stop`: a wait that stands in for a call
    /// whose only early end is EINTR (`sem_wait`).
    Signal,
    /// `Syscall` for a call made with a signal mask of its own (`pselect`,
    /// `sigsuspend`; the kernel's 64-bit set): a handler interrupts the park
    /// if this mask, not the thread's, lets its signal in, and the scheduler's
    /// own wait lets in what it does.
    Masked(u64),
}

/// Suspends the running coroutine until an `Unparker` made by `register` wakes it
/// or `deadline` passes. `register` receives the handle; it returns false if the
/// condition already holds (then nothing parks). Must be called in a coroutine.
pub(crate) fn park(deadline: Option<Instant>, register: impl FnOnce(Unparker) -> bool) -> Wake {
    park_as(deadline, Breaks::Never, register)
}

/// `park`, also ended by what `breaks` names. A stoppable park in a cancelled
/// coroutine, or past the task's deadline, returns at once without registering.
pub(crate) fn park_as(
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    park_on_what(WaitsOn::Nothing, deadline, breaks, register)
}

/// `park_as`, recording what the park waits on for snapshots.
pub(crate) fn park_on_what(
    on: WaitsOn,
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    let task = current_task().expect("park is only called in a coroutine");
    let outer = task.in_park.replace(true);
    let wake = park_task(task, on, deadline, breaks, register);
    task.in_park.set(outer);
    wake
}

/// Runs `f`, runtime bookkeeping on a coroutine's stack (a futex wake, the
/// lot's queue after a park), as `park_as` runs its own: a futex wait it
/// reaches (one of our own locks, contended, through the `syscall` hook) goes
/// to the kernel instead of parking the coroutine. Our locks' holders never
/// park, so that wait is short; a coroutine parked inside a wake would leave
/// the wake half delivered, the glibc lock around it (a malloc arena's, whose
/// unlock made the wake) contended, and its scheduler, which allocates,
/// blocked in the kernel behind it (measured: the stdio chat on two workers
/// hung so).
pub(crate) fn without_parking<R>(f: impl FnOnce() -> R) -> R {
    let task = current_task();
    let outer = task.map(|t| t.in_park.replace(true));
    let r = f();
    if let (Some(t), Some(o)) = (task, outer) {
        t.in_park.set(o);
    }
    r
}

fn park_task(
    task: &Task,
    on: WaitsOn,
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    let sched = current_scheduler().expect("a coroutine runs on a scheduler");
    // Taken whether or not this parks: a label is for one park only.
    let label = task.label.replace(&UNNAMED);
    let expiry = match breaks {
        Breaks::Never | Breaks::Signal => None,
        Breaks::Stop | Breaks::Syscall | Breaks::Masked(_) => {
            if task.cancelled.get() {
                return Wake::Cancelled;
            }
            task.deadline.get()
        }
    };
    // The task's deadline wins ties: the enclosing timeout() is what ran out.
    let expires_first = expiry.is_some_and(|e| deadline.is_none_or(|d| e <= d));
    if expires_first && expiry.is_some_and(|e| Instant::now() >= e) {
        return Wake::Expired;
    }
    let seq = task.park_seq.get() + 1;
    task.park_seq.set(seq);
    let me = Unparker {
        home: sched.remote.clone(),
        task: Some(current_arc(task)),
        seq,
    };
    let timer_at = if expires_first { expiry } else { deadline };
    // A copy only for a timer or a masked park: most parks (an fd wait
    // without a deadline) hand their only waker to `register`, two
    // reference counts up and down fewer.
    let mut kept = (timer_at.is_some() || matches!(breaks, Breaks::Masked(_))).then(|| me.clone());
    if !register(me) {
        return Wake::Ready;
    }
    let slot = match breaks {
        Breaks::Never | Breaks::Stop => None,
        // A handler that ran before this park began interrupts the parks
        // that were waiting then, never this one (the kernel would not
        // interrupt a call made after the handler): account for it first.
        Breaks::Syscall | Breaks::Signal => {
            sched.check_signals();
            let mask = task.sigmask.get().unwrap_or(super::signals::THREAD_MASK);
            task.plain_mask.set(Some(mask));
            None
        }
        Breaks::Masked(mask) => {
            sched.check_signals();
            let who = kept.clone().expect("kept for a masked park");
            Some(sched.signals.insert_masked(who, mask))
        }
    };
    let timer = timer_at.map(|d| {
        let who = kept.take().expect("kept for a timer");
        sched.timers.borrow_mut().insert(d, who)
    });
    task.wait.set(MaybeUninit::new(Wait {
        label,
        on,
        deadline: timer_at,
        since: None,
    }));
    if observe::on() {
        sched.remote.counters.parked(label.family);
    }
    task.state.set(State::Parked);
    let here = 0u8;
    task.stack_hint.set(ptr::from_ref(&here) as usize);
    // SAFETY: `yielder` was set by the coroutine body before any user code ran, and
    // the Yielder lives on this coroutine's stack for as long as it runs.
    unsafe { (*task.yielder.get()).suspend(()) };
    let wake = task.wake.get();
    if let (Some(key), false) = (timer, wake == Wake::TimedOut) {
        sched.timers.borrow_mut().cancel(key);
    }
    if let Some(slot) = slot {
        sched.signals.remove(slot, seq);
    }
    task.plain_mask.set(None);
    match wake {
        Wake::TimedOut if expires_first => Wake::Expired,
        wake => wake,
    }
}

/// Parks the running coroutine until `fd` is ready for `dir`, `deadline` passes or
/// the fd is closed. `Ready` may be spurious: the caller retries its call.
pub(crate) fn wait_fd(fd: RawFd, dir: Direction, deadline: Option<Instant>) -> io::Result<Wake> {
    wait_any(&[(fd, dir)], deadline)
}

/// Parks the running coroutine until any of `fds` is ready (poll, select, epoll
/// on many fds), `deadline` passes, or one of them is closed. Fails, without
/// parking, if an fd cannot be polled.
pub(crate) fn wait_any(fds: &[(RawFd, Direction)], deadline: Option<Instant>) -> io::Result<Wake> {
    wait_any_as(fds, deadline, Breaks::Syscall)
}

/// `wait_any`, ended by signals as `breaks` says (`Syscall` or `Masked`).
pub(crate) fn wait_any_as(
    fds: &[(RawFd, Direction)],
    deadline: Option<Instant>,
    breaks: Breaks,
) -> io::Result<Wake> {
    let sched = current_scheduler().expect("wait_any is only called in a coroutine");
    let mut failed = None;
    let mut me = ptr::null();
    let mut queued = 0;
    let on = fds
        .first()
        .map_or(WaitsOn::Nothing, |&(fd, dir)| WaitsOn::Fd {
            fd,
            dir,
            more: u32::try_from(fds.len() - 1).unwrap_or(u32::MAX),
        });
    let wake = park_on_what(on, deadline, breaks, |who| {
        me = who.task.as_ref().map_or(ptr::null(), Arc::as_ptr);
        let mut reactor = sched.reactor.borrow_mut();
        // The last fd gets `who` itself: one waiter handle fewer to count.
        let mut who = Some(who);
        for (i, &(fd, dir)) in fds.iter().enumerate() {
            let w = if i + 1 == fds.len() {
                who.take()
            } else {
                who.clone()
            };
            let w = w.expect("taken at the last fd only");
            match reactor.prepare_wait(fd, dir, w) {
                Ok(Prepared::Queued) => queued += 1,
                Ok(Prepared::Retry) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        queued == fds.len()
    });
    // Whatever woke us, the other registrations are stale now.
    if !me.is_null() {
        let mut reactor = sched.reactor.borrow_mut();
        for &(fd, dir) in &fds[..queued] {
            reactor.cancel_wait(fd, dir, me);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(wake),
    }
}

/// Called before `fd` is closed or replaced, from any thread: every reactor drops
/// its registration and wakes its waiters with `Closed`; the generation moves on.
pub(crate) fn fd_closing(fd: RawFd) {
    let Some(reg) = FD_REGS.get(fd) else { return };
    let old = reg.generation.fetch_add(1, Ordering::AcqRel);
    reg.reset_readiness();
    let mask = reg.reactors.swap(0, Ordering::AcqRel);
    if mask == 0 {
        return;
    }
    let local = current_scheduler();
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    for remote in remotes.iter().flatten() {
        if mask & reactor::reactor_bit(remote.id) == 0 {
            continue;
        }
        match local {
            Some(s) if Arc::ptr_eq(&s.remote, remote) => {
                if let Ok(mut reactor) = s.reactor.try_borrow_mut() {
                    reactor.forget(fd, old);
                    continue;
                }
                s.remote.post(Mail::Closed(fd, old));
            }
            _ => {
                // Deregister before the fd number can be reused; the owner wakes
                // the waiters when it reads its mail.
                remote.epoll.deregister(fd);
                remote.post(Mail::Closed(fd, old));
            }
        }
    }
}

/// Called after `fd` was shut down, from any thread: every reactor that holds
/// it wakes its waiters to retry their calls (the fd stays open). The kernel
/// raises no epoll event when a send can no longer block (`SHUT_WR`).
pub(crate) fn fd_shut_down(fd: RawFd) {
    let Some(reg) = FD_REGS.get(fd) else { return };
    // No event announces it either: the next call on it tries.
    reg.reset_readiness();
    let generation = reg.generation.load(Ordering::Acquire);
    let mask = reg.reactors.load(Ordering::Acquire);
    if mask == 0 {
        return;
    }
    let local = current_scheduler();
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    for remote in remotes.iter().flatten() {
        if mask & reactor::reactor_bit(remote.id) == 0 {
            continue;
        }
        if let Some(s) = local.filter(|s| Arc::ptr_eq(&s.remote, remote))
            && let Ok(mut reactor) = s.reactor.try_borrow_mut()
        {
            reactor.wake_waiters(fd, generation);
            continue;
        }
        remote.post(Mail::Run(Box::new(move || {
            if let Some(s) = current_scheduler() {
                s.reactor.borrow_mut().wake_waiters(fd, generation);
            }
        })));
    }
}

/// `fd_closing` for every fd in `first..=last` that some reactor registered
/// and `skip` does not exclude (`close_range`, `closefrom`).
pub(crate) fn fds_closing(first: u32, last: u32, skip: impl Fn(RawFd) -> bool) {
    FD_REGS.for_each(|fd, reg| {
        if (first..=last).contains(&(fd as u32))
            && reg.reactors.load(Ordering::Acquire) != 0
            && !skip(fd)
        {
            fd_closing(fd);
        }
    });
}

/// Called when a hook hands out a new fd: a registration left by a close we never
/// saw (glibc closing internally) must not be mistaken for this one.
pub(crate) fn fd_created(fd: RawFd) {
    if FD_REGS
        .get(fd)
        .is_some_and(|r| r.reactors.load(Ordering::Acquire) != 0)
    {
        fd_closing(fd);
    } else if let Some(reg) = FD_REGS.get(fd) {
        reg.generation.fetch_add(1, Ordering::AcqRel);
        reg.reset_readiness();
    }
}

/// Requeues the running coroutine behind the others (in a coroutine): `resume`
/// sees it still runnable when it switches out, and queues it.
#[inline]
pub(crate) fn yield_now() {
    let task = current_task().expect("in a coroutine");
    task.state.set(State::Runnable);
    let here = 0u8;
    task.stack_hint.set(ptr::from_ref(&here) as usize);
    // SAFETY: as in `park`.
    unsafe { (*task.yielder.get()).suspend(()) };
}

/// Sleeps the running coroutine until `deadline` (in a coroutine).
pub(crate) fn sleep_until(deadline: Instant) -> Wake {
    park_as(Some(deadline), Breaks::Syscall, |_| true)
}

/// Parks the running coroutine until a signal of `set` (the kernel's 64-bit set)
/// may be pending for this thread, `deadline` passes, or a signal handler runs
/// (as for `Breaks::Syscall`). `Ready` may be spurious: the caller retries its
/// call, which consumes the signal.
pub(crate) fn wait_signal(set: u64, deadline: Option<Instant>) -> Wake {
    let sched = current_scheduler().expect("wait_signal is only called in a coroutine");
    let mut entry = None;
    let wake = park_as(deadline, Breaks::Syscall, |who| {
        let seq = who.seq;
        entry = Some((sched.signals.insert_waiting(who, set), seq));
        true
    });
    if let Some((entry, seq)) = entry {
        sched.signals.remove(entry, seq);
    }
    wake
}

/// A handle on the current thread's scheduler for a plain (non-coroutine) waiter.
pub(crate) fn root_unparker() -> io::Result<Unparker> {
    with_scheduler(|s| Unparker {
        home: s.remote.clone(),
        task: None,
        seq: 0,
    })
}
