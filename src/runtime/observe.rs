//! What the runtime records so that a person can see what the coroutines are
//! doing: a label per park (given by the layer that parks, so the runtime still
//! never knows which libc call it stands for), per-worker counters, and a
//! snapshot of every live coroutine of a scheduler.
//!
//! Costs when nothing asks for more: a park stores its label, what it waits on
//! and its deadline (values at hand, for `run_info` at any time) and tests one
//! flag (`on`); a coroutine run tests the same flag, and bumps the switch
//! counter its scheduler keeps anyway (`monitor::Hold`, which names runs for
//! time slices). Everything else waits behind that flag: the counters of
//! creations and parks, the monitor's stamps, and the clocks (how long each
//! run held its thread, when each park began), read only while timing is on.
//!
//! Counters are written only by their scheduler's thread, with a relaxed load
//! and store (a plain add on x86-64, no locked instruction); any thread may
//! read them, and totals are summed when read.

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::monitor::Hold;
use super::reactor::Direction;
use super::task::{State, Task};

/// A kind of wait, for counting parks; the layer that parks picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Family {
    Io,
    Net,
    Poll,
    Sleep,
    Lock,
    Join,
    Signal,
    Process,
    Offload,
    Futex,
    Channel,
    Other,
}

/// How many families there are.
pub(crate) const FAMILIES: usize = 12;

impl Family {
    pub(crate) const ALL: [Family; FAMILIES] = [
        Family::Io,
        Family::Net,
        Family::Poll,
        Family::Sleep,
        Family::Lock,
        Family::Join,
        Family::Signal,
        Family::Process,
        Family::Offload,
        Family::Futex,
        Family::Channel,
        Family::Other,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Io => "io",
            Family::Net => "net",
            Family::Poll => "poll",
            Family::Sleep => "sleep",
            Family::Lock => "lock",
            Family::Join => "join",
            Family::Signal => "signal",
            Family::Process => "process",
            Family::Offload => "offload",
            Family::Futex => "futex",
            Family::Channel => "channel",
            Family::Other => "other",
        }
    }
}

/// What a park stands for, as the layer above names it: a call (`"read"`,
/// `"accept"`, `"mutex"`, `"join"`…) and its family. Parks take a
/// `&'static Label` (a constant: `&const { Label::new(..) }`), one word to
/// store per park.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Label {
    pub(crate) call: &'static str,
    pub(crate) family: Family,
}

impl Label {
    pub(crate) const fn new(call: &'static str, family: Family) -> Label {
        Label { call, family }
    }
}

/// A park nobody labelled.
pub(crate) static UNNAMED: Label = Label::new("wait", Family::Other);

/// What the runtime itself knows a park waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitsOn {
    /// Nothing more than its wake-up (and deadline, if any).
    Nothing,
    /// An fd becoming ready; `more` other fds too (a `poll` on several).
    Fd {
        /// The (first) fd.
        fd: RawFd,
        /// Which readiness.
        dir: Direction,
        /// How many other fds the same wait watches.
        more: u32,
    },
    /// An address in memory (a lock, a condition variable, a thread's record).
    Address(usize),
}

/// One park as recorded at its start, and since when it waits (if timed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    pub(crate) label: &'static Label,
    pub(crate) on: WaitsOn,
    pub(crate) deadline: Option<Instant>,
    pub(crate) since: Option<Instant>,
}

/// True once anything watches the coroutines: the blocking monitor, the dump
/// or the statistics (by their variables, or a first `run_info`/`stats`).
/// The one test each coroutine run and each park pays while nothing does;
/// alone on its line, which only the rare turn-on writes.
#[repr(align(64))]
struct Flag(AtomicBool);

static ON: Flag = Flag(AtomicBool::new(false));

/// True while clocks are read for the records: how long runs hold their
/// thread and since when parks wait. Read only where `on` holds.
static TIMING: AtomicBool = AtomicBool::new(false);

#[inline(always)]
pub(crate) fn on() -> bool {
    ON.0.load(Relaxed)
}

#[inline(always)]
pub(crate) fn timing() -> bool {
    TIMING.load(Relaxed)
}

/// From now on, runs and parks are counted (for good): the monitor watches.
pub(crate) fn start_watching() {
    if !on() {
        ON.0.store(true, Relaxed);
    }
}

/// From now on, runs and parks are counted and timed (for good).
pub(crate) fn start_timing() {
    if !timing() {
        TIMING.store(true, Relaxed);
    }
    start_watching();
}

/// One scheduler's counters. Only its own thread writes them.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Counters {
    created: AtomicU64,
    peak_live: AtomicU64,
    parks: [AtomicU64; FAMILIES],
    slice_yields: AtomicU64,
    longest_hold_ns: AtomicU64,
}

/// Adds one to a counter only this thread writes.
#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

impl Counters {
    #[inline(always)]
    pub(crate) fn parked(&self, family: Family) {
        bump(&self.parks[family as usize]);
    }

    #[inline]
    pub(crate) fn started(&self, live: usize) {
        bump(&self.created);
        let live = live as u64;
        if live > self.peak_live.load(Relaxed) {
            self.peak_live.store(live, Relaxed);
        }
    }

    pub(crate) fn slice_yielded(&self) {
        bump(&self.slice_yields);
    }

