//! pthread mutexes, condition variables, rwlocks, barriers and unnamed
//! semaphores that park coroutines instead of blocking their OS thread.
//!
//! With green threads several coroutines share one OS thread. glibc records a
//! mutex owner as the OS thread id (a recursive or errorcheck mutex cannot tell
//! two coroutines apart) and a contended lock futex-waits the whole thread (the
//! holder, on the same thread, never runs again). So while `green::enabled()`
//! these functions are ours for every caller — coroutine or native thread — and
//! one implementation owns each object; while it is off every hook forwards.
//!
//! Objects live in the caller's own `pthread_*_t` / `sem_t` storage (glibc 2.36,
//! x86_64 layouts). glibc's own initialisers (`pthread_*_init`, `sem_init`, the
//! static `PTHREAD_*_INITIALIZER`s) are kept: they zero the object and write
//! the kind, clock and process-shared markers in the fields we read, so they are
//! not hooked. Our state lives in fields glibc's initialisers zero:
//!
//! | object  | ours                                                                  | glibc's, read only |
//! |---------|-----------------------------------------------------------------------|--------------------|
//! | mutex   | @0 lock word, @4 recursion count, @24 owner (u64, was `__list`)       | @16 `__kind`       |
//! | cond    | @0 sequence (futex word), @4 waiters                                  | @36 `__wrefs` bits: 1 shared, 2 monotonic |
//! | rwlock  | @0 state, @4 writer-notify, @8/@12 native readers/writers, @16 busy, @40 write owner | @28 `__shared` |
//! | barrier | @0 arrived, @4 round (futex word), @16 still inside                   | @8 count, @12 shared |
//! | sem     | @0 u64: value (futex word, low half), waiters                         | @8 shared          |
//!
//! Objects glibc must keep — process-shared ones (other processes cannot see
//! our parked coroutines), robust and priority-inheritance/-protection mutexes
//! (the kernel co-owns their lock word) — are forwarded to glibc entirely; a
//! coroutine contending on one blocks its thread, as without green threads,
//! except a coroutine waiting on a process-shared semaphore, which glibc waits
//! for on the offload pool (`shared_sem_wait`).
//!
//! Who waits how: a coroutine parks on the object's address (the runtime's
//! parking lot); a plain thread whose scheduler has coroutines runs them while
//! it waits (the holder may be one of them); any other thread blocks in
//! `futex(2)` on the object's word. Each object tells a releaser which kinds may
//! be waiting, so the uncontended paths make no system call and take no lock.
//!
//! Known differences from glibc: a coroutine waiting with a `CLOCK_REALTIME`
//! deadline does not follow later jumps of that clock; rwlocks honour the kind of `pthread_rwlockattr_setkind_np` as glibc does
//! (readers first by default, writers first for
//! `PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`), but which of several
//! waiting writers or readers goes first may differ.
//! `sem_post` stays async-signal-safe only while no coroutine waits on that
//! semaphore (waking one takes the parking lot's lock). Condvar and semaphore
//! waits are cancellation points for green threads, as glibc's (cleanup
//! handlers of a condvar waiter run with the mutex held again); a native
//! thread's wait on one of our objects is a futex(2) call, not one.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use libc::{
    EAGAIN, EBUSY, ECANCELED, EDEADLK, EINTR, EINVAL, EOVERFLOW, EPERM, ETIMEDOUT, c_int,
    clockid_t, pthread_barrier_t, pthread_cond_t, pthread_mutex_t, pthread_rwlock_t, sem_t,
    timespec,
};

use super::real::Guard;
use super::{blocking, green, thread};
use crate::runtime::{self, Breaks, Family, Label, Wake, parking};
use crate::sys::{errno, set_errno};

// ---------------------------------------------------------------------------
// Waiting and waking
// ---------------------------------------------------------------------------

/// An absolute timeout as the caller gave it, and the same moment as an Instant
/// for the scheduler's timers.
struct Deadline {
    clock: clockid_t,
    abs: timespec,
    at: Instant,
}

impl Deadline {
    /// EINVAL for a clock other than REALTIME/MONOTONIC or nanoseconds out of
    /// range, as glibc.
    fn new(clock: clockid_t, abs: *const timespec) -> Result<Deadline, c_int> {
        if clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC {
            return Err(EINVAL);
        }
        // SAFETY: a non-null `abs` points at the caller's timespec.
        let abs = *unsafe { abs.as_ref() }.ok_or(EINVAL)?;
        if !(0..1_000_000_000).contains(&abs.tv_nsec) {
            return Err(EINVAL);
        }
        let now = clock_now(clock);
        let left = if abs.tv_sec < now.tv_sec
            || (abs.tv_sec == now.tv_sec && abs.tv_nsec <= now.tv_nsec)
        {
            Duration::ZERO
        } else {
            let (mut s, mut ns) = (abs.tv_sec - now.tv_sec, abs.tv_nsec - now.tv_nsec);
            if ns < 0 {
                s -= 1;
                ns += 1_000_000_000;
            }
            Duration::new(s as u64, ns as u32)
        };
        let at = Instant::now()
            .checked_add(left)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(u32::MAX.into()));
        Ok(Deadline { clock, abs, at })
    }
}

