//! An io_uring per scheduler (`PATCHALL_IO=uring`): a coroutine's socket read
//! or write is handed to the kernel as an operation on the program's own
//! buffer, and the coroutine parks until it completes. The
//! scheduler submits every operation its coroutines queued and reaps what
//! completed in one `io_uring_enter`, which is also where it waits: per round
//! trip of an echo server, no `recvfrom`, no `sendto` and no `epoll_wait` of
//! its own (the reactor's epoll instance is watched by a multishot poll).
//!
//! The ring is made with `SINGLE_ISSUER | DEFER_TASKRUN`: completions run
//! only when the scheduler's thread enters to wait, never as task work that
//! interrupts its coroutines (measured here with a C echo server at 1,000
//! connections: without them it took 1.3× the CPU per round trip).
//!
//! An operation's buffer belongs to the kernel until its completion is
//! reaped, so an operation is never abandoned: a park that ends for any other
//! reason (a timeout, a signal, cancellation) asks the kernel to cancel it and
//! waits for its completion, whose result wins if it moved data.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use super::ownfd::OwnFd;

const SYS_IO_URING_SETUP: libc::c_long = 425;
const SYS_IO_URING_ENTER: libc::c_long = 426;

const SETUP_CQSIZE: u32 = 1 << 3;
const SETUP_SUBMIT_ALL: u32 = 1 << 7;
const SETUP_SINGLE_ISSUER: u32 = 1 << 12;
const SETUP_DEFER_TASKRUN: u32 = 1 << 13;
const FEAT_SINGLE_MMAP: u32 = 1 << 0;
const FEAT_EXT_ARG: u32 = 1 << 8;
const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_EXT_ARG: u32 = 1 << 3;
const OFF_SQ_RING: libc::off_t = 0;
const OFF_SQES: libc::off_t = 0x1000_0000;

const OP_POLL_ADD: u8 = 6;
const OP_ASYNC_CANCEL: u8 = 14;
const OP_SEND: u8 = 26;
const OP_RECV: u8 = 27;
const POLL_ADD_MULTI: u32 = 1 << 0;
const CQE_F_MORE: u32 = 1 << 1;

/// Submission entries: a batch of a thousand parks fits, and a fuller queue
/// is submitted early. Completions get four times as many.
const ENTRIES: u32 = 4096;

/// Set once any scheduler has a ring: until then the hooks need not look.
static ANY: AtomicBool = AtomicBool::new(false);

