//! The blocking monitor (`PATCHALL_MONITOR`): a native thread that notices a
//! coroutine holding its OS thread without a switch for longer than the
//! threshold — a CPU loop, or a call that blocks the thread without parking
//! (an unhooked `flock`, a raw futex wait) — and reports it on stderr with the
//! thread's stack at that moment, as gevent's monitor thread does.
//!
//! Off by default, and started only with the first scheduler: a second thread
//! makes every glibc system call wrapper slower (glibc's single-thread
//! shortcuts end; measured 1.23x), so a process pays that only when it asks.
//!
//! Each scheduler keeps a [`Hold`] record that its switches write: a counter
//! bumped as each run starts and ends, the running coroutine's id, and when
//! the run began by the coarse clock; without a monitor, only the counter
//! (which also counts switches for the statistics). The stamp, not the monitor's first sight
//! of a run, times a hold: on a loaded machine the kernel may run the monitor
//! thread late, and a hold seen late must not look shorter than it is. Time
//! slices share the record: the counter names a run for `Slice`, and a
//! monitor that reports a hold asks, through `poke`, for a yield at the run's
//! next hooked call. Without a monitor, the dump or the statistics a switch
//! pays the counter and the one test of `observe::on`; with only the dump or
//! the statistics, that and a test of `watched`.
//!
//! The stack of another thread can only be taken on that thread: the monitor
//! sends it a signal (`tgkill`) whose handler unwinds its own stack with
//! libgcc's `_Unwind_Backtrace` into a static buffer (no allocation, no lock
//! of ours; DWARF unwinding, since frame pointers are not kept in optimised C)
//! and copies the coroutine's id, name and start routine. The monitor thread
//! then names the frames (`symbolize`). The signal is the highest real-time
//! signal whose disposition is the default when the monitor starts: glibc
//! keeps the lowest real-time signals for itself, programs that use others
//! count up from `SIGRTMIN`, and one left at its default (terminate) is one
//! the program has no handler for; a capture checks first that the handler is
//! still ours. It is installed with `SA_RESTART` and never wrapped by our
//! `sigaction` hook, so parked coroutines never see it; a call that blocks the
//! thread is interrupted once, and the kernel restarts it, except for the
//! calls it never restarts after a handler (`poll`, `select`, `epoll_wait`,
//! `nanosleep`…: EINTR, as for any signal with a handler; signal(7)).

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use super::Guard;
use super::scheduler::{Remote, current_scheduler, current_task, remotes};
use super::symbolize::describe;
use super::task::Entry;
use crate::config::config;
use crate::sys::sigaction::{KernelSigaction, rt_sigaction};
use crate::sys::{Original, diag, errno, set_errno};

/// One scheduler's switches, as the monitor sees them. Written only by the
/// scheduler's thread; read by the monitor and the capture handler.
pub(crate) struct Hold {
    /// Bumped as each coroutine run starts and, when watched, as it ends: a
    /// value names one run (or one stretch on the scheduler's own stack).
    /// Written last: a reader that sees it sees the fields written before.
    switches: AtomicU64,
    /// The id of the coroutine running, 0 on the scheduler's own stack.
    running: AtomicU64,
    /// When the run began (`coarse_now`), when watched.
    since: AtomicU64,
    /// The scheduler's OS thread (`gettid`), for the capture signal.
    pub(crate) tid: i32,
    /// `PATCHALL_MONITOR` is on: the switches stamp starts and mark ends.
    watched: bool,
    /// The run (`switches`) the monitor reported: time slices yield at its
    /// next hooked call that completes. 0: none.
    poke: AtomicU64,
}

impl Hold {
    /// The record of the calling thread's new scheduler.
    pub(crate) fn new() -> Hold {
        Hold {
            switches: AtomicU64::new(0),
            running: AtomicU64::new(0),
            since: AtomicU64::new(0),
            // SAFETY: gettid has no preconditions.
            tid: unsafe { crate::sys::raw_syscall!(libc::SYS_gettid) } as i32,
            watched: watched(),
            poke: AtomicU64::new(0),
        }
    }