fn clock_now(clock: clockid_t) -> timespec {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock was checked by the caller.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// How the caller waits when it must.
enum Waiter {
    /// A coroutine: parks (named `Label`); the other coroutines of its
    /// thread run.
    Park(Guard, &'static Label),
    /// A plain thread whose scheduler has coroutines: runs them meanwhile.
    Drive(Guard),
    /// Any other thread, or a call re-entered from our own code: futex(2).
    Futex,
}

impl Waiter {
    fn new(label: &'static Label) -> Waiter {
        let Some(guard) = Guard::enter() else {
            return Waiter::Futex;
        };
        if runtime::in_coroutine() {
            Waiter::Park(guard, label)
        } else if runtime::current_scheduler().is_some_and(|s| s.live() > 0) {
            Waiter::Drive(guard)
        } else {
            Waiter::Futex
        }
    }

    /// True if this waiter can only be woken by FUTEX_WAKE.
    fn native(&self) -> bool {
        matches!(self, Waiter::Futex)
    }

    /// Waits, keyed on `addr`, while `still_blocked()` — for a futex waiter,
    /// while the 32-bit word at `addr` holds `expected` — until woken, maybe
    /// spuriously. Err(ETIMEDOUT) when `deadline` passed; Err(EINTR) when a
    /// signal handler without SA_RESTART interrupted a futex wait, or, with
    /// `breaks` `Signal`, any wait; Err(ECANCELED) when a cancellation woke a
    /// coroutine (a cancellation point acts on it, other waits wait again).
    fn wait(
        &self,
        addr: usize,
        expected: u32,
        still_blocked: impl Fn() -> bool,
        deadline: Option<&Deadline>,
        breaks: Breaks,
    ) -> Result<(), c_int> {
        if deadline.is_some_and(|d| d.abs.tv_sec < 0) {
            return Err(ETIMEDOUT);
        }
        let at = deadline.map(|d| d.at);
        let wake = match self {
            Waiter::Park(guard, label) => {
                runtime::label(label);
                guard.release_while(|| parking::park_on_as(addr, at, breaks, still_blocked))
            }
            Waiter::Drive(guard) => {
                guard.release_while(|| parking::drive_on(addr, at, breaks, still_blocked))
            }
            Waiter::Futex => return futex_wait(addr, expected, deadline),
        };
        match wake {
            Wake::TimedOut => Err(ETIMEDOUT),
            // As a futex wait: restarted after SA_RESTART handlers.
            Wake::Interrupted { restart: false } => Err(EINTR),
            Wake::Cancelled => Err(ECANCELED),
            _ => Ok(()),
        }
    }

    fn wait_word(
        &self,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<&Deadline>,
    ) -> Result<(), c_int> {
        self.wait(
            word.as_ptr() as usize,
            expected,
            || word.load(SeqCst) == expected,
            deadline,
            Breaks::Never,
        )
    }
}

fn futex_wait(addr: usize, expected: u32, deadline: Option<&Deadline>) -> Result<(), c_int> {
    let mut op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG;
    let ts = match deadline {
        Some(d) => {
            if d.clock == libc::CLOCK_REALTIME {
                op |= libc::FUTEX_CLOCK_REALTIME;
            }
            &d.abs as *const timespec
        }
        None => std::ptr::null(),
    };
    let saved = errno();
    // SAFETY: `addr` is the caller's live, 4-byte aligned futex word; `ts` is
    // null or an absolute timespec on the clock named by `op`.
    let r = unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_futex,
            addr as *const u32,
            op,
            expected,
            ts,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    let e = errno();
    set_errno(saved);
    match r {
        0 => Ok(()),
        _ if e == ETIMEDOUT || e == EINTR => Err(e),
        _ => Ok(()),
    }
}

/// Wakes up to `n` threads futex-waiting on `addr`; the memory may already be
/// gone (the kernel only uses the address), as with glibc's unlock.
fn futex_wake(addr: usize, n: i32) -> bool {
    let saved = errno();
    // SAFETY: FUTEX_WAKE reads no memory; any address is acceptable.
    let r = unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_futex,
            addr as *const u32,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        )
    };
    set_errno(saved);
    r > 0
}

/// Lets others run while a destroy waits for woken waiters to leave an object.
fn let_others_run() {
    if runtime::in_coroutine() {
        runtime::yield_now();
    } else if let Some(s) = runtime::current_scheduler().filter(|s| s.live() > 0) {
        s.run_until(Some(Instant::now()), &mut || false);
    } else {
        std::thread::yield_now();
    }
}

thread_local! {
    /// Its address names this OS thread as a lock owner: unique among live
    /// threads, and, unlike a cached tid, still right in a forked child.
    static THREAD_MARK: u8 = const { 0 };
}

const NATIVE_OWNER: u64 = 1 << 63;

/// Who holds a lock: the running coroutine's id, or this thread's mark (with the
/// top bit set: coroutine ids never get there).
#[inline]
fn me() -> u64 {
    match runtime::current_task() {
        Some(t) => t.id,
        None => THREAD_MARK.try_with(|m| m as *const u8 as u64).unwrap_or(0) | NATIVE_OWNER,
    }
}

fn addr_of<T>(x: &T) -> usize {
    x as *const T as usize
}

/// Overlays our view on the caller's object if green threads are on and `is_ours`
/// accepts it (not one glibc must keep).
#[inline]
fn overlay<'a, C, T>(p: *mut C, is_ours: impl FnOnce(&T) -> bool) -> Option<&'a T> {
    if !green::enabled() {
        return None;
    }
    const { assert!(size_of::<T>() <= size_of::<C>() && align_of::<T>() <= align_of::<C>()) };
    // SAFETY: `p` is the caller's object, of a type at least as large and as
    // aligned as our overlay (checked above); all its fields are plain integers
    // or atomics, valid for any bit pattern.
    let x = unsafe { p.cast::<T>().as_ref() }?;
    is_ours(x).then_some(x)
}

// ---------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------

#[repr(C)]
struct Mutex {
    /// LOCKED, plus which kinds of waiter may be waiting.
    word: AtomicU32,
    /// Extra holds of a recursive mutex.
    count: AtomicU32,
    _glibc_owner: [u32; 2],
    kind: AtomicI32,
    _spins: u32,
    /// `me()` of the holder, for recursive and errorcheck mutexes.
    owner: AtomicU64,
    _next: u64,
}

const LOCKED: u32 = 1;
const PARKED: u32 = 2;
const NATIVE: u32 = 4;

const KIND_MASK: i32 = 3;
const RECURSIVE: i32 = libc::PTHREAD_MUTEX_RECURSIVE;
const ERRORCHECK: i32 = libc::PTHREAD_MUTEX_ERRORCHECK;
/// Robust, priority-inheritance, priority-protection, process-shared: glibc's.
/// A destroyed mutex (kind -1) has them all: glibc then reports EINVAL.
const GLIBC_KINDS: i32 = 16 | 32 | 64 | 128;

type Timeout = Option<(clockid_t, *const timespec)>;

impl Mutex {
    #[inline]
    fn ours<'a>(m: *mut pthread_mutex_t) -> Option<&'a Mutex> {
        overlay(m, |x: &Mutex| x.kind.load(Relaxed) & GLIBC_KINDS == 0)
    }

    #[inline]
    fn kind(&self) -> i32 {
        self.kind.load(Relaxed) & KIND_MASK
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        self.word
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_ok()
    }

    #[inline]
    fn lock(&self, timeout: Timeout) -> c_int {
        let kind = self.kind();
        if kind != RECURSIVE && kind != ERRORCHECK {
            if self.try_acquire() {
                return 0;
            }
            return self.lock_slow(timeout).err().unwrap_or(0);
        }
        let me = me();
        if self.owner.load(Relaxed) == me {
            return if kind == RECURSIVE {
                self.relock()
            } else {
                EDEADLK
            };
        }
        if !self.try_acquire() {
            if let Err(e) = self.lock_slow(timeout) {
                return e;
            }
        }
        self.owner.store(me, Relaxed);
        0
    }

    fn relock(&self) -> c_int {
        match self.count.load(Relaxed).checked_add(1) {
            Some(n) => {
                self.count.store(n, Relaxed);
                0
            }
            None => EAGAIN,
        }
    }

