//! The dump of every coroutine and the run's statistics: on a signal the user
//! names (`PATCHALL_DUMP_SIGNAL`), at exit (`PATCHALL_DUMP=exit`,
//! `PATCHALL_STATS=1`), and on request ([`run_info`], [`stats`],
//! `pa_print_run_info`).
//!
//! A snapshot of a scheduler is taken on its own thread (its tasks are only
//! touched there): the caller's own scheduler directly, every other one by
//! mail, which it reads between coroutine runs. A scheduler whose thread does
//! not answer within [`ANSWER_WITHIN`] is listed as busy: one of its
//! coroutines holds the thread (what the blocking monitor reports), or its
//! thread is blocked outside the scheduler.
//!
//! The signal handler only writes to an eventfd (a system call, which is
//! async-signal-safe); a thread started for this, and only when the variable
//! is set, reads it and builds the dump, which allocates, takes locks and
//! waits for the other threads' answers, none of which a handler may do.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::observe::{self, CoroutineInfo, CoroutineState, Family, Label, WaitsOn, WorkerInfo};
use super::ownfd::OwnFd;
use super::reactor::Direction;
use super::scheduler::{Mail, current_scheduler, in_coroutine, label, remotes, sleep_until};
use crate::config::config;
use crate::sys::{diag, errno, set_errno};

/// How long a dump waits for each other scheduler's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Every scheduler and every live coroutine, as [`run_info`] found them.
/// Displays as the dump `PATCHALL_DUMP_SIGNAL` prints.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunInfo {
    /// The process's id.
    pub pid: u32,
    /// One entry per scheduler (worker threads, and plain threads that
    /// spawned coroutines), by id.
    pub workers: Vec<WorkerInfo>,
}

impl RunInfo {
    /// Every coroutine of every worker that answered.
    pub fn coroutines(&self) -> impl Iterator<Item = &CoroutineInfo> {
        self.workers.iter().flat_map(|w| &w.coroutines)
    }
}

/// Lists every scheduler and every live coroutine in the process: id, name or
/// start routine, state, and for a parked one what it waits for (the call,
/// the fd and direction, the address or the deadline) and for how long.
///
/// Safe to call anywhere: in a coroutine it parks while the other threads
/// answer. How long each coroutine has waited is known for parks that began
/// while waits were timed: from the start when `PATCHALL_DUMP_SIGNAL`,
/// `PATCHALL_DUMP` or `PATCHALL_STATS` is set, else from the first call of
/// `run_info` or [`stats`] on.
///
/// ```
/// let h = patchall::Builder::new()
///     .name("napper")
///     .spawn(|| patchall::sleep(std::time::Duration::from_millis(50)))
///     .unwrap();
/// patchall::yield_now();
/// let info = patchall::run_info();
/// assert!(info.to_string().contains("\"napper\": parked in sleep"));
/// h.join().unwrap();
/// ```
pub fn run_info() -> RunInfo {
    observe::start_timing();
    gather(in_coroutine())
}

/// Takes every scheduler's snapshot; parks while waiting for answers if
/// `park`, else sleeps the thread (at exit, where nothing may park).
fn gather(park: bool) -> RunInfo {
    let remotes = remotes();
    let replies = Arc::new(Replies {
        slots: Mutex::new(vec![None; remotes.len()]),
        answered: AtomicUsize::new(0),
    });
    let local = current_scheduler();
    for (i, remote) in remotes.iter().enumerate() {
        match local {
            Some(s) if s.id() == remote.serial() => replies.answer(i, s.snapshot()),
            _ => {
                let replies = replies.clone();
                remote.post(Mail::Run(Box::new(move || {
                    if let Some(s) = current_scheduler() {
                        replies.answer(i, s.snapshot());
                    }
                })));
            }
        }
    }
    let deadline = Instant::now() + ANSWER_WITHIN;
    while replies.answered.load(Ordering::Acquire) < remotes.len() && Instant::now() < deadline {
        pause(park);
    }
    let mut slots = replies.slots.lock().unwrap_or_else(|e| e.into_inner());
    let mut workers: Vec<_> = remotes
        .iter()
        .zip(slots.iter_mut())
        .map(|(remote, slot)| {
            slot.take().unwrap_or(WorkerInfo {
                id: remote.serial(),
                thread: remote.hold.tid,
                answered: false,
                coroutines: Vec::new(),
            })
        })
        .collect();
    workers.sort_by_key(|w| w.id);
    RunInfo {
        pid: std::process::id(),
        workers,
    }
}

