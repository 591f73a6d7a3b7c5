//! System calls made behind our hooks: libc's `syscall()` called by the
//! program, and calls trapped by Syscall User Dispatch (`runtime::dispatch`),
//! which glibc makes internally (`__read` under `fgets`) or the program inline.
//!
//! `emulate` maps a call number to the hook of the libc function that makes
//! it, so errno, partial transfers, EINTR and restart rules, O_NONBLOCK hiding
//! and the protection of the runtime's own fds are exactly the hooks'. Every
//! other number runs at once through the gate. Kernel-ABI arguments that
//! differ from libc's (8-byte signal sets, `pselect6`'s packed mask) are
//! converted first.

use libc::{c_int, c_long, c_uint, c_ulong, c_void, sigset_t, size_t};

use super::{fd, file, io, net, poll, process, sched, sigwait, sleep, transfer};
use crate::runtime;
use crate::runtime::dispatch::{self, Emulated};
use crate::sys::{errno, gate, set_errno};

/// A libc-style result (-1 and errno) as the kernel's (-errno).
fn raw(r: c_long) -> c_long {
    if r == -1 { -c_long::from(errno()) } else { r }
}

/// A kernel-ABI signal set (`size` must be 8, as the kernel checks) as
/// libc's: Ok(None) for a null pointer.
///
/// # Safety
/// A non-null `p` points at 8 readable bytes.
unsafe fn kernel_sigset(p: c_long, size: c_long) -> Result<Option<sigset_t>, c_long> {
    if p == 0 {
        return Ok(None);
    }
    if size != 8 {
        return Err(-c_long::from(libc::EINVAL));
    }
    // SAFETY: sigset_t is plain data; zeroed is the empty set.
    let mut set: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's 8 bytes into the first 8 of ours.
    unsafe {
        (&raw mut set)
            .cast::<u64>()
            .write((p as *const u64).read_unaligned())
    };
    Ok(Some(set))
}

fn set_ptr(set: &Option<sigset_t>) -> *const sigset_t {
    set.as_ref()
        .map_or(std::ptr::null(), |s| s as *const sigset_t)
}

/// `futex(2)`: waits park the coroutine on the parking lot (`runtime::futex`).
fn futex(a: [c_long; 6]) -> c_long {
    // SAFETY: the caller's futex arguments, as made.
    let r = unsafe {
        runtime::futex::call(
            a[0] as *mut u32,
            a[1] as c_int,
            a[2] as u32,
            a[3] as *const libc::timespec,
            a[4] as *mut u32,
            a[5] as u32,
        )
    };
    r.unwrap_or_else(|e| -c_long::from(e))
}

/// The result the system call `nr` with arguments `a` would have had, given
/// the hooks' treatment; None for a call that must be made in place by the
/// caller (`in_place`). errno is left as it was: a system call never sets it.
/// The runtime's SIGSYS handler gets it as its `dispatch::Emulate`.
pub(crate) fn emulate(nr: c_long, a: [c_long; 6]) -> Option<Emulated> {
    if dispatch::in_place(nr, &a) {
        return None;
    }
    let saved = errno();
    let mut at_once = false;
    // SAFETY: each arm passes the program's own arguments to the hook of the
    // libc call that makes this system call, with the types the kernel gives
    // them; the hooks have the libc functions' contracts, which are the
    // system calls'.
    let result = unsafe { dispatch_call(nr, a, &mut at_once) };
    set_errno(saved);
    Some(Emulated { result, at_once })
}