    #[cold]
    fn lock_slow(&self, timeout: Timeout) -> Result<(), c_int> {
        let deadline = timeout.map(|(c, t)| Deadline::new(c, t)).transpose()?;
        let waiter = Waiter::new(&const { Label::new("mutex", Family::Lock) });
        let mine = LOCKED | if waiter.native() { NATIVE } else { PARKED };
        loop {
            let old = self.word.fetch_or(mine, Acquire);
            if old & LOCKED == 0 {
                return Ok(());
            }
            if waiter.wait_word(&self.word, old | mine, deadline.as_ref()) == Err(ETIMEDOUT) {
                // The wake-up an unlock sent may have come with the timeout:
                // take the lock if it is free rather than lose that wake-up.
                return match self.word.fetch_or(mine, Acquire) & LOCKED {
                    0 => Ok(()),
                    _ => Err(ETIMEDOUT),
                };
            }
        }
    }

    #[inline]
    fn trylock(&self) -> c_int {
        let kind = self.kind();
        if kind == RECURSIVE || kind == ERRORCHECK {
            let me = me();
            if kind == RECURSIVE && self.owner.load(Relaxed) == me {
                return self.relock();
            }
            if !self.try_acquire() {
                return EBUSY;
            }
            self.owner.store(me, Relaxed);
            return 0;
        }
        if self.try_acquire() { 0 } else { EBUSY }
    }

    #[inline]
    fn unlock(&self) -> c_int {
        let kind = self.kind();
        if kind == RECURSIVE || kind == ERRORCHECK {
            if self.owner.load(Relaxed) != me() {
                return EPERM;
            }
            let extra = self.count.load(Relaxed);
            if extra > 0 {
                self.count.store(extra - 1, Relaxed);
                return 0;
            }
            self.owner.store(0, Relaxed);
        }
        // After this swap the mutex may be freed by its next holder: only its
        // address is used from here on.
        let old = self.word.swap(0, Release);
        if old & (PARKED | NATIVE) != 0 {
            wake_one(addr_of(self), old);
        }
        0
    }
}

#[cold]
fn wake_one(addr: usize, old: u32) {
    if old & PARKED != 0 {
        parking::unpark_one(addr);
    }
    if old & NATIVE != 0 {
        futex_wake(addr, 1);
    }
}

hook! {
    /// `pthread_mutex_lock(3)`: contention parks the coroutine, not its thread.
    fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int as real {
        match Mutex::ours(m) {
            Some(mx) => mx.lock(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_trylock(3)`.
    fn pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int as real {
        match Mutex::ours(m) {
            Some(mx) => mx.trylock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_timedlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_mutex_timedlock(m: *mut pthread_mutex_t, abstime: *const timespec) -> c_int as real {
        match Mutex::ours(m) {
            Some(mx) => mx.lock(Some((libc::CLOCK_REALTIME, abstime))),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(m, abstime) },
        }
    }
}

hook! {
    /// `pthread_mutex_clocklock(3)`: `abstime` on `clock` (REALTIME or MONOTONIC).
    fn pthread_mutex_clocklock(m: *mut pthread_mutex_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match Mutex::ours(m) {
            Some(_) if clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC => EINVAL,
            Some(mx) => mx.lock(Some((clock, abstime))),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(m, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_mutex_unlock(3)`: wakes one waiter, coroutine or thread.
    fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int as real {
        match Mutex::ours(m) {
            Some(mx) => mx.unlock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_destroy(3)`: EBUSY while locked; glibc then marks it
    /// destroyed (later use gets EINVAL).
    fn pthread_mutex_destroy(m: *mut pthread_mutex_t) -> c_int as real {
        if Mutex::ours(m).is_some_and(|mx| mx.word.load(Relaxed) != 0) {
            return EBUSY;
        }
        // SAFETY: forwarding the caller's argument.
        unsafe { real(m) }
    }
}

alias! {
    /// glibc's exported alias of `pthread_mutex_lock`.
    fn __pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_lock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_trylock`.
    fn __pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_trylock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_unlock`.
    fn __pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_unlock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_destroy`.
    fn __pthread_mutex_destroy(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_destroy
}

// ---------------------------------------------------------------------------
// Condition variable
// ---------------------------------------------------------------------------

/// Waiters wait for `seq` to move; signal and broadcast move it. A waiter
/// counts itself in `waiters` before it reads `seq`, and leaves after its wait,
/// before it relocks the mutex: destroy waits for it to leave.
#[repr(C)]
struct Cond {
    seq: AtomicU32,
    /// Count, plus WAITER_NATIVE while a futex waiter may be among them.
    waiters: AtomicU32,
    _glibc: [u32; 7],
    flags: AtomicU32,
    _rest: [u32; 2],
}

const WAITER_NATIVE: u32 = 1 << 31;
const WAITER_COUNT: u32 = WAITER_NATIVE - 1;
const COND_SHARED: u32 = 1;
const COND_MONOTONIC: u32 = 2;

impl Cond {
    #[inline]
    fn ours<'a>(c: *mut pthread_cond_t) -> Option<&'a Cond> {
        overlay(c, |x: &Cond| x.flags.load(Relaxed) & COND_SHARED == 0)
    }

    fn clock(&self) -> clockid_t {
        if self.flags.load(Relaxed) & COND_MONOTONIC != 0 {
            libc::CLOCK_MONOTONIC
        } else {
            libc::CLOCK_REALTIME
        }
    }

    fn wait(&self, m: *mut pthread_mutex_t, deadline: Option<Deadline>) -> c_int {
        let waiter = Waiter::new(&const { Label::new("cond", Family::Lock) });
        let native = if waiter.native() { WAITER_NATIVE } else { 0 };
        let _ = self
            .waiters
            .fetch_update(SeqCst, SeqCst, |w| Some((w + 1) | native));
        let seq = self.seq.load(SeqCst);
        // SAFETY: the caller's mutex, through our own (dispatching) unlock.
        let r = unsafe { pthread_mutex_unlock(m) };
        if r != 0 {
            self.leave();
            return r;
        }
        // A cancellation point: one already due acts without waiting.
        let waited = if thread::cancel_due() {
            Err(ECANCELED)
        } else {
            waiter.wait_word(&self.seq, seq, deadline.as_ref())
        };
        // A signal that came with the timeout is taken, not lost.
        let timed_out = waited == Err(ETIMEDOUT) && self.seq.load(SeqCst) == seq;
        self.leave();
        // Our guard must be gone before the relock, which may have to wait.
        drop(waiter);
        // SAFETY: as above.
        let r = unsafe { pthread_mutex_lock(m) };
        if waited == Err(ECANCELED) && r == 0 {
            // As glibc: the cleanup handlers run with the mutex held again.
            // Deferred (disabled) or not a green thread, it is a spurious wake-up.
            // SAFETY: no guard is held, and these frames own nothing to drop.
            unsafe { thread::act_on_cancel() };
        }
        match r {
            0 if timed_out => ETIMEDOUT,
            r => r,
        }
    }

    /// The waiter's last touch of the condvar.
    fn leave(&self) {
        let _ = self.waiters.fetch_update(SeqCst, SeqCst, |w| {
            let w = w - 1;
            Some(if w & WAITER_COUNT == 0 { 0 } else { w })
        });
    }

    /// Moves the sequence if anyone waits; returns the waiters word it saw.
    fn bump(&self) -> Option<u32> {
        let w = self.waiters.load(SeqCst);
        if w & WAITER_COUNT == 0 {
            return None;
        }
        self.seq.fetch_add(1, SeqCst);
        Some(w)
    }

    fn signal(&self) {
        if let Some(w) = self.bump() {
            let addr = self.seq.as_ptr() as usize;
            parking::unpark_one(addr);
            if w & WAITER_NATIVE != 0 {
                futex_wake(addr, 1);
            }
        }
    }

    fn broadcast(&self) {
        if let Some(w) = self.bump() {
            let addr = self.seq.as_ptr() as usize;
            parking::unpark_all(addr);
            if w & WAITER_NATIVE != 0 {
                futex_wake(addr, i32::MAX);
            }
        }
    }
}

fn cond_timed(c: &Cond, m: *mut pthread_mutex_t, clock: clockid_t, abs: *const timespec) -> c_int {
    match Deadline::new(clock, abs) {
        Ok(d) => c.wait(m, Some(d)),
        Err(e) => e,
    }
}

hook! {
    /// `pthread_cond_wait(3)`: releases the mutex, parks, reacquires it.
    fn pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cv.wait(m, None),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m) },
        }
    }
}

hook! {
    /// `pthread_cond_timedwait(3)`: `abstime` on the condvar's clock
    /// (`pthread_condattr_setclock`); ETIMEDOUT with the mutex reacquired.
    fn pthread_cond_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, abstime: *const timespec) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cond_timed(cv, m, cv.clock(), abstime),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m, abstime) },
        }
    }
}