struct Replies {
    slots: Mutex<Vec<Option<WorkerInfo>>>,
    answered: AtomicUsize,
}

impl Replies {
    fn answer(&self, i: usize, info: WorkerInfo) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(info);
        self.answered.fetch_add(1, Ordering::Release);
    }
}

/// Waits a millisecond: parked in a coroutine (its scheduler goes on reading
/// mail, so two coroutines dumping at once on two workers answer each
/// other), else by system call (no hook: nothing runs meanwhile).
fn pause(park: bool) {
    const STEP: Duration = Duration::from_millis(1);
    if park {
        label(&const { Label::new("run_info", Family::Other) });
        sleep_until(Instant::now() + STEP);
        return;
    }
    let ts = crate::sys::to_timespec(STEP);
    // SAFETY: a valid timespec; no remainder wanted.
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_nanosleep,
            &ts,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
}

impl fmt::Display for RunInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.workers.iter().map(|w| w.coroutines.len()).sum();
        writeln!(
            f,
            "patchall: run info of process {}: {}, {}",
            self.pid,
            count(self.workers.len(), "worker"),
            count(n, "coroutine")
        )?;
        for w in &self.workers {
            write!(f, "worker {} (thread {})", w.id, w.thread)?;
            if !w.answered {
                writeln!(
                    f,
                    ": did not answer within {} s (a coroutine holds its thread, or the thread \
                     is blocked outside the scheduler)",
                    ANSWER_WITHIN.as_secs()
                )?;
                continue;
            }
            writeln!(f, ": {}", count(w.coroutines.len(), "coroutine"))?;
            for c in &w.coroutines {
                writeln!(f, "  {c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for CoroutineInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coroutine {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(addr) = self.start_routine {
            write!(f, " {}", super::symbolize::routine_name(addr))?;
        }
        match self.state {
            CoroutineState::Running => return f.write_str(": running"),
            CoroutineState::Runnable => return f.write_str(": runnable"),
            CoroutineState::Parked => f.write_str(": parked")?,
        }
        let Some(w) = &self.waiting else {
            return Ok(());
        };
        write!(f, " in {}", w.call)?;
        let mut details = Vec::new();
        match w.on {
            WaitsOn::Nothing => {}
            WaitsOn::Fd { fd, dir, more } => {
                let dir = match dir {
                    Direction::Read => "read",
                    Direction::Write => "write",
                };
                details.push(format!("fd {fd}, {dir}"));
                if more > 0 {
                    details.push(format!("{more} more fds"));
                }
            }
            WaitsOn::Address(addr) => details.push(format!("{addr:#x}")),
        }
        if let Some(d) = w.deadline_in {
            details.push(format!("deadline in {}", seconds(d)));
        }
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        if let Some(d) = w.waited {
            write!(f, " for {}", seconds(d))?;
        }
        Ok(())
    }
}

/// `1 coroutine`, `2 coroutines`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// What the runtime counted since the process started, over every scheduler
/// (live or ended). Displays as `PATCHALL_STATS=1` prints it at exit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The process's id.
    pub pid: u32,
    /// Coroutines spawned (green threads, `spawn`, `pa_spawn`…).
    pub coroutines_created: u64,
    /// The most coroutines alive at once on each scheduler, summed over
    /// schedulers: the process's peak with one scheduler, an upper bound on it
    /// with several.
    pub peak_live: u64,
    /// Coroutine runs started (each a switch to a coroutine and back).
    pub switches: u64,
    /// Parks per family of calls (`io`, `net`, `poll`, `sleep`, `lock`,
    /// `join`, `signal`, `process`, `offload`, `futex`, `channel`, `other`).
    pub parks: Vec<(&'static str, u64)>,
    /// Calls handed to the offload pool (DNS, file calls, waits for children).
    pub offloaded_calls: u64,
    /// Yields made at the end of a time slice (`PATCHALL_TIMESLICE`).
    pub timeslice_yields: u64,
    /// Reports of the blocking monitor (`PATCHALL_MONITOR`).
    pub monitor_reports: u64,
    /// The longest a coroutine held its thread without a switch, if runs
    /// were timed (see [`run_info`]).
    pub longest_hold: Option<Duration>,
}

impl Stats {
    /// Parks counted under `family`.
    pub fn parks_in(&self, family: &str) -> u64 {
        self.parks
            .iter()
            .find(|(f, _)| *f == family)
            .map_or(0, |&(_, n)| n)
    }