    /// A coroutine starts running, while nothing watches (`observe::on`):
    /// the counter names runs for time slices and counts them.
    #[inline(always)]
    pub(crate) fn bump(&self) {
        // One writer: a plain load and store, no locked instruction.
        let n = self.switches.load(Ordering::Relaxed).wrapping_add(1);
        self.switches.store(n, Ordering::Release);
    }

    /// How many coroutine runs started (each one bumps the counter, and its
    /// end a second time while the monitor watches).
    pub(crate) fn runs(&self) -> u64 {
        let n = self.switches.load(Ordering::Relaxed);
        if self.watched { n / 2 } else { n }
    }

    /// Coroutine `id` starts running, while something watches (`bump`
    /// otherwise).
    #[inline(always)]
    pub(crate) fn run_started(&self, id: u64) {
        if self.watched {
            // The start, not the monitor's first sight of the run: a monitor
            // thread that the kernel runs late still times the hold right.
            self.since.store(coarse_now(), Ordering::Relaxed);
        }
        self.running.store(id, Ordering::Relaxed);
        self.bump();
    }

    /// The run `run_started` began has ended. A coroutine whose exit handlers drive the
    /// scheduler (contract 13) runs others nested: after the first of those
    /// ends, its own hold is no longer watched.
    #[inline(always)]
    pub(crate) fn run_ended(&self) {
        if self.watched {
            self.running.store(0, Ordering::Relaxed);
            self.bump();
        }
    }