hook! {
    /// `pthread_cond_clockwait(3)`.
    fn pthread_cond_clockwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cond_timed(cv, m, clock, abstime),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_cond_signal(3)`: wakes at least one waiter.
    fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                cv.signal();
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}

hook! {
    /// `pthread_cond_broadcast(3)`: wakes every waiter.
    fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                cv.broadcast();
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}

hook! {
    /// `pthread_cond_destroy(3)`: waits for woken waiters to leave, as glibc.
    fn pthread_cond_destroy(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                while cv.waiters.load(SeqCst) & WAITER_COUNT != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}

// ---------------------------------------------------------------------------
// Read-write lock
// ---------------------------------------------------------------------------

/// The futex rwlock of Rust's std (writer-preferring), with timeouts and the
/// three kinds of waiter. An unlock that must wake someone counts itself in
/// `busy` first, so that destroy can wait until it no longer touches the lock.
#[repr(C)]
struct RwLock {
    state: AtomicU32,
    writer_notify: AtomicU32,
    native_readers: AtomicU32,
    native_writers: AtomicU32,
    busy: AtomicU32,
    _pad: [u32; 2],
    shared: AtomicI32,
    _elision: u64,
    /// `me()` of the write holder, for EDEADLK.
    writer: AtomicU64,
    /// glibc's `__flags`: the kind set by `pthread_rwlockattr_setkind_np`.
    kind: AtomicU32,
    _pad2: u32,
}

/// glibc's `PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`; the other kinds
/// (the default `PREFER_READER_NP`, and `PREFER_WRITER_NP`, which glibc treats
/// as reader-preferring) let a reader in while writers wait.
const PREFER_WRITER_NONRECURSIVE: u32 = 2;

/// glibc's `PTHREAD_RWLOCK_WRPHASE` bit of `__readers`, our `state`. glibc
/// leaves an idle lock that was last write-locked in its write phase: this bit
/// set, no reader, no writer. Locks used before green threads were turned on
/// (by other libraries' constructors: OpenSSL's, run by bind9's libisc, before
/// `__libc_start_main`) come to us in that state, so the bit is never ours and
/// means nothing here: were it one reader, the first write lock would wait for
/// a reader that does not exist. Readers count from the next bit. (glibc's
/// `__wrphase_futex`, our `native_readers`, stays 1 there too: it costs one
/// futex wake-up more whenever readers are woken.)
const GLIBC_WRPHASE: u32 = 1;
const READ_LOCKED: u32 = 2;
const RW_MASK: u32 = ((1 << 30) - 1) & !GLIBC_WRPHASE;
const WRITE_LOCKED: u32 = RW_MASK;
const MAX_READERS: u32 = RW_MASK - READ_LOCKED;
const READERS_WAITING: u32 = 1 << 30;
const WRITERS_WAITING: u32 = 1 << 31;

fn is_unlocked(s: u32) -> bool {
    s & RW_MASK == 0
}

fn is_write_locked(s: u32) -> bool {
    s & RW_MASK == WRITE_LOCKED
}

impl RwLock {
    #[inline]
    fn ours<'a>(rw: *mut pthread_rwlock_t) -> Option<&'a RwLock> {
        overlay(rw, |x: &RwLock| x.shared.load(Relaxed) == 0)
    }

    /// Whether a reader may take the lock in state `s`. Readers queued behind a
    /// writer's hold always block newcomers (their wake-up clears the bit
    /// before anyone reads again); waiting writers block them only for the
    /// writer-preferring kind: glibc's default lets a thread that holds a read
    /// lock take it again while a writer waits, as POSIX requires.
    #[inline]
    fn read_lockable(&self, s: u32) -> bool {
        let blockers = if self.kind.load(Relaxed) == PREFER_WRITER_NONRECURSIVE {
            READERS_WAITING | WRITERS_WAITING
        } else {
            READERS_WAITING
        };
        s & RW_MASK < MAX_READERS && s & blockers == 0
    }

    #[inline]
    fn try_read(&self) -> c_int {
        let mut s = self.state.load(Relaxed);
        loop {
            if !self.read_lockable(s) {
                return if s & RW_MASK >= MAX_READERS && !is_write_locked(s) {
                    EAGAIN
                } else {
                    EBUSY
                };
            }
            match self
                .state
                .compare_exchange_weak(s, s + READ_LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return 0,
                Err(x) => s = x,
            }
        }
    }

    #[inline]
    fn read(&self, deadline: Option<Deadline>) -> c_int {
        match self.try_read() {
            EBUSY => self.read_contended(deadline.as_ref()),
            r => r,
        }
    }

    #[cold]
    fn read_contended(&self, deadline: Option<&Deadline>) -> c_int {
        if is_write_locked(self.state.load(Relaxed)) && self.writer.load(Relaxed) == me() {
            return EDEADLK;
        }
        let waiter = Waiter::new(&const { Label::new("rwlock", Family::Lock) });
        let mut s = self.state.load(Relaxed);
        loop {
            if self.read_lockable(s) {
                match self
                    .state
                    .compare_exchange_weak(s, s + READ_LOCKED, Acquire, Relaxed)
                {
                    Ok(_) => return 0,
                    Err(x) => s = x,
                }
                continue;
            }
            if s & RW_MASK == MAX_READERS {
                return EAGAIN;
            }
            if s & READERS_WAITING == 0 {
                if let Err(x) =
                    self.state
                        .compare_exchange(s, s | READERS_WAITING, Relaxed, Relaxed)
                {
                    s = x;
                    continue;
                }
            }
            let r = self.counted(&waiter, &self.native_readers, || {
                waiter.wait_word(&self.state, s | READERS_WAITING, deadline)
            });
            s = self.state.load(Relaxed);
            if r == Err(ETIMEDOUT) {
                // Readers are woken all at once: a timeout consumes nothing.
                return if self.read_lockable(s)
                    && self
                        .state
                        .compare_exchange(s, s + READ_LOCKED, Acquire, Relaxed)
                        .is_ok()
                {
                    0
                } else {
                    ETIMEDOUT
                };
            }
        }
    }

    /// Runs a wait, counted in `natives` if it is a futex wait.
    fn counted<R>(&self, waiter: &Waiter, natives: &AtomicU32, f: impl FnOnce() -> R) -> R {
        if !waiter.native() {
            return f();
        }
        natives.fetch_add(1, SeqCst);
        let r = f();
        natives.fetch_sub(1, SeqCst);
        r
    }

    #[inline]
    fn try_write(&self) -> bool {
        let mut s = self.state.load(Relaxed);
        while is_unlocked(s) {
            match self
                .state
                .compare_exchange_weak(s, s + WRITE_LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
        false
    }

    #[inline]
    fn write(&self, deadline: Option<Deadline>) -> c_int {
        let me = me();
        if !self.try_write() {
            if let Err(e) = self.write_contended(me, deadline.as_ref()) {
                return e;
            }
        }
        self.writer.store(me, Relaxed);
        0
    }

    #[cold]
    fn write_contended(&self, me: u64, deadline: Option<&Deadline>) -> Result<(), c_int> {
        if is_write_locked(self.state.load(Relaxed)) && self.writer.load(Relaxed) == me {
            return Err(EDEADLK);
        }
        let waiter = Waiter::new(&const { Label::new("rwlock", Family::Lock) });
        let mut other_writers_waiting = 0;
        let mut s = self.state.load(Relaxed);
        loop {
            if is_unlocked(s) {
                match self.state.compare_exchange_weak(
                    s,
                    s | WRITE_LOCKED | other_writers_waiting,
                    Acquire,
                    Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(x) => s = x,
                }
                continue;
            }
            if s & WRITERS_WAITING == 0 {
                if let Err(x) =
                    self.state
                        .compare_exchange(s, s | WRITERS_WAITING, Relaxed, Relaxed)
                {
                    s = x;
                    continue;
                }
            }
            // Keep the bit once we hold the lock: other writers may wait too.
            other_writers_waiting = WRITERS_WAITING;
            let seq = self.writer_notify.load(Acquire);
            s = self.state.load(Relaxed);
            if is_unlocked(s) || s & WRITERS_WAITING == 0 {
                continue;
            }
            let r = self.counted(&waiter, &self.native_writers, || {
                waiter.wait_word(&self.writer_notify, seq, deadline)
            });
            s = self.state.load(Relaxed);
            if r == Err(ETIMEDOUT) {
                return self.give_up_write(s);
            }
        }
    }

    /// A timed-out writer may have been sent the one writer wake-up of an
    /// unlock: it takes the lock if free, or else leaves WRITERS_WAITING set so
    /// the holder's unlock wakes the next writer.
    fn give_up_write(&self, mut s: u32) -> Result<(), c_int> {
        loop {
            let (new, got) = if is_unlocked(s) {
                (s | WRITE_LOCKED | WRITERS_WAITING, true)
            } else {
                (s | WRITERS_WAITING, false)
            };
            match self.state.compare_exchange(s, new, Acquire, Relaxed) {
                Ok(_) if got => return Ok(()),
                Ok(_) => return Err(ETIMEDOUT),
                Err(x) => s = x,
            }
        }
    }

    fn unlock(&self) -> c_int {
        let mut s = self.state.load(Relaxed);
        let release = if is_write_locked(s) {
            self.writer.store(0, Relaxed);
            WRITE_LOCKED
        } else if s & RW_MASK == 0 {
            return EPERM;
        } else {
            READ_LOCKED
        };
        while s & (READERS_WAITING | WRITERS_WAITING) == 0 {
            match self
                .state
                .compare_exchange_weak(s, s - release, Release, Relaxed)
            {
                Ok(_) => return 0,
                Err(x) => s = x,
            }
        }
        self.unlock_and_wake(release);
        0
    }

    #[cold]
    fn unlock_and_wake(&self, release: u32) {
        self.busy.fetch_add(1, SeqCst);
        let s = self.state.fetch_sub(release, Release) - release;
        let wake = if release == WRITE_LOCKED {
            s & (READERS_WAITING | WRITERS_WAITING) != 0
        } else {
            // Readers never wait on a read-locked lock: they wait only while
            // it is write-locked, or queued behind readers who did.
            is_unlocked(s) && s & WRITERS_WAITING != 0
        };
        if wake {
            self.wake_writer_or_readers(s);
        }
        self.busy.fetch_sub(1, SeqCst);
    }

    fn wake_writer_or_readers(&self, mut s: u32) {
        // The states below are exact but for glibc's leftover bit, which the
        // exchanges clear.
        if s & !GLIBC_WRPHASE == WRITERS_WAITING {
            match self.state.compare_exchange(s, 0, Relaxed, Relaxed) {
                Ok(_) => {
                    self.wake_writer();
                    return;
                }
                Err(x) => s = x,
            }
        }
        if s & !GLIBC_WRPHASE == READERS_WAITING + WRITERS_WAITING {
            if self
                .state
                .compare_exchange(s, READERS_WAITING, Relaxed, Relaxed)
                .is_err()
            {
                // Someone took the lock meanwhile; their unlock wakes.
                return;
            }
            if self.wake_writer() {
                return;
            }
            // No writer was asleep to take the wake-up: wake the readers instead.
            s = READERS_WAITING;
        }
        if s & !GLIBC_WRPHASE == READERS_WAITING
            && self.state.compare_exchange(s, 0, Relaxed, Relaxed).is_ok()
        {
            let addr = self.state.as_ptr() as usize;
            parking::unpark_all(addr);
            if self.native_readers.load(SeqCst) > 0 {
                futex_wake(addr, i32::MAX);
            }
        }
    }

    /// True if a waiting writer was woken.
    fn wake_writer(&self) -> bool {
        self.writer_notify.fetch_add(1, SeqCst);
        let addr = self.writer_notify.as_ptr() as usize;
        parking::unpark_one(addr) || (self.native_writers.load(SeqCst) > 0 && futex_wake(addr, 1))
    }
}

/// `rwlock` with an optional deadline, validated first as glibc does.
fn rw_timed(
    rw: &RwLock,
    clock: clockid_t,
    abs: *const timespec,
    op: fn(&RwLock, Option<Deadline>) -> c_int,
) -> c_int {
    match Deadline::new(clock, abs) {
        Ok(d) => op(rw, Some(d)),
        Err(e) => e,
    }
}

hook! {
    /// `pthread_rwlock_rdlock(3)`.
    fn pthread_rwlock_rdlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => l.read(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_tryrdlock(3)`.
    fn pthread_rwlock_tryrdlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => l.try_read(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_timedrdlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_rwlock_timedrdlock(rw: *mut pthread_rwlock_t, abstime: *const timespec) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => rw_timed(l, libc::CLOCK_REALTIME, abstime, RwLock::read),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_clockrdlock(3)`.
    fn pthread_rwlock_clockrdlock(rw: *mut pthread_rwlock_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => rw_timed(l, clock, abstime, RwLock::read),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_wrlock(3)`.
    fn pthread_rwlock_wrlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => l.write(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_trywrlock(3)`.
    fn pthread_rwlock_trywrlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) if l.try_write() => {
                l.writer.store(me(), Relaxed);
                0
            }
            Some(_) => EBUSY,
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_timedwrlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_rwlock_timedwrlock(rw: *mut pthread_rwlock_t, abstime: *const timespec) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => rw_timed(l, libc::CLOCK_REALTIME, abstime, RwLock::write),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_clockwrlock(3)`.
    fn pthread_rwlock_clockwrlock(rw: *mut pthread_rwlock_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => rw_timed(l, clock, abstime, RwLock::write),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_unlock(3)`: EPERM if not locked at all.
    fn pthread_rwlock_unlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => l.unlock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_destroy(3)`: waits for a waking unlock to finish.
    fn pthread_rwlock_destroy(rw: *mut pthread_rwlock_t) -> c_int as real {
        match RwLock::ours(rw) {
            Some(l) => {
                while l.busy.load(SeqCst) != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_rdlock`.
    fn __pthread_rwlock_rdlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_rdlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_tryrdlock`.
    fn __pthread_rwlock_tryrdlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_tryrdlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_wrlock`.
    fn __pthread_rwlock_wrlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_wrlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_trywrlock`.
    fn __pthread_rwlock_trywrlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_trywrlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_unlock`.
    fn __pthread_rwlock_unlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_unlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_destroy`.
    fn __pthread_rwlock_destroy(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_destroy
}

// ---------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------

/// Arrivals are counted in `arrived`; the last one resets it and moves `round`,
/// which the others wait on. Everyone counts in `inside` from entry to exit:
/// destroy waits for it to drain.
#[repr(C)]
struct Barrier {
    /// Arrivals this round, plus WAITER_NATIVE if a futex waiter is among them.
    arrived: AtomicU32,
    round: AtomicU32,
    count: AtomicU32,
    shared: AtomicI32,
    inside: AtomicU32,
    _pad: [u32; 3],
}

impl Barrier {
    fn ours<'a>(b: *mut pthread_barrier_t) -> Option<&'a Barrier> {
        overlay(b, |x: &Barrier| x.shared.load(Relaxed) == 0)
    }

    /// A barrier glibc's code used (before green threads were on) is left with
    /// its arrivals (`in`, our `arrived`) and departures (`out`, our `inside`)
    /// equal, a multiple of the count: our `arrived` never reaches the count,
    /// so one that has is glibc's, and both go back to zero.
    fn adopt_from_glibc(&self, count: u32) {
        let a = self.arrived.load(SeqCst);
        if a & WAITER_COUNT >= count && self.arrived.compare_exchange(a, 0, SeqCst, SeqCst).is_ok()
        {
            self.inside.fetch_sub(a, SeqCst);
        }
    }

    fn wait(&self) -> c_int {
        let count = self.count.load(Relaxed);
        self.adopt_from_glibc(count);
        self.inside.fetch_add(1, SeqCst);
        let round = self.round.load(SeqCst);
        let waiter = Waiter::new(&const { Label::new("barrier", Family::Lock) });
        let native = if waiter.native() { WAITER_NATIVE } else { 0 };
        let mut a = self.arrived.load(SeqCst);
        loop {
            if (a & WAITER_COUNT) + 1 >= count {
                match self.arrived.compare_exchange(a, 0, SeqCst, SeqCst) {
                    Ok(_) => {
                        self.round.fetch_add(1, SeqCst);
                        let addr = self.round.as_ptr() as usize;
                        parking::unpark_all(addr);
                        if a & WAITER_NATIVE != 0 {
                            futex_wake(addr, i32::MAX);
                        }
                        self.inside.fetch_sub(1, SeqCst);
                        return libc::PTHREAD_BARRIER_SERIAL_THREAD;
                    }
                    Err(x) => a = x,
                }
            } else {
                match self
                    .arrived
                    .compare_exchange(a, (a + 1) | native, SeqCst, SeqCst)
                {
                    Ok(_) => break,
                    Err(x) => a = x,
                }
            }
        }
        while self.round.load(SeqCst) == round {
            let _ = waiter.wait_word(&self.round, round, None);
        }
        drop(waiter);
        self.inside.fetch_sub(1, SeqCst);
        0
    }
}

hook! {
    /// `pthread_barrier_wait(3)`: PTHREAD_BARRIER_SERIAL_THREAD for the last to
    /// arrive, 0 for the others.
    fn pthread_barrier_wait(b: *mut pthread_barrier_t) -> c_int as real {
        match Barrier::ours(b) {
            Some(br) => br.wait(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(b) },
        }
    }
}

hook! {
    /// `pthread_barrier_destroy(3)`: EBUSY while a round is under way; waits for
    /// the last round's waiters to leave.
    fn pthread_barrier_destroy(b: *mut pthread_barrier_t) -> c_int as real {
        match Barrier::ours(b) {
            Some(br) => {
                br.adopt_from_glibc(br.count.load(Relaxed));
                if br.arrived.load(SeqCst) & WAITER_COUNT != 0 {
                    return EBUSY;
                }
                while br.inside.load(SeqCst) != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(b) },
        }
    }
}

// ---------------------------------------------------------------------------
// Unnamed semaphore
// ---------------------------------------------------------------------------

/// glibc's own layout: one 64-bit word, the value in the low half (the futex
/// word), waiters above it. A post or a leaving waiter is a single atomic
/// operation on it, so neither touches the semaphore afterwards (a waiter may
/// destroy it as soon as it has its token).
#[repr(C)]
struct Sem {
    data: AtomicU64,
    shared: AtomicI32,
    _pad: [u32; 5],
}

const SEM_VALUE: u64 = 0xffff_ffff;
const SEM_WAITER: u64 = 1 << 32;
const SEM_NATIVE: u64 = 1 << 63;
const SEM_WAITERS: u64 = !SEM_VALUE & !SEM_NATIVE;
const SEM_VALUE_MAX: u64 = i32::MAX as u64;

impl Sem {
    fn ours<'a>(s: *mut sem_t) -> Option<&'a Sem> {
        overlay(s, |x: &Sem| x.shared.load(Relaxed) == 0)
    }

    #[inline]
    fn try_take(&self) -> bool {
        let mut d = self.data.load(Relaxed);
        while d & SEM_VALUE != 0 {
            match self.data.compare_exchange_weak(d, d - 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(x) => d = x,
            }
        }
        false
    }

    fn leave(d: u64) -> u64 {
        let d = d - SEM_WAITER;
        if d & SEM_WAITERS == 0 {
            d & !SEM_NATIVE
        } else {
            d
        }
    }

    /// A cancellation point: a coroutine cancelled while it waits leaves
    /// without a token and acts on it; deferred, it waits again.
    fn wait(&self, deadline: Option<Deadline>) -> Result<(), c_int> {
        loop {
            match self.wait_until_cancelled(deadline.as_ref()) {
                // SAFETY: no guard is held (the waiter is gone) and these frames
                // own nothing to drop.
                Err(ECANCELED) => unsafe {
                    thread::act_on_cancel();
                },
                r => return r,
            }
        }
    }

    fn wait_until_cancelled(&self, deadline: Option<&Deadline>) -> Result<(), c_int> {
        if self.try_take() {
            return Ok(());
        }
        let waiter = Waiter::new(&const { Label::new("sem", Family::Lock) });
        let mine = SEM_WAITER | if waiter.native() { SEM_NATIVE } else { 0 };
        let mut d = self.data.load(Relaxed);
        loop {
            let (new, took) = match d & SEM_VALUE {
                0 => ((d + SEM_WAITER) | (mine & SEM_NATIVE), false),
                _ => (d - 1, true),
            };
            match self.data.compare_exchange_weak(d, new, SeqCst, Relaxed) {
                Ok(_) if took => return Ok(()),
                Ok(_) => break,
                Err(x) => d = x,
            }
        }
        let addr = self.data.as_ptr() as usize;
        loop {
            // EINTR after a handler without SA_RESTART, as glibc's futex wait
            // gives it (signal(7) says never restarted; Linux restarts it).
            let r = waiter.wait(
                addr,
                0,
                || self.data.load(SeqCst) & SEM_VALUE == 0,
                deadline,
                Breaks::Signal,
            );
            // Take a token and leave in one step; or, giving up, just leave.
            let mut d = self.data.load(Relaxed);
            loop {
                let left = Self::leave(d);
                let (new, result) = match (d & SEM_VALUE, r) {
                    (_, Err(ECANCELED)) => (left, Err(ECANCELED)),
                    (0, Ok(())) => break,
                    (0, Err(e)) => (left, Err(e)),
                    _ => (left - 1, Ok(())),
                };
                match self.data.compare_exchange_weak(d, new, Acquire, Relaxed) {
                    Ok(_) => return result,
                    Err(x) => d = x,
                }
            }
        }
    }

    fn post(&self) -> Result<(), c_int> {
        let mut d = self.data.load(Relaxed);
        loop {
            if d & SEM_VALUE >= SEM_VALUE_MAX {
                return Err(EOVERFLOW);
            }
            match self.data.compare_exchange_weak(d, d + 1, SeqCst, Relaxed) {
                Ok(_) => break,
                Err(x) => d = x,
            }
        }
        if d & SEM_WAITERS != 0 {
            let addr = self.data.as_ptr() as usize;
            parking::unpark_one(addr);
            if d & SEM_NATIVE != 0 {
                futex_wake(addr, 1);
            }
        }
        Ok(())
    }
}

/// The sem_* convention: 0, or -1 with errno.
fn sem_result(r: Result<(), c_int>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

fn sem_timed(s: &Sem, clock: clockid_t, abs: *const timespec) -> c_int {
    sem_result(Deadline::new(clock, abs).and_then(|d| s.wait(Some(d))))
}

/// glibc's `sem_wait` and `sem_timedwait` (not `sem_clockwait`) act on a due
/// cancellation before they look for a token.
fn sem_testcancel() {
    // SAFETY: called first thing in a hook: no guard held, nothing to drop.
    unsafe { thread::pthread_testcancel() }
}

/// How long one offloaded wait on a process-shared semaphore lasts: how late a
/// coroutine waiting on one sees a signal handler or a cancellation.
const SHARED_SLICE: Duration = Duration::from_millis(50);

/// A coroutine's wait on a semaphore glibc keeps (`sem_open`, `sem_init(s, 1,
/// n)`): its post may come from another process, which cannot see our parking
/// lot, so the coroutine parks while a pool thread waits in glibc's own
/// `sem_clockwait` (where any post wakes it at once), one slice at a time.
/// Each slice ends with the token or without it, never abandoned with a token
/// taken. Between slices a signal handler without SA_RESTART run on this
/// thread gives EINTR and a due cancellation is acted on, as in glibc's wait.
/// None when the caller is not a coroutine (it forwards, blocking its thread).
/// `cancel_first`: act on a due cancellation before anything, as glibc's
/// `sem_wait` and `sem_timedwait`.
fn shared_sem_wait(
    s: *mut sem_t,
    deadline: Option<(clockid_t, *const timespec)>,
    cancel_first: bool,
) -> Option<c_int> {
    if !green::enabled() || !runtime::in_coroutine() {
        return None;
    }
    if cancel_first {
        sem_testcancel();
    }
    let real_trywait = original!("C" fn sem_trywait(*mut sem_t) -> c_int)?;
    let real_clockwait =
        original!("C" fn sem_clockwait(*mut sem_t, clockid_t, *const timespec) -> c_int)?;
    let at = match deadline
        .map(|(clock, abs)| Deadline::new(clock, abs))
        .transpose()
    {
        Ok(d) => d.map(|d| (d.at, d.abs.tv_sec < 0)),
        Err(e) => return Some(sem_result(Err(e))),
    };
    let saved = errno();
    // SAFETY: the caller's semaphore.
    if unsafe { real_trywait(s) } == 0 {
        return Some(0);
    }
    set_errno(saved);
    if at.is_some_and(|(_, before_epoch)| before_epoch) {
        return Some(sem_result(Err(ETIMEDOUT)));
    }
    let handlers = runtime::signal_counts().1;
    loop {
        let now = Instant::now();
        let left = at.map_or(SHARED_SLICE, |(at, _)| at.saturating_duration_since(now));
        if left.is_zero() {
            return Some(sem_result(Err(ETIMEDOUT)));
        }
        let mut end = clock_now(libc::CLOCK_MONOTONIC);
        let step = left.min(SHARED_SLICE);
        end.tv_sec += step.as_secs() as libc::time_t;
        end.tv_nsec += libc::c_long::from(step.subsec_nanos() as i32);
        if end.tv_nsec >= 1_000_000_000 {
            end.tv_sec += 1;
            end.tv_nsec -= 1_000_000_000;
        }
        let guard = Guard::enter()?;
        // SAFETY: the pool thread uses only the caller's semaphore and `end`,
        // both alive until the job ends (`offloaded` returns after it).
        let (r, e) = unsafe {
            blocking::offloaded(&guard, &const { Label::new("sem", Family::Lock) }, || {
                (real_clockwait(s, libc::CLOCK_MONOTONIC, &end), errno())
            })
        };
        drop(guard);
        match (r, e) {
            (0, _) => return Some(0),
            // Pool threads block signals, so EINTR is not the program's.
            (_, ETIMEDOUT | EINTR) => {}
            (_, e) => return Some(sem_result(Err(e))),
        }
        if runtime::signal_counts().1 != handlers {
            return Some(sem_result(Err(EINTR)));
        }
        sem_testcancel();
    }
}

hook! {
    /// `sem_wait(3)`.
    fn sem_wait(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                sem_testcancel();
                sem_result(sem.wait(None))
            }
            // SAFETY: forwarding the caller's argument.
            None => shared_sem_wait(s, None, true).unwrap_or_else(|| unsafe { real(s) }),
        }
    }
}

hook! {
    /// `sem_trywait(3)`: EAGAIN at zero.
    fn sem_trywait(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_result(if sem.try_take() { Ok(()) } else { Err(EAGAIN) }),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(s) },
        }
    }
}

hook! {
    /// `sem_timedwait(3)`: `abstime` on CLOCK_REALTIME; EINVAL for a bad one
    /// even when a token is there, as glibc.
    fn sem_timedwait(s: *mut sem_t, abstime: *const timespec) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                sem_testcancel();
                sem_timed(sem, libc::CLOCK_REALTIME, abstime)
            }
            None => shared_sem_wait(s, Some((libc::CLOCK_REALTIME, abstime)), true)
                // SAFETY: forwarding the caller's arguments.
                .unwrap_or_else(|| unsafe { real(s, abstime) }),
        }
    }
}

hook! {
    /// `sem_clockwait(3)`.
    fn sem_clockwait(s: *mut sem_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_timed(sem, clock, abstime),
            None => shared_sem_wait(s, Some((clock, abstime)), false)
                // SAFETY: forwarding the caller's arguments.
                .unwrap_or_else(|| unsafe { real(s, clock, abstime) }),
        }
    }
}