    /// Parks of every family.
    pub fn total_parks(&self) -> u64 {
        self.parks.iter().map(|&(_, n)| n).sum()
    }
}

/// The run's statistics so far. Switches are counted from the start;
/// creations, peaks, parks and the longest hold from the first call of
/// `stats` or [`run_info`] on, or from the start with `PATCHALL_STATS=1`
/// (or the monitor or the dump asked for): until something asks, a switch
/// or a park pays one test of a flag for them, not the counting.
///
/// ```
/// let before = patchall::stats();
/// patchall::spawn(|| ()).unwrap().join().unwrap();
/// assert!(patchall::stats().coroutines_created > before.coroutines_created);
/// ```
pub fn stats() -> Stats {
    observe::start_timing();
    let t = observe::totals();
    Stats {
        pid: std::process::id(),
        coroutines_created: t.created,
        peak_live: t.peak_live,
        switches: t.switches,
        parks: Family::ALL
            .iter()
            .map(|&f| (f.name(), t.parks[f as usize]))
            .collect(),
        offloaded_calls: super::offload::offloaded_calls(),
        timeslice_yields: t.slice_yields,
        monitor_reports: observe::monitor_reports(),
        longest_hold: (observe::timing() && t.switches > 0)
            .then(|| Duration::from_nanos(t.longest_hold_ns)),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "patchall: statistics of process {}", self.pid)?;
        writeln!(f, "  coroutines created  {}", self.coroutines_created)?;
        writeln!(f, "  peak live           {}", self.peak_live)?;
        writeln!(f, "  switches            {}", self.switches)?;
        let families: Vec<_> = self
            .parks
            .iter()
            .filter(|&&(_, n)| n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        write!(f, "  parks               {}", self.total_parks())?;
        if families.is_empty() {
            writeln!(f)?;
        } else {
            writeln!(f, " ({})", families.join(", "))?;
        }
        writeln!(f, "  offloaded calls     {}", self.offloaded_calls)?;
        writeln!(f, "  time-slice yields   {}", self.timeslice_yields)?;
        writeln!(f, "  monitor reports     {}", self.monitor_reports)?;
        match self.longest_hold {
            Some(d) => writeln!(
                f,
                "  longest hold        {:.3} ms",
                d.as_secs_f64() * 1000.0
            ),
            None => writeln!(f, "  longest hold        not timed"),
        }
    }
}

/// Called once a scheduler exists: sets up what the variables ask for. A
/// process that never spawns starts nothing and takes no signal.
pub(crate) fn on_first_scheduler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cfg = config();
        if cfg.dump_signal.is_some() || cfg.dump_at_exit || cfg.stats {
            observe::start_timing();
        }
        listen();
        if cfg.dump_at_exit || cfg.stats {
            REPORTER.store(std::process::id(), Ordering::Relaxed);
            // SAFETY: registers a plain function; it never unwinds.
            unsafe { libc::atexit(at_exit) };
        }
    });
}

/// The process that registered the exit report: a child made by `fork`
/// inherits the registration and a copy of the counters, not the run.
static REPORTER: AtomicU32 = AtomicU32::new(0);

/// The eventfd the dump signal's handler writes to.
static DUMP_EVENT: OnceLock<OwnFd> = OnceLock::new();
/// The process whose dump thread reads `DUMP_EVENT`: a child made by `fork`
/// shares the eventfd but has no such thread, and must not make its parent
/// dump.
static LISTENER: AtomicU32 = AtomicU32::new(0);

/// OS threads started here (the dump thread), which never end.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many OS threads of the process are the dump's: a process whose `main`
/// ended with `pthread_exit` ends when its other threads have, not these.
pub(crate) fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Takes `PATCHALL_DUMP_SIGNAL`'s signal, once: from the preload's
/// constructor (so the signal never takes its default action in a process
/// that was told of it), else when the first scheduler is made.
pub(crate) fn listen() {
    static ONCE: Once = Once::new();
    if let Some(sig) = config().dump_signal {
        ONCE.call_once(|| listen_for(sig));
    }
}