/// Whether any scheduler of the process has a ring.
#[inline(always)]
pub(crate) fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// A completion's `user_data` that is no operation's: the reactor's epoll
/// instance became readable.
pub(crate) const EPOLL_TAG: u64 = 1;
/// The completion of a cancellation request: nothing waits for it.
const CANCEL_TAG: u64 = 2;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_sqe`, the fields used here.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// One mapping of the kernel's, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: libc::c_int, len: usize, offset: libc::off_t) -> io::Result<Map> {
        // SAFETY: a shared mapping of the ring's fd at an offset the kernel
        // defines; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The `u32` the kernel shares at byte `offset`.
    fn word(&self, offset: u32) -> &AtomicU32 {
        debug_assert!(offset as usize + 4 <= self.len);
        // SAFETY: inside the mapping (the kernel's offsets), 4-aligned, and
        // shared with the kernel only through atomic accesses.
        unsafe { &*self.ptr.add(offset as usize).cast::<AtomicU32>() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// An operation in flight, on the parked coroutine's stack: the completion
/// writes its result here and wakes whoever `who` holds.
pub(crate) struct Op {
    pub(crate) who: std::cell::Cell<Option<super::task::Unparker>>,
    pub(crate) res: std::cell::Cell<Option<i32>>,
}

impl Op {
    pub(crate) const fn new() -> Op {
        Op {
            who: std::cell::Cell::new(None),
            res: std::cell::Cell::new(None),
        }
    }

    fn tag(&self) -> u64 {
        ptr::from_ref(self) as u64
    }
}

/// What an operation does.
#[derive(Clone, Copy)]
pub(crate) enum Io {
    Recv,
    Send,
}

/// A scheduler's ring.
pub(crate) struct Ring {
    fd: OwnFd,
    _rings: Map,
    sqes: Map,
    sq_tail: u32,
    sq_head: *const AtomicU32,
    sq_tail_word: *const AtomicU32,
    sq_mask: u32,
    sq_entries: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
    /// Entries written since the last `enter`.
    unsubmitted: u32,
}

impl Ring {
    /// A ring, or why this kernel (or a seccomp filter) gives none.
    pub(crate) fn new() -> io::Result<Ring> {
        let mut p = Params {
            flags: SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN | SETUP_CQSIZE | SETUP_SUBMIT_ALL,
            cq_entries: ENTRIES * 4,
            ..Params::default()
        };
        // SAFETY: io_uring_setup reads and fills a Params; returns an fd.
        let fd = unsafe { crate::sys::raw_syscall!(SYS_IO_URING_SETUP, ENTRIES, &mut p) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnFd::adopt(fd as libc::c_int);
        let needed = FEAT_SINGLE_MMAP | FEAT_EXT_ARG;
        if p.features & needed != needed {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
        let rings = Map::new(fd.raw(), sq_len.max(cq_len), OFF_SQ_RING)?;
        let sqes = Map::new(fd.raw(), p.sq_entries as usize * size_of::<Sqe>(), OFF_SQES)?;
        // The submission array maps slot i to entry i, once for all.
        for i in 0..p.sq_entries {
            rings
                .word(p.sq_off.array + 4 * i)
                .store(i, Ordering::Relaxed);
        }
        let sq_tail = rings.word(p.sq_off.tail).load(Ordering::Relaxed);
        ANY.store(true, Ordering::Relaxed);
        Ok(Ring {
            sq_tail,
            sq_head: rings.word(p.sq_off.head),
            sq_tail_word: rings.word(p.sq_off.tail),
            sq_mask: rings.word(p.sq_off.ring_mask).load(Ordering::Relaxed),
            sq_entries: p.sq_entries,
            cq_head: rings.word(p.cq_off.head),
            cq_tail: rings.word(p.cq_off.tail),
            cq_mask: rings.word(p.cq_off.ring_mask).load(Ordering::Relaxed),
            // SAFETY: the kernel's offset of the completion array, inside
            // the mapping (`cq_len`).
            cqes: unsafe { rings.ptr.add(p.cq_off.cqes as usize) }.cast(),
            fd,
            _rings: rings,
            sqes,
            unsubmitted: 0,
        })
    }

    fn push(&mut self, sqe: Sqe) {
        // SAFETY: `sq_head` points into the live mapping.
        let head = unsafe { &*self.sq_head }.load(Ordering::Acquire);
        if self.sq_tail.wrapping_sub(head) >= self.sq_entries {
            // Full: hand the kernel what is queued (it takes it all, as the
            // ring was made with SUBMIT_ALL) and go on.
            let _ = self.enter(0, None, None);
        }
        let index = (self.sq_tail & self.sq_mask) as usize;
        // SAFETY: `index` is below `sq_entries`: inside the entries' mapping,
        // an entry the kernel has consumed (checked above).
        unsafe { self.sqes.ptr.cast::<Sqe>().add(index).write(sqe) };
        self.sq_tail = self.sq_tail.wrapping_add(1);
        // SAFETY: as above; the release publishes the entry written.
        unsafe { &*self.sq_tail_word }.store(self.sq_tail, Ordering::Release);
        self.unsubmitted += 1;
    }

    /// Queues `io` on `fd` with the buffer `buf..buf+len` and the socket
    /// flags `flags`; `op` receives its result.
    ///
    /// # Safety
    /// `op` and the buffer stay where they are, untouched by anyone else,
    /// until `op.res` is set (the caller parks until then).
    pub(crate) unsafe fn start(
        &mut self,
        io: Io,
        fd: libc::c_int,
        buf: *mut u8,
        len: usize,
        flags: libc::c_int,
        op: &Op,
    ) {
        self.push(Sqe {
            opcode: match io {
                Io::Recv => OP_RECV,
                Io::Send => OP_SEND,
            },
            fd,
            addr: buf as u64,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            op_flags: flags as u32,
            user_data: op.tag(),
            ..Sqe::default()
        });
    }

    /// Asks the kernel to cancel `op` (its completion still comes).
    pub(crate) fn cancel(&mut self, op: &Op) {
        self.push(Sqe {
            opcode: OP_ASYNC_CANCEL,
            fd: -1,
            addr: op.tag(),
            user_data: CANCEL_TAG,
            ..Sqe::default()
        });
    }

    /// Watches `epoll` (the reactor's) for readability: a completion tagged
    /// `EPOLL_TAG` each time it becomes readable.
    pub(crate) fn watch(&mut self, epoll: libc::c_int) {
        self.push(Sqe {
            opcode: OP_POLL_ADD,
            fd: epoll,
            len: POLL_ADD_MULTI,
            op_flags: libc::POLLIN as u32,
            user_data: EPOLL_TAG,
            ..Sqe::default()
        });
    }

    /// Submits what is queued; with `wait`, also waits until a completion
    /// comes or `wait`'s timeout (`None` in it: forever) passes. With
    /// `sigmask`, the wait is made with that signal mask. Err: EINTR (a
    /// handler ran) or the kernel's failure; ETIME (the timeout) is Ok.
    pub(crate) fn enter(
        &mut self,
        min_complete: u32,
        wait: Option<Option<Duration>>,
        sigmask: Option<u64>,
    ) -> io::Result<()> {
        let ts = wait.flatten().map(crate::sys::to_timespec);
        let arg = GeteventsArg {
            sigmask: sigmask.as_ref().map_or(0, |m| ptr::from_ref(m) as u64),
            sigmask_sz: 8,
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(0, |t| ptr::from_ref(t) as u64),
        };
        let (min, flags) = match wait {
            Some(_) => (min_complete, ENTER_GETEVENTS | ENTER_EXT_ARG),
            None => (0, ENTER_EXT_ARG),
        };
        let submit = self.unsubmitted;
        // SAFETY: our ring fd; `arg` and what it points at live across the call.
        let r = self.fd.with(|fd| unsafe {
            crate::sys::raw_syscall!(
                SYS_IO_URING_ENTER,
                fd,
                submit,
                min,
                flags,
                &arg,
                size_of::<GeteventsArg>(),
            )
        });
        if r >= 0 {
            self.unsubmitted -= (r as u32).min(submit);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A wait that timed out or was interrupted may have submitted first:
        // what the kernel consumed is gone from the queue.
        // SAFETY: `sq_head` points into the live mapping.
        let head = unsafe { &*self.sq_head }.load(Ordering::Acquire);
        self.unsubmitted = self.sq_tail.wrapping_sub(head);
        match e.raw_os_error() {
            Some(libc::ETIME) => Ok(()),
            _ => Err(e),
        }
    }

    /// Writes every completed operation's result into its `Op` and hands its
    /// waiter to `woke`; returns whether the epoll instance became readable
    /// and whether its watch ended (to be made again).
    pub(crate) fn reap(&mut self, mut woke: impl FnMut(super::task::Unparker)) -> (bool, bool) {
        let (mut epoll, mut rewatch) = (false, false);
        // SAFETY: both point into the live mapping.
        let (head_word, tail_word) = unsafe { (&*self.cq_head, &*self.cq_tail) };
        let mut head = head_word.load(Ordering::Relaxed);
        let tail = tail_word.load(Ordering::Acquire);
        while head != tail {
            // SAFETY: an entry the kernel published (below the acquired tail).
            let cqe = unsafe { &*self.cqes.add((head & self.cq_mask) as usize) };
            match cqe.user_data {
                EPOLL_TAG => {
                    epoll = true;
                    rewatch |= cqe.flags & CQE_F_MORE == 0;
                }
                CANCEL_TAG => {}
                tag => {
                    // SAFETY: an operation's tag is its `Op`, which stays
                    // in place until its result is set (`start`'s contract).
                    let op = unsafe { &*(tag as *const Op) };
                    op.res.set(Some(cqe.res));
                    if let Some(who) = op.who.take() {
                        woke(who);
                    }
                }
            }
            head = head.wrapping_add(1);
        }
        head_word.store(head, Ordering::Release);
        (epoll, rewatch)
    }
}

// SAFETY: the raw pointers point into mappings the Ring owns; a Ring is used
// by one thread at a time (its scheduler's), as `SINGLE_ISSUER` requires.
unsafe impl Send for Ring {}