/// # Safety
/// `a` are the arguments of system call `nr`, valid for it.
unsafe fn dispatch_call(nr: c_long, a: [c_long; 6], at_once: &mut bool) -> c_long {
    let int = |i: usize| a[i] as c_int;
    let ptr = |i: usize| a[i] as *mut c_void;
    // SAFETY: as `emulate` says, for every arm.
    unsafe {
        match nr {
            libc::SYS_read => raw(io::read(int(0), ptr(1), a[2] as size_t) as c_long),
            libc::SYS_write => raw(io::write(int(0), ptr(1), a[2] as size_t) as c_long),
            libc::SYS_readv => raw(io::readv(int(0), ptr(1).cast(), int(2)) as c_long),
            libc::SYS_writev => raw(io::writev(int(0), ptr(1).cast(), int(2)) as c_long),
            libc::SYS_pread64 => raw(file::pread(int(0), ptr(1), a[2] as size_t, a[3]) as c_long),
            libc::SYS_pwrite64 => raw(file::pwrite(int(0), ptr(1), a[2] as size_t, a[3]) as c_long),
            libc::SYS_preadv => raw(file::preadv(int(0), ptr(1).cast(), int(2), a[3]) as c_long),
            libc::SYS_pwritev => raw(file::pwritev(int(0), ptr(1).cast(), int(2), a[3]) as c_long),
            libc::SYS_recvfrom => raw(net::recvfrom(
                int(0),
                ptr(1),
                a[2] as size_t,
                int(3),
                ptr(4).cast(),
                ptr(5).cast(),
            ) as c_long),
            libc::SYS_sendto => raw(net::sendto(
                int(0),
                ptr(1),
                a[2] as size_t,
                int(3),
                ptr(4).cast(),
                a[5] as libc::socklen_t,
            ) as c_long),
            libc::SYS_recvmsg => raw(net::recvmsg(int(0), ptr(1).cast(), int(2)) as c_long),
            libc::SYS_sendmsg => raw(net::sendmsg(int(0), ptr(1).cast(), int(2)) as c_long),
            libc::SYS_recvmmsg => {
                raw(
                    net::recvmmsg(int(0), ptr(1).cast(), a[2] as c_uint, int(3), ptr(4).cast())
                        as c_long,
                )
            }
            libc::SYS_sendmmsg => {
                raw(net::sendmmsg(int(0), ptr(1).cast(), a[2] as c_uint, int(3)) as c_long)
            }
            libc::SYS_accept => raw(net::accept(int(0), ptr(1).cast(), ptr(2).cast()) as c_long),
            libc::SYS_accept4 => {
                raw(net::accept4(int(0), ptr(1).cast(), ptr(2).cast(), int(3)) as c_long)
            }
            libc::SYS_connect => {
                raw(net::connect(int(0), ptr(1).cast(), a[2] as libc::socklen_t) as c_long)
            }
            libc::SYS_sendfile => {
                raw(transfer::sendfile(int(0), int(1), ptr(2).cast(), a[3] as size_t) as c_long)
            }
            libc::SYS_splice => raw(transfer::splice(
                int(0),
                ptr(1).cast(),
                int(2),
                ptr(3).cast(),
                a[4] as size_t,
                a[5] as c_uint,
            ) as c_long),
            libc::SYS_tee => {
                raw(transfer::tee(int(0), int(1), a[2] as size_t, a[3] as c_uint) as c_long)
            }
            libc::SYS_wait4 => {
                raw(process::wait4(int(0), ptr(1).cast(), int(2), ptr(3).cast()) as c_long)
            }
            // With a rusage to fill, which libc's waitid has no place for.
            libc::SYS_waitid if a[4] != 0 => gate::syscall6(nr, a),
            libc::SYS_waitid => raw(process::waitid(
                a[0] as libc::idtype_t,
                a[1] as libc::id_t,
                ptr(2).cast(),
                int(3),
            ) as c_long),
            libc::SYS_execve => {
                raw(process::execve(ptr(0).cast(), ptr(1).cast(), ptr(2).cast()) as c_long)
            }
            libc::SYS_nanosleep => raw(sleep::nanosleep(ptr(0).cast(), ptr(1).cast()) as c_long),
            // Returns the error number itself.
            libc::SYS_clock_nanosleep => -c_long::from(sleep::clock_nanosleep(
                int(0),
                int(1),
                ptr(2).cast(),
                ptr(3).cast(),
            )),
            libc::SYS_poll => {
                raw(poll::poll(ptr(0).cast(), a[1] as libc::nfds_t, int(2)) as c_long)
            }
            libc::SYS_ppoll => match kernel_sigset(a[3], a[4]) {
                Ok(mask) => raw(poll::ppoll(
                    ptr(0).cast(),
                    a[1] as libc::nfds_t,
                    ptr(2).cast(),
                    set_ptr(&mask),
                ) as c_long),
                Err(e) => e,
            },
            libc::SYS_select => raw(poll::select(
                int(0),
                ptr(1).cast(),
                ptr(2).cast(),
                ptr(3).cast(),
                ptr(4).cast(),
            ) as c_long),
            libc::SYS_pselect6 => {
                // The sixth argument packs the mask: { const sigset_t *, size_t }.
                let packed = a[5] as *const [c_long; 2];
                let (p, size) = if packed.is_null() {
                    (0, 8)
                } else {
                    ((*packed)[0], (*packed)[1])
                };
                match kernel_sigset(p, size) {
                    Ok(mask) => raw(poll::pselect(
                        int(0),
                        ptr(1).cast(),
                        ptr(2).cast(),
                        ptr(3).cast(),
                        ptr(4).cast(),
                        set_ptr(&mask),
                    ) as c_long),
                    Err(e) => e,
                }
            }
            libc::SYS_epoll_wait => {
                raw(poll::epoll_wait(int(0), ptr(1).cast(), int(2), int(3)) as c_long)
            }
            libc::SYS_epoll_pwait => match kernel_sigset(a[4], a[5]) {
                Ok(mask) => {
                    raw(
                        poll::epoll_pwait(int(0), ptr(1).cast(), int(2), int(3), set_ptr(&mask))
                            as c_long,
                    )
                }
                Err(e) => e,
            },
            libc::SYS_epoll_pwait2 => match kernel_sigset(a[4], a[5]) {
                Ok(mask) => raw(poll::epoll_pwait2(
                    int(0),
                    ptr(1).cast(),
                    int(2),
                    ptr(3).cast(),
                    set_ptr(&mask),
                ) as c_long),
                Err(e) => e,
            },
            libc::SYS_close => raw(fd::close(int(0)) as c_long),
            libc::SYS_close_range => {
                raw(fd::close_range(a[0] as c_uint, a[1] as c_uint, int(2)) as c_long)
            }
            libc::SYS_dup2 => raw(fd::dup2(int(0), int(1)) as c_long),
            libc::SYS_dup3 => raw(fd::dup3(int(0), int(1), int(2)) as c_long),
            libc::SYS_fcntl => raw(fd::fcntl(int(0), int(1), a[2] as c_ulong) as c_long),
            libc::SYS_ioctl => raw(fd::ioctl(int(0), a[1] as c_ulong, ptr(2)) as c_long),
            libc::SYS_openat => {
                raw(file::openat(int(0), ptr(1).cast(), int(2), a[3] as c_uint) as c_long)
            }
            libc::SYS_fsync => raw(file::fsync(int(0)) as c_long),
            libc::SYS_fdatasync => raw(file::fdatasync(int(0)) as c_long),
            libc::SYS_sched_yield => raw(sched::sched_yield() as c_long),
            libc::SYS_pause => raw(sigwait::pause() as c_long),
            libc::SYS_rt_sigsuspend => match kernel_sigset(a[0], a[1]) {
                Ok(Some(mask)) => raw(sigwait::sigsuspend(&mask) as c_long),
                Ok(None) => -c_long::from(libc::EFAULT),
                Err(e) => e,
            },
            libc::SYS_rt_sigtimedwait => match kernel_sigset(a[0], a[3]) {
                Ok(Some(set)) => {
                    raw(sigwait::sigtimedwait(&set, ptr(1).cast(), ptr(2).cast()) as c_long)
                }
                Ok(None) => -c_long::from(libc::EFAULT),
                Err(e) => e,
            },
            // glibc's own masking (all signals blocked around `clone`, in
            // `fork`, `posix_spawn`, `abort`) goes to the OS thread, as
            // without dispatch, but never blocks SIGSYS: a trap while it is
            // blocked would kill the process.
            libc::SYS_rt_sigprocmask
                if a[1] != 0 && a[3] == 8 && a[0] != libc::SIG_UNBLOCK as c_long =>
            {
                let set = (a[1] as *const u64).read_unaligned() & !(1 << (libc::SIGSYS - 1));
                let mut b = a;
                b[1] = &set as *const u64 as c_long;
                gate::syscall6(nr, b)
            }
            libc::SYS_futex => futex(a),
            _ => {
                *at_once = true;
                gate::syscall6(nr, a)
            }
        }
    }
}