fn listen_for(sig: libc::c_int) {
    // SAFETY: eventfd2 takes a count and flags and returns a new fd.
    let fd = unsafe { crate::sys::raw_syscall!(libc::SYS_eventfd2, 0, libc::EFD_CLOEXEC) }
        as libc::c_int;
    if fd < 0 {
        diag(&[b"patchall: PATCHALL_DUMP_SIGNAL: no eventfd; no dumps\n"]);
        return;
    }
    let _ = DUMP_EVENT.set(OwnFd::adopt(fd));
    LISTENER.store(std::process::id(), Ordering::Relaxed);
    let started = std::thread::Builder::new()
        .name("patchall-dump".into())
        .spawn(dump_thread);
    if started.is_err() {
        diag(&[b"patchall: PATCHALL_DUMP_SIGNAL: no thread for dumps; no dumps\n"]);
        return;
    }
    THREADS.store(1, Ordering::Relaxed);
    // libc's own sigaction, not our hook's: the hook would wrap the handler
    // so that the signal interrupts every parked call (their waits would all
    // restart and show as just begun). This one never touches the program.
    type SigactionFn = unsafe extern "C" fn(
        libc::c_int,
        *const libc::sigaction,
        *mut libc::sigaction,
    ) -> libc::c_int;
    // SAFETY: a NUL-terminated name; dlsym has no other preconditions.
    let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) };
    if real.is_null() {
        diag(&[b"patchall: PATCHALL_DUMP_SIGNAL: no sigaction; no dumps\n"]);
        return;
    }
    // SAFETY: dlsym found libc's sigaction, whose C signature this is.
    let real = unsafe { std::mem::transmute::<*mut libc::c_void, SigactionFn>(real) };
    // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_dump_signal as *const () as libc::sighandler_t;
    // SA_RESTART: a blocked thread's call goes on after the handler.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: a valid action for a signal the user named; its handler is
    // async-signal-safe.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        real(sig, &action, std::ptr::null_mut());
    }
}

/// The signal handler: one write to the eventfd, errno kept.
extern "C" fn on_dump_signal(_sig: libc::c_int) {
    let saved = errno();
    // SAFETY: getpid(2) is async-signal-safe (the raw call: glibc caches nothing).
    let pid = unsafe { crate::sys::raw_syscall!(libc::SYS_getpid) } as u32;
    if pid != LISTENER.load(Ordering::Relaxed) {
        set_errno(saved);
        return;
    }
    if let Some(event) = DUMP_EVENT.get() {
        let one: u64 = 1;
        event.with(|fd| {
            // SAFETY: writes 8 bytes from a live u64; write(2) is
            // async-signal-safe.
            unsafe { crate::sys::raw_syscall!(libc::SYS_write, fd, &one, 8) };
        });
    }
    set_errno(saved);
}

fn dump_thread() {
    let Some(event) = DUMP_EVENT.get() else {
        return;
    };
    loop {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 (a raw call: no hook).
        let n = unsafe { crate::sys::raw_syscall!(libc::SYS_read, event.raw(), &mut count, 8) };
        if n != 8 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n < 0 && errno() == libc::EBADF {
                // Moved by a dup2 onto its number: read the new one next time.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            return;
        }
        diag(&[run_info().to_string().as_bytes()]);
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(exit_report);
}

/// What `PATCHALL_DUMP=exit` and `PATCHALL_STATS=1` print, once: from the
/// atexit handler, or earlier as the main thread's scheduler is dropped by
/// `exit` (thread-local destructors run before the atexit handlers).
pub(crate) fn exit_report() {
    static ONCE: Once = Once::new();
    let cfg = config();
    if !(cfg.dump_at_exit || cfg.stats) || REPORTER.load(Ordering::Relaxed) != std::process::id() {
        return;
    }
    ONCE.call_once(|| {
        if cfg.dump_at_exit {
            diag(&[gather(false).to_string().as_bytes()]);
        }
        if cfg.stats {
            diag(&[stats().to_string().as_bytes()]);
        }
    });
}

/// `pa_print_run_info`: writes the dump to `fd`; Err(errno) if a write fails.
pub(crate) fn print_to(fd: libc::c_int) -> Result<(), i32> {
    let text = run_info().to_string();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        // SAFETY: the pointer and length describe the live slice `rest`; a
        // raw call, so a coroutine's write never parks mid-dump.
        let n = unsafe { crate::sys::raw_syscall!(libc::SYS_write, fd, rest.as_ptr(), rest.len()) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, no timeout, no mask.
                    unsafe {
                        crate::sys::raw_syscall!(
                            libc::SYS_ppoll,
                            &mut pfd,
                            1,
                            std::ptr::null::<libc::timespec>(),
                            std::ptr::null::<libc::sigset_t>(),
                            8,
                        )
                    };
                    continue;
                }
                e => return Err(e),
            }
        }
        rest = &rest[n as usize..];
    }
    Ok(())
}
