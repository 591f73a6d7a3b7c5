//! The runtime's own fds (each scheduler's epoll, waker eventfd and signalfd, the pidfds
//! a child wait parks on), kept out of the program's way (contract 10).
//!
//! Programs close every fd they did not open (daemons, bind9, shells: a close
//! loop, `close_range`, `closefrom`) and `dup2` onto numbers they choose. So
//! each fd the runtime makes is moved to a number near the top of the first
//! 1024 (where the program's own numbering, lowest first, rarely reaches: its
//! fds get the numbers they get natively), and registered here by number. The
//! close family asks `is_ours` and treats a registered number as a closed one;
//! a `dup2`/`dup3` onto one first moves the runtime's fd elsewhere (`vacate`),
//! which is why holders read their fd's number from an [`OwnFd`] each time.
//!
//! Lock-free: hooks ask `is_ours` from any thread, in any state (one load of a
//! page pointer and one of the entry, once the process is engaged). A holder
//! is published in the map only when nothing more is done to it, so `drop`
//! and `vacate` never free or move what the other still touches.

use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};

use crate::fdmap::{FdMap, Zeroable};
use crate::sys;

/// How far below the top of the first 1024 numbers (or the fd limit, if
/// lower) the runtime's fds start: room for the schedulers and some pidfds;
/// past it they take whatever number is free above.
const ROOM: i32 = 64;

/// One fd the runtime holds, at whatever number it has now.
struct Holder {
    fd: AtomicI32,
    /// Short uses in progress on other threads (a waker's write): a move waits
    /// for them before the old number is given up.
    users: AtomicU32,
}

struct Entry(AtomicPtr<Holder>);

// SAFETY: a null AtomicPtr is valid (not ours); atomics are Sync.
unsafe impl Zeroable for Entry {}

static OWN: FdMap<Entry> = FdMap::new();
/// The lowest number an fd of ours ever had: below it, none is.
static LOWEST: AtomicI32 = AtomicI32::new(i32::MAX);

/// An fd the runtime made for itself; closed when dropped.
pub(crate) struct OwnFd(Box<Holder>);

impl OwnFd {
    /// Takes `fd` (just made, close-on-exec) as the runtime's: moved out of
    /// the program's way and registered.
    pub(crate) fn adopt(fd: RawFd) -> OwnFd {
        super::engage();
        let fd = match dup_above(fd, floor()) {
            Some(high) => {
                sys::raw_close(fd);
                high
            }
            None => fd,
        };
        let holder = Box::new(Holder {
            fd: AtomicI32::new(fd),
            users: AtomicU32::new(0),
        });
        publish(fd, ptr_of(&holder));
        OwnFd(holder)
    }

    /// The fd's number now. A call made with it may find the program's file
    /// there if a `dup2` moved ours meanwhile: callers that can tell (EBADF,
    /// EINVAL) read it again; short writes use `with` instead.
    pub(crate) fn raw(&self) -> RawFd {
        self.0.fd.load(Ordering::Acquire)
    }

    /// Runs `f` with the fd's number, which stays ours until `f` returns.
    pub(crate) fn with<R>(&self, f: impl FnOnce(RawFd) -> R) -> R {
        self.0.users.fetch_add(1, Ordering::SeqCst);
        let r = f(self.0.fd.load(Ordering::SeqCst));
        self.0.users.fetch_sub(1, Ordering::Release);
        r
    }
}

impl Drop for OwnFd {
    fn drop(&mut self) {
        let me = ptr_of(&self.0);
        loop {
            let fd = self.0.fd.load(Ordering::Acquire);
            let claimed = OWN.get(fd).is_none_or(|e| {
                e.0.compare_exchange(me, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
            if claimed {
                // A reactor may hold it (a pidfd): forget it before the number
                // can be reused.
                super::fd_closing(fd);
                sys::raw_close(fd);
                return;
            }
            // A `vacate` is moving it: it publishes the new number when done.
            std::thread::yield_now();
        }
    }
}

fn ptr_of(holder: &Holder) -> *mut Holder {
    holder as *const Holder as *mut Holder
}

/// True if `fd` is one of the runtime's own.
#[inline]
pub(crate) fn is_ours(fd: RawFd) -> bool {
    OWN.get(fd)
        .is_some_and(|e| !e.0.load(Ordering::Acquire).is_null())
}

/// The runtime's fds in `first..=last`, ascending, into `out`; how many there
/// were (more than `out` holds means `out` is incomplete).
pub(crate) fn ours_in(first: u32, last: u32, out: &mut [RawFd]) -> usize {
    let mut n = 0;
    OWN.for_each(|fd, e| {
        let fd_u = fd as u32;
        if fd_u >= first && fd_u <= last && !e.0.load(Ordering::Acquire).is_null() {
            if let Some(slot) = out.get_mut(n) {
                *slot = fd;
            }
            n += 1;
        }
    });
    n
}

/// Moves the runtime's fd at `fd` (if it is one) to another number, so that
/// the program may have `fd`: afterwards `fd` still refers to the runtime's
/// file until the caller's `dup2`/`close` replaces it. Err(errno) if no
/// number was free.
pub(crate) fn vacate(fd: RawFd) -> Result<(), i32> {
    let Some(entry) = OWN.get(fd) else {
        return Ok(());
    };
    let holder = entry.0.load(Ordering::Acquire);
    if holder.is_null()
        || entry
            .0
            .compare_exchange(holder, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return Ok(());
    }
    // SAFETY: claimed above: the holder's `drop` waits until it is published
    // again, so it stays alive while this moves it.
    let h = unsafe { &*holder };
    let Some(new) = dup_above(fd, floor()).or_else(|| dup_above(fd, 0)) else {
        let e = sys::errno();
        entry.0.store(holder, Ordering::Release);
        return Err(e);
    };
    h.fd.store(new, Ordering::SeqCst);
    while h.users.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    publish(new, holder);
    Ok(())
}

/// Registers `holder` at `fd`. Without memory for the map the fd stays
/// usable, only not hidden.
fn publish(fd: RawFd, holder: *mut Holder) {
    LOWEST.fetch_min(fd, Ordering::AcqRel);
    if let Some(entry) = OWN.get_or_create(fd) {
        entry.0.store(holder, Ordering::Release);
    }
}

/// No fd of the runtime's ever had a number below this.
pub(crate) fn lowest() -> RawFd {
    LOWEST.load(Ordering::Acquire)
}

/// The first number the runtime's fds may take.
fn floor() -> RawFd {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1024) as RawFd
    } else {
        1024
    };
    (soft - ROOM).max(3)
}

/// A close-on-exec copy of `fd` at the lowest free number from `min`.
fn dup_above(fd: RawFd, min: RawFd) -> Option<RawFd> {
    let new = sys::raw_fcntl(fd, libc::F_DUPFD_CLOEXEC, min.into());
    (new >= 0).then_some(new as RawFd)
}