hook! {
    /// `sem_post(3)`: EOVERFLOW at SEM_VALUE_MAX.
    fn sem_post(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_result(sem.post()),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(s) },
        }
    }
}

hook! {
    /// `sem_getvalue(3)`.
    fn sem_getvalue(s: *mut sem_t, value: *mut c_int) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                // SAFETY: the caller's out-pointer.
                unsafe { *value = (sem.data.load(Relaxed) & SEM_VALUE) as c_int };
                0
            }
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(s, value) },
        }
    }
}

// ---------------------------------------------------------------------------
// Spin locks
// ---------------------------------------------------------------------------
//
// The lock word stays glibc's (its layout differs between architectures: on
// x86_64 1 is free), so native threads and other processes share it, and
// `pthread_spin_init`, `_trylock`, `_unlock` and `_destroy` stay glibc's. Only
// a contended `pthread_spin_lock` in a coroutine differs: its holder may be a
// coroutine of the same OS thread, which runs only if the spinner yields.

/// Tries a contended lock this many times between yields: a holder on
/// another CPU finishing a short section is still caught without a switch.
const SPINS_BEFORE_YIELD: u32 = 100;

hook! {
    /// `pthread_spin_lock(3)`: in a coroutine, a contended lock spins briefly
    /// (glibc's trylock), then lets the other coroutines of its thread run
    /// between tries.
    fn pthread_spin_lock(lock: *mut libc::pthread_spinlock_t) -> c_int as real {
        // SAFETY: the caller's spin lock (glibc's trylock, which we do not hook).
        let take = || unsafe { libc::pthread_spin_trylock(lock) } == 0;
        if take() {
            return 0;
        }
        let Some(guard) = super::sleep::coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(lock) };
        };
        loop {
            for _ in 0..SPINS_BEFORE_YIELD {
                if take() {
                    return 0;
                }
                std::hint::spin_loop();
            }
            guard.release_while(runtime::yield_now);
        }
    }
}

