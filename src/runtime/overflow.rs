//! Stack overflow reports: a SIGSEGV/SIGBUS handler on an alternate signal stack
//! recognises a fault in the running coroutine's guard gap, names the coroutine,
//! and aborts. Every other fault, and a SIGSEGV/SIGBUS another process or
//! thread sends, goes to whoever handled it before us.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Once;

use super::scheduler::current_task;
use super::task::Task;
use crate::sys::{diag, fmt_u64, page_size};

struct Previous(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);
// SAFETY: written once inside `INSTALL.call_once`, before the handler that reads
// it is installed; read-only afterwards.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new([MaybeUninit::zeroed(); 2]));
static INSTALL: Once = Once::new();
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

pub(crate) fn install_handler() {
    INSTALL.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: a zeroed sigaction is valid; we fill the fields we use. The
            // previous action is stored before our handler can run.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let prev = (*PREVIOUS.0.get())[i].as_mut_ptr();
                libc::sigaction(sig, &action, prev);
            }
        }
    });
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo for SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    // Sent by a process (kill, tgkill, raise, sigqueue: si_code <= 0), not
    // raised by a fault: no instruction runs again to re-raise it, and
    // si_addr holds the sender's pid and uid.
    let sent = code <= 0;
    if !sent {
        // SAFETY: as above; a fault's siginfo carries si_addr.
        let addr = unsafe { (*info).si_addr() } as usize;
        if let Some(task) = current_task() {
            if (task.guard.0..task.guard.1).contains(&addr) {
                report_and_abort(task);
            }
        }
    }
    let index = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: PREVIOUS was filled before this handler was installed.
    let prev = unsafe { (*PREVIOUS.0.get())[index].assume_init_ref() };
    match prev.sa_sigaction {
        // The kernel drops a sent signal that is ignored (a fault it delivers
        // anyway, by the default action: below).
        libc::SIG_IGN if sent => {}
        libc::SIG_DFL | libc::SIG_IGN => {
            // Restore the default action: a fault's instruction runs again and
            // the kernel kills the process with the original signal; a sent
            // signal is sent again to this thread, where it stays pending (it is
            // blocked while its handler runs) until this handler returns.
            // SAFETY: resetting a signal's disposition to default is always
            // valid; tgkill to the calling thread, by async-signal-safe calls.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                if sent {
                    crate::sys::raw_syscall!(
                        libc::SYS_tgkill,
                        libc::getpid(),
                        crate::sys::raw_syscall!(libc::SYS_gettid),
                        sig,
                    );
                }
            }
        }
        handler if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so it has
            // this signature and expects exactly these arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        }
        handler => {
            // SAFETY: a handler installed without SA_SIGINFO takes just the signal.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
    }
}

/// Prints `patchall: coroutine <id> "<name>" overflowed its <size> stack` and aborts.
/// Async-signal-safe: raw writes, no allocation.
pub(crate) fn report_and_abort(task: &Task) -> ! {
    let mut id = [0u8; 20];
    let mut size = [0u8; 20];
    let name = task.name.as_deref().unwrap_or("<unnamed>");
    let (amount, unit): (u64, &[u8]) = if task.stack_size % 1024 == 0 {
        ((task.stack_size / 1024) as u64, b" KiB")
    } else {
        (task.stack_size as u64, b" byte")
    };
    diag(&[
        b"patchall: coroutine ",
        fmt_u64(task.id, &mut id),
        b" \"",
        name.as_bytes(),
        b"\" overflowed its ",
        fmt_u64(amount, &mut size),
        unit,
        b" stack\n",
    ]);
    std::process::abort()
}

/// An alternate signal stack we installed for this thread (none if the thread had
/// one already, as Rust's main thread and std threads do).
pub(crate) struct AltStack {
    map: usize,
    len: usize,
}

const ALT_SIZE: usize = 64 * 1024;

impl AltStack {
    pub(crate) fn ensure() -> Option<AltStack> {
        // SAFETY: `stack_t` is a pointer and integers: all-zero is valid.
        let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: querying the current alternate stack writes only into `old`.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return None;
        }
        let page = page_size();
        let len = ALT_SIZE + page;
        // SAFETY: a fresh private mapping; its lowest page becomes a guard.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the first page lies inside the mapping we own; `stack` describes
        // the rest of it, which stays mapped until `Drop` disables it again.
        unsafe {
            libc::mprotect(map, page, libc::PROT_NONE);
            let stack = libc::stack_t {
                ss_sp: map.cast::<u8>().add(page).cast(),
                ss_flags: 0,
                ss_size: ALT_SIZE,
            };
            libc::sigaltstack(&stack, std::ptr::null_mut());
        }
        Some(AltStack {
            map: map as usize,
            len,
        })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disable the alternate stack before unmapping its memory; this
        // runs on the thread that installed it (the scheduler is thread-local).
        unsafe {
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, std::ptr::null_mut());
            libc::munmap(self.map as *mut _, self.len);
        }
    }
}