    /// Names the current run, for time slices.
    #[inline(always)]
    pub(crate) fn run(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// True if the monitor reported the run going on.
    pub(crate) fn poked(&self) -> bool {
        self.poke.load(Ordering::Relaxed) == self.run()
    }

    /// (run, coroutine id, start) of the run going on, if a coroutine runs;
    /// read as a whole (a switch meanwhile gives None).
    fn read(&self) -> Option<(u64, u64, u64)> {
        let run = self.switches.load(Ordering::Acquire);
        let (id, since) = (
            self.running.load(Ordering::Relaxed),
            self.since.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        (id != 0 && self.switches.load(Ordering::Relaxed) == run).then_some((run, id, since))
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the vDSO reads it without a
/// system call, a few times cheaper than the fine clock; its tick (1 to 10 ms)
/// is finer than any hold worth reporting.
fn coarse_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a timespec of ours to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether this process's schedulers keep the monitor's stamps: they do
/// from the start if it is asked for, so that every run is stamped.
fn watched() -> bool {
    let on = config().monitor.is_some();
    if on {
        super::observe::start_watching();
    }
    on
}

/// The pid that started a monitor: a forked child starts its own.
static STARTED_IN: AtomicI32 = AtomicI32::new(0);
/// The capture signal, 0 until chosen.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The capture signal's bit in the kernel's set, 0 when there is none: green
/// threads' masks never block it on a scheduler's thread.
pub(crate) fn signal_bit() -> u64 {
    super::signals::bit(SIGNAL.load(Ordering::Relaxed))
}

/// Starts the monitor if `PATCHALL_MONITOR` asks for one and this process has
/// none yet. Called as a scheduler is made.
pub(crate) fn start_if_wanted() {
    let Some(threshold) = config().monitor else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if STARTED_IN.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    // A child of fork may have copied a capture in progress.
    CAPTURE.state.store(IDLE, Ordering::Release);
    if SIGNAL.load(Ordering::Relaxed) == 0 {
        match install_handler() {
            Some(sig) => SIGNAL.store(sig, Ordering::Relaxed),
            None => diag(&[
                b"patchall: PATCHALL_MONITOR: every real-time signal is taken; reports will have no stack\n",
            ]),
        }
        // libgcc finds and caches its unwind tables on the first unwind:
        // done here, the handler's first unwind does less.
        let mut frames = Frames::new();
        unwind(&mut frames);
    }
    let arg = threshold.as_nanos() as u64 as usize as *mut c_void;
    if !super::offload::start_native(monitor_main, arg) {
        diag(&[b"patchall: PATCHALL_MONITOR: cannot start the monitor thread\n"]);
    }
}

extern "C" fn monitor_main(arg: *mut c_void) -> *mut c_void {
    super::offload::keep_signals_away();
    // Every call this thread makes (sleeps, reading ELF files and /proc) is
    // the runtime's own: straight to libc, never through a hook's logic.
    let _guard = Guard::enter();
    let threshold = Duration::from_nanos(arg as usize as u64);
    Monitor::new(threshold).run()
}

struct Monitor {
    threshold: Duration,
    /// (scheduler serial, run) of the holds already reported.
    reported: Vec<(usize, u64)>,
    /// Reports that may still be made now (a token bucket).
    budget: f64,
    refilled: Instant,
    suppressed: u64,
}

/// Reports in a burst before the rate limit applies, and per second after.
const BURST: f64 = 5.0;
const PER_SECOND: f64 = 1.0;

impl Monitor {
    fn new(threshold: Duration) -> Monitor {
        Monitor {
            threshold,
            reported: Vec::new(),
            budget: BURST,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    fn run(&mut self) -> ! {
        // A quarter of the threshold: a hold is reported at most a few ticks
        // late, and an idle process wakes the monitor a few times a second.
        let tick = (self.threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
        loop {
            std::thread::sleep(tick);
            self.look();
        }
    }

    fn look(&mut self) {
        let live = remotes();
        let now = coarse_now();
        let threshold = self.threshold.as_nanos() as u64;
        // One report per hold: forget those whose run has ended.
        self.reported.retain(|&(serial, run)| {
            live.iter()
                .any(|r| r.serial() == serial && r.hold.read().is_some_and(|h| h.0 == run))
        });
        for remote in &live {
            let hold = &remote.hold;
            let Some((run, id, since)) = hold.read() else {
                continue;
            };
            let held = now.saturating_sub(since);
            if held < threshold || self.reported.contains(&(remote.serial(), run)) {
                continue;
            }
            self.reported.push((remote.serial(), run));
            if config().timeslice.is_some() {
                hold.poke.store(run, Ordering::Relaxed);
            }
            if self.allowed(Instant::now()) {
                let held = Duration::from_nanos(held);
                report(remote, run, id, held, std::mem::take(&mut self.suppressed));
            } else {
                self.suppressed += 1;
            }
        }
    }

    fn allowed(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.budget = (self.budget + elapsed * PER_SECOND).min(BURST);
        if self.budget >= 1.0 {
            self.budget -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Writes one report in one write: the first line, the stack, then how many
/// holds the rate limit left out since the last report, if any.
fn report(remote: &Arc<Remote>, switches: u64, running: u64, held: Duration, suppressed: u64) {
    let captured = capture(remote, switches);
    let (id, label) = match &captured {
        Ok(c) => (c.task, label(c)),
        Err(_) => (running, String::from("?")),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "patchall: coroutine {id} \"{label}\" held its thread for {} ms",
        held.as_millis()
    );
    match captured {
        Ok(c) => {
            for (i, line) in coroutine_frames(&c.frames).iter().enumerate() {
                let _ = writeln!(out, "  #{i:<2} {line}");
            }
        }
        Err(why) => {
            let _ = writeln!(out, "  (no stack: {why})");
        }
    }
    if suppressed > 0 {
        let _ = writeln!(
            out,
            "patchall: {suppressed} more long holds were not reported (rate limit)"
        );
    }
    diag(&[out.as_bytes()]);
    super::observe::count_monitor_report();
}

/// The coroutine's name, else its start routine's.
fn label(c: &Captured) -> String {
    if !c.name.is_empty() {
        return c.name.clone();
    }
    match c.entry {
        Entry::Code(addr) => super::symbolize::routine_name(addr),
        Entry::Type(name) => name.to_owned(),
        Entry::None => String::from("?"),
    }
}

/// The frames of the coroutine's own code, as `0x… function+0x… (object)`:
/// the unwinder goes on through the coroutine's start into the scheduler
/// that resumed it, which the report leaves out, with the runtime's frames
/// that called the coroutine's entry.
fn coroutine_frames(frames: &[(usize, bool)]) -> Vec<String> {
    let named: Vec<_> = frames
        .iter()
        .map(|&(addr, exact)| {
            // A return address is looked up one byte back: the call may be
            // its function's last instruction.
            let look = if exact { addr } else { addr.wrapping_sub(1) };
            (addr, addr - look, describe(look))
        })
        .collect();
    let name = |i: usize| named[i].2.as_ref().map_or("", |s| s.name.as_str());
    let mut end = (0..named.len())
        .find(|&i| name(i).starts_with("corosensei::"))
        .unwrap_or(named.len());
    while end > 1 && RUNTIME_FRAMES.iter().any(|p| name(end - 1).starts_with(p)) {
        end -= 1;
    }
    // A system call trapped by syscall dispatch waits in our SIGSYS handler,
    // which returns through the gate's restorer: the program's frames start
    // below the last frame in the gate.
    let (gate, len) = crate::sys::gate::range();
    let begin = named[..end]
        .iter()
        .rposition(|&(addr, _, _)| (gate..gate + len).contains(&addr))
        .map_or(0, |i| i + 1);
    named[begin..end]
        .iter()
        .map(|(addr, back, sym)| match sym {
            Some(s) if !s.name.is_empty() => {
                format!(
                    "{addr:#014x} {}+{:#x} ({})",
                    s.name,
                    s.offset + back,
                    s.object
                )
            }
            Some(s) => format!("{addr:#014x} {}+{:#x}", s.object, s.offset + back),
            None => format!("{addr:#014x}"),
        })
        .collect()
}

/// Frames between a coroutine's start and its own code: ours, and the
/// standard library's closure calls and `catch_unwind`.
const RUNTIME_FRAMES: [&str; 8] = [
    "patchall::",
    "core::ops::function::",
    "<core::",
    "std::panic",
    "<std::panic",
    "__rust_try",
    "<alloc::boxed::Box<F,A> as core::ops::function::",
    "std::panicking::",
];

/// What the handler found.
struct Captured {
    task: u64,
    name: String,
    entry: Entry,
    /// (address, exact): exact for the interrupted instruction, false for
    /// return addresses.
    frames: Vec<(usize, bool)>,
}

/// How long the monitor waits for a thread to answer the capture signal.
const ANSWER_LIMIT: Duration = Duration::from_millis(500);

/// Takes the stack of `remote`'s thread, if its run `switches` still holds it.
fn capture(remote: &Remote, switches: u64) -> Result<Captured, String> {
    let sig = SIGNAL.load(Ordering::Relaxed);
    if sig == 0 {
        return Err("no real-time signal was free to take it".into());
    }
    if !handler_is_ours(sig) {
        return Err(format!("the program has taken over signal {sig}"));
    }
    if blocks(remote.hold.tid, sig) {
        return Err(format!("the thread blocks signal {sig}"));
    }
    let c = &CAPTURE;
    c.serial.store(remote.serial(), Ordering::Relaxed);
    c.switches.store(switches, Ordering::Relaxed);
    c.state.store(ASKED, Ordering::Release);
    // SAFETY: tgkill takes only numbers; the thread is ours and has the handler.
    let sent =
        unsafe { crate::sys::raw_syscall!(libc::SYS_tgkill, libc::getpid(), remote.hold.tid, sig) };
    if sent != 0 {
        c.state.store(IDLE, Ordering::Release);
        return Err("the thread has ended".into());
    }
    let asked = Instant::now();
    loop {
        match c.state.load(Ordering::Acquire) {
            DONE => break,
            ASKED if asked.elapsed() > ANSWER_LIMIT => {
                if c.state
                    .compare_exchange(ASKED, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(format!("the thread did not answer signal {sig}"));
                }
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    // SAFETY: DONE: the handler has finished writing, and writes again only
    // after the state goes back to ASKED, which only this thread does.
    let found = unsafe { &*c.found.get() };
    let out = if found.stale {
        Err("the coroutine switched before the signal arrived".into())
    } else {
        let frames = &found.frames.ips[..found.frames.count];
        // Drop the frames of the handler itself: the interrupted instruction
        // comes first.
        let first = frames
            .iter()
            .position(|&(ip, _)| ip == found.pc)
            .unwrap_or(0);
        let mut kept: Vec<_> = frames[first..].to_vec();
        if kept.is_empty() && found.pc != 0 {
            kept.push((found.pc, true));
        }
        Ok(Captured {
            task: found.task,
            name: String::from_utf8_lossy(&found.name[..found.name_len]).into_owned(),
            entry: found.entry,
            frames: kept,
        })
    };
    c.state.store(IDLE, Ordering::Release);
    out
}

/// True if `tid`'s signal mask blocks `sig` (/proc's `SigBlk`).
fn blocks(tid: i32, sig: i32) -> bool {
    let path = format!("/proc/self/task/{tid}/status");
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & super::signals::bit(sig) != 0)
}

const IDLE: u32 = 0;
const ASKED: u32 = 1;
const WRITING: u32 = 2;
const DONE: u32 = 3;

const MAX_FRAMES: usize = 64;
const NAME_LEN: usize = 64;

struct Frames {
    ips: [(usize, bool); MAX_FRAMES],
    count: usize,
}

impl Frames {
    const fn new() -> Frames {
        Frames {
            ips: [(0, false); MAX_FRAMES],
            count: 0,
        }
    }
}

/// What the handler writes.
struct Found {
    /// The thread was no longer in the run asked about.
    stale: bool,
    task: u64,
    name: [u8; NAME_LEN],
    name_len: usize,
    entry: Entry,
    /// The interrupted instruction.
    pc: usize,
    frames: Frames,
}

/// The one capture in flight: the monitor asks for one at a time.
struct Capture {
    state: AtomicU32,
    serial: AtomicUsize,
    switches: AtomicU64,
    found: UnsafeCell<Found>,
}

// SAFETY: `found` is written only by a handler that moved `state` from ASKED
// to WRITING, and read only by the monitor after it saw DONE (see `capture`).
unsafe impl Sync for Capture {}

static CAPTURE: Capture = Capture {
    state: AtomicU32::new(IDLE),
    serial: AtomicUsize::new(0),
    switches: AtomicU64::new(0),
    found: UnsafeCell::new(Found {
        stale: false,
        task: 0,
        name: [0; NAME_LEN],
        name_len: 0,
        entry: Entry::None,
        pc: 0,
        frames: Frames::new(),
    }),
};

fn kernel_action(sig: i32) -> Option<KernelSigaction> {
    rt_sigaction(sig, None).ok()
}

fn handler_is_ours(sig: i32) -> bool {
    kernel_action(sig).is_some_and(|a| a.handler == on_signal as *const () as usize)
}

/// glibc's `sigaction`, never our hook (which would wrap the handler so that
/// the scheduler counts it as a signal that interrupts parks).
static SIGACTION: Original = Original::new(c"sigaction");

/// Installs the capture handler on the highest real-time signal left at its
/// default; the signal, or None.
fn install_handler() -> Option<i32> {
    let addr = SIGACTION.addr()?;
    type SigactionFn =
        unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;
    // SAFETY: dlsym found libc's sigaction, whose signature this is.
    let sigaction = unsafe { std::mem::transmute::<usize, SigactionFn>(addr) };
    let (low, high) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    (low..=high).rev().find(|&sig| {
        if kernel_action(sig).is_none_or(|a| a.handler != libc::SIG_DFL) {
            return false;
        }
        // SAFETY: a zeroed sigaction is valid; the handler has the SA_SIGINFO
        // signature; the mask set is ours.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigfillset(&mut act.sa_mask);
            // A system call trapped while SIGSYS is blocked kills the process
            // (Syscall User Dispatch): the handler's return through glibc's
            // restorer is one, in a coroutine whose selector blocks.
            libc::sigdelset(&mut act.sa_mask, libc::SIGSYS);
            sigaction(sig, &act, std::ptr::null_mut()) == 0
        }
    })
}

/// The capture handler: async-signal-safe (atomics, copies and libgcc's
/// unwinder, which neither allocates nor takes a lock of ours).
extern "C" fn on_signal(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved = errno();
    // The unwinder may make system calls: none may trap here.
    let selector = super::dispatch::allow();
    let c = &CAPTURE;
    // A late answer to an abandoned capture, reaching this thread while
    // another thread is asked, leaves the capture alone.
    let asked_here = c.state.load(Ordering::Acquire) == ASKED
        && current_scheduler()
            .is_some_and(|s| s.remote.serial() == c.serial.load(Ordering::Relaxed));
    if asked_here
        && c.state
            .compare_exchange(ASKED, WRITING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        // SAFETY: WRITING is ours alone (see `Capture`).
        let found = unsafe { &mut *c.found.get() };
        fill(found, c, ctx);
        c.state.store(DONE, Ordering::Release);
    }
    super::dispatch::restore(selector);
    set_errno(saved);
}

fn fill(found: &mut Found, c: &Capture, ctx: *mut c_void) {
    let sched = current_scheduler();
    let task = current_task();
    let current = sched.is_some_and(|s| {
        s.remote.hold.switches.load(Ordering::Relaxed) == c.switches.load(Ordering::Relaxed)
    });
    found.stale = !current || task.is_none();
    found.frames.count = 0;
    let Some(task) = task.filter(|_| current) else {
        return;
    };
    found.task = task.id;
    let name = task.name.as_deref().unwrap_or("").as_bytes();
    let n = name.len().min(NAME_LEN);
    found.name[..n].copy_from_slice(&name[..n]);
    found.name_len = n;
    found.entry = task.entry.get();
    // SAFETY: the kernel passes the interrupted context to an SA_SIGINFO handler.
    found.pc =
        unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] }
            as usize;
    unwind(&mut found.frames);
}

#[allow(non_camel_case_types)]
type _Unwind_Context = c_void;

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut _Unwind_Context, *mut c_void) -> libc::c_int,
        arg: *mut c_void,
    ) -> libc::c_int;
    fn _Unwind_GetIPInfo(ctx: *mut _Unwind_Context, before: *mut libc::c_int) -> usize;
}

/// `_URC_NO_REASON` and `_URC_END_OF_STACK`.
const URC_NO_REASON: libc::c_int = 0;
const URC_END_OF_STACK: libc::c_int = 5;

/// The calling thread's return addresses into `frames`.
fn unwind(frames: &mut Frames) {
    extern "C" fn step(ctx: *mut _Unwind_Context, arg: *mut c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Frames` given to _Unwind_Backtrace below.
        let frames = unsafe { &mut *arg.cast::<Frames>() };
        let mut before = 0;
        // SAFETY: a context the unwinder passed us, used during the call.
        let ip = unsafe { _Unwind_GetIPInfo(ctx, &mut before) };
        if ip == 0 || frames.count == MAX_FRAMES {
            return URC_END_OF_STACK;
        }
        frames.ips[frames.count] = (ip, before != 0);
        frames.count += 1;
        URC_NO_REASON
    }
    frames.count = 0;
    // SAFETY: `step` matches the callback type and uses `frames` only during
    // the call.
    unsafe { _Unwind_Backtrace(step, (frames as *mut Frames).cast()) };
}