// ---------------------------------------------------------------------------
// C11 threads
// ---------------------------------------------------------------------------
//
// glibc's `mtx_*` and `cnd_*` call its pthread functions directly, past any
// interposer: they are defined here as glibc defines them, on our pthread
// hooks (which forward when green threads are off). `mtx_t` and `cnd_t` are
// `pthread_mutex_t` and `pthread_cond_t` underneath; `mtx_init`, `mtx_destroy`
// and `cnd_init` only write glibc's layout and stay glibc's.

/// glibc's `thrd_err_map`.
fn thrd(r: c_int) -> c_int {
    const THRD_SUCCESS: c_int = 0;
    const THRD_BUSY: c_int = 1;
    const THRD_ERROR: c_int = 2;
    const THRD_NOMEM: c_int = 3;
    const THRD_TIMEDOUT: c_int = 4;
    match r {
        0 => THRD_SUCCESS,
        libc::ENOMEM => THRD_NOMEM,
        ETIMEDOUT => THRD_TIMEDOUT,
        EBUSY => THRD_BUSY,
        _ => THRD_ERROR,
    }
}

macro_rules! c11 {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $pthread:ident) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// The C function's contract: valid, initialised objects.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            // SAFETY: same arguments and contract as the pthread function.
            thrd(unsafe { $pthread($($arg),*) })
        }
    };
}