    pub(crate) fn held(&self, run: Duration) {
        let ns = u64::try_from(run.as_nanos()).unwrap_or(u64::MAX);
        if ns > self.longest_hold_ns.load(Relaxed) {
            self.longest_hold_ns.store(ns, Relaxed);
        }
    }

    /// Adds these counters, and the runs `hold` counted, into `t`.
    pub(crate) fn add_to(&self, hold: &Hold, t: &mut Totals) {
        t.created += self.created.load(Relaxed);
        t.peak_live += self.peak_live.load(Relaxed);
        t.switches += hold.runs();
        for (sum, c) in t.parks.iter_mut().zip(&self.parks) {
            *sum += c.load(Relaxed);
        }
        t.slice_yields += self.slice_yields.load(Relaxed);
        t.longest_hold_ns = t.longest_hold_ns.max(self.longest_hold_ns.load(Relaxed));
    }
}

/// Counters summed over schedulers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) created: u64,
    /// The sum of each scheduler's own peak.
    pub(crate) peak_live: u64,
    pub(crate) switches: u64,
    pub(crate) parks: [u64; FAMILIES],
    pub(crate) slice_yields: u64,
    pub(crate) longest_hold_ns: u64,
}

/// What schedulers that ended had counted.
static RETIRED: Mutex<Option<Totals>> = Mutex::new(None);

/// Keeps an ending scheduler's counts in the process's totals.
pub(crate) fn retire(c: &Counters, hold: &Hold) {
    let mut r = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    c.add_to(hold, r.get_or_insert_with(Totals::default));
}

/// The counts of every scheduler, live or ended.
pub(crate) fn totals() -> Totals {
    let mut t = RETIRED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default();
    for remote in super::scheduler::remotes() {
        remote.counters.add_to(&remote.hold, &mut t);
    }
    t
}

static MONITOR_REPORTS: AtomicU64 = AtomicU64::new(0);

/// Counts one report of the blocking monitor (rare: a shared counter is fine).
pub(crate) fn count_monitor_report() {
    MONITOR_REPORTS.fetch_add(1, Relaxed);
}

pub(crate) fn monitor_reports() -> u64 {
    MONITOR_REPORTS.load(Relaxed)
}

/// A coroutine's state as a snapshot shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoroutineState {
    /// On its thread now (the coroutine that asked for the snapshot).
    Running,
    /// Queued to run.
    Runnable,
    /// Waiting for something (see [`WaitInfo`]).
    Parked,
}

/// What a parked coroutine waits for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WaitInfo {
    /// The call it stands in for (`read`, `recv`, `accept`, `sleep`, `mutex`,
    /// `join`, `channel`…), or `wait` when nobody named it.
    pub call: &'static str,
    /// The family its parks are counted under in [`Stats`](crate::Stats).
    pub family: &'static str,
    /// The fd, direction or address it waits on, as far as the runtime knows.
    pub on: WaitsOn,
    /// How long until its deadline (zero if past), if it has one.
    pub deadline_in: Option<Duration>,
    /// How long it has waited, if waits were timed when it parked.
    pub waited: Option<Duration>,
}

/// One live coroutine in a snapshot.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CoroutineInfo {
    /// Its id ([`Coroutine::id`](crate::Coroutine::id)).
    pub id: u64,
    /// Its name (`Builder::name`, `pa_options.name`; `main` for green `main`).
    pub name: Option<String>,
    /// The address of the function it started in: a green thread's start
    /// routine, `pa_spawn`'s function. None for Rust closures.
    pub start_routine: Option<usize>,
    /// Running, runnable or parked.
    pub state: CoroutineState,
    /// What it waits for, when parked.
    pub waiting: Option<WaitInfo>,
}

/// A snapshot of one scheduler (a worker thread, or a plain thread that
/// spawned coroutines).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The scheduler's id, never reused in the process.
    pub id: usize,
    /// The OS thread it runs on (its tid).
    pub thread: i32,
    /// False if its thread did not answer in time (busy in a coroutine that
    /// holds it, or blocked outside the scheduler): `coroutines` is empty.
    pub answered: bool,
    /// Its live coroutines, by id.
    pub coroutines: Vec<CoroutineInfo>,
}

/// The snapshot of one task, on its scheduler's thread.
pub(crate) fn task_info(task: &Task, now: Instant) -> CoroutineInfo {
    let state = match task.state.get() {
        State::Running => CoroutineState::Running,
        State::Runnable | State::Done => CoroutineState::Runnable,
        State::Parked => CoroutineState::Parked,
    };
    let waiting = (state == CoroutineState::Parked).then(|| {
        // SAFETY: a parked task's park wrote its record before it parked.
        let w = unsafe { task.wait.get().assume_init() };
        WaitInfo {
            call: w.label.call,
            family: w.label.family.name(),
            on: w.on,
            deadline_in: w.deadline.map(|d| d.saturating_duration_since(now)),
            waited: w.since.map(|s| now.saturating_duration_since(s)),
        }
    });
    let entry = match task.entry.get() {
        super::task::Entry::Code(addr) => Some(addr),
        super::task::Entry::None | super::task::Entry::Type(_) => None,
    };
    CoroutineInfo {
        id: task.id,
        name: task.name.as_deref().map(String::from),
        start_routine: entry,
        state,
        waiting,
    }
}