hook! {
    /// `syscall(2)`: in a coroutine, the number's hook (`emulate`), so that an
    /// explicit raw call waits as cooperatively as the libc function would,
    /// with or without Syscall User Dispatch; elsewhere libc's. Variadic in C:
    /// on x86_64 and aarch64 reading six argument registers is ABI-correct
    /// (unused ones hold garbage that no call reads).
    fn syscall(nr: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long as real {
        if !runtime::in_coroutine() || dispatch::in_hook() {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(nr, a1, a2, a3, a4, a5, a6) };
        }
        match emulate(nr, [a1, a2, a3, a4, a5, a6]).map(|e| e.result) {
            Some(r) if (-4095..0).contains(&r) => {
                set_errno(-r as c_int);
                -1
            }
            Some(r) => r,
            // SAFETY: forwarding the caller's arguments: a clone or vfork
            // made where the program made it, as natively.
            None => unsafe { real(nr, a1, a2, a3, a4, a5, a6) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sigsets_convert_and_check_their_size() {
        let bits: u64 = 1 << (libc::SIGUSR1 - 1);
        // SAFETY: `bits` is 8 readable bytes.
        let set = unsafe { kernel_sigset(&bits as *const u64 as c_long, 8) }
            .unwrap()
            .unwrap();
        // SAFETY: `set` is an initialised sigset_t.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGUSR1) }, 1);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGUSR2) }, 0);
        // SAFETY: a null set is never read.
        assert!(matches!(unsafe { kernel_sigset(0, 8) }, Ok(None)));
        assert_eq!(
            // SAFETY: `bits` is 8 readable bytes; the size is refused first.
            unsafe { kernel_sigset(&bits as *const u64 as c_long, 16) }.unwrap_err(),
            -c_long::from(libc::EINVAL)
        );
    }

    #[test]
    fn other_numbers_run_through_the_gate() {
        // Outside a coroutine every number is the kernel's, errno untouched.
        set_errno(1234);
        let pid = emulate(libc::SYS_getpid, [0; 6]).unwrap();
        assert_eq!(pid.result, c_long::from(std::process::id()));
        assert!(pid.at_once);
        let close = emulate(libc::SYS_close, [-1, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(close.result, -c_long::from(libc::EBADF));
        assert!(!close.at_once, "close is the hook's");
        assert_eq!(errno(), 1234);
    }

    #[test]
    fn the_hooks_register_their_treatment_when_a_coroutine_is_spawned() {
        crate::spawn(|| {}).unwrap().join().unwrap();
        let registered = dispatch::registered().expect("registered at spawn");
        assert_eq!(registered as *const (), emulate as *const ());
    }
}