c11! {
    /// `mtx_lock(3)`.
    fn mtx_lock(m: *mut pthread_mutex_t) = pthread_mutex_lock
}

c11! {
    /// `mtx_trylock(3)`.
    fn mtx_trylock(m: *mut pthread_mutex_t) = pthread_mutex_trylock
}

c11! {
    /// `mtx_timedlock(3)`: `abstime` on TIME_UTC (CLOCK_REALTIME).
    fn mtx_timedlock(m: *mut pthread_mutex_t, abstime: *const timespec) = pthread_mutex_timedlock
}

c11! {
    /// `mtx_unlock(3)`.
    fn mtx_unlock(m: *mut pthread_mutex_t) = pthread_mutex_unlock
}

c11! {
    /// `cnd_wait(3)`.
    fn cnd_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) = pthread_cond_wait
}

c11! {
    /// `cnd_timedwait(3)`.
    fn cnd_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, abstime: *const timespec) = pthread_cond_timedwait
}

c11! {
    /// `cnd_signal(3)`.
    fn cnd_signal(c: *mut pthread_cond_t) = pthread_cond_signal
}

c11! {
    /// `cnd_broadcast(3)`.
    fn cnd_broadcast(c: *mut pthread_cond_t) = pthread_cond_broadcast
}

/// `cnd_destroy(3)`: as `pthread_cond_destroy`, waits for woken waiters to leave.
///
/// # Safety
/// A valid, initialised condvar nobody waits on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cnd_destroy(c: *mut pthread_cond_t) {
    // SAFETY: same contract.
    unsafe { pthread_cond_destroy(c) };
}
