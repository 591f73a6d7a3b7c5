//! Child processes: the wait family, `fork`, the exec family, `posix_spawn`,
//! `system`.
//!
//! **Waits.** In a coroutine, a blocking wait for one child's exit
//! (`waitpid`/`wait4` with pid > 0, `waitid` with P_PID or P_PIDFD) parks on a
//! pidfd (Linux 5.3), which becomes readable when the child exits, then makes
//! the real call with WNOHANG added, which returns at once; it also rechecks
//! on a backoff timer (1 ms doubling to 1 s). A pidfd says nothing of stops:
//! waits that ask for stops or continues (WUNTRACED, WSTOPPED, WCONTINUED), or
//! for a child someone traces (ptrace stops are reported without asking),
//! run on the offload pool, whose threads may wait for this process's
//! children. So do waits for any child or a process group (`wait`, `wait3`,
//! pid <= 0, P_ALL, P_PGID), and any wait where no pidfd can be had. On the
//! pool a signal handler does not interrupt the wait (no EINTR: as if
//! restarted), and the pool thread stays blocked until a child changes state.
//! WNOHANG calls and calls outside coroutines are libc's.
//!
//! **fork.** The child keeps none of the parent's runtime (see
//! `runtime::after_fork`): the code that called fork goes on as the child's
//! only thread, on a coroutine's stack or not; hooks treat it as plain code
//! (they forward), and it gets a fresh scheduler and reactor if it spawns
//! again. The parent's other coroutines never run in the child; when the
//! forking coroutine ends, the child exits with status 0, as a process whose
//! last thread ends. Every fd is now shared with the other process, so none is
//! ours to make non-blocking any more (in the parent, those without
//! FD_CLOEXEC, which the child keeps across an exec).
//!
//! **vfork is a fork here.** A vfork child borrows the parent's memory and
//! stack until it execs or exits, and runs hooks meanwhile (Python's
//! `subprocess` closes and dup2s fds in it): a `close` there would drop the
//! parent's reactor registrations and wake its coroutines with EBADF. Nor can
//! a hook call the real `vfork`: the child, returning through the hook's
//! frame and calling on, overwrites the frame the parent then returns
//! through. So `vfork` runs `fork`, which POSIX allows (a vfork child may
//! only exec or `_exit`, and both behave the same after a fork); the price is
//! copying the parent's page tables. `posix_spawn` (glibc's `system`,
//! `popen`, Rust's `Command`) clones inside glibc, where no hook runs.
//!
//! **exec.** patchall's own fds (epoll, eventfd, signalfd, pidfd) are all close-on-exec.
//! Before a program is exec'd (the exec family here, `posix_spawn`), every fd
//! without FD_CLOEXEC on which we set O_NONBLOCK gets the user's flags back,
//! as does the source of a `posix_spawn_file_actions_adddup2`. The open file
//! is shared with the parent: if the parent goes on using it in a coroutine,
//! its calls there block the thread while they wait (the results stay right;
//! the concurrency on that fd is what is lost). `execl`, `execlp` and `execle`
//! are variadic without bound and cannot be hooked; a program that uses them
//! after `fork` passes our O_NONBLOCK on, as do glibc's `system` and `popen`,
//! which call its internal `posix_spawn`.

use std::time::{Duration, Instant};

use libc::{
    c_char, c_int, idtype_t, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t, siginfo_t,
};

use super::blocking::{self, offloaded};
use super::coroutine_guard;
use super::real::Guard;
use crate::fdtable::{self, Kind, Sharing};
use crate::runtime::ownfd::OwnFd;
use crate::runtime::{self, Direction, Family, Label};

/// Names a park for a child: `wait`, `waitpid`, `waitid`…
const WAIT: Label = Label::new("waitpid", Family::Process);
use crate::sys::{errno, set_errno};

/// First and longest pause between rechecks of a child parked on a pidfd.
const FIRST_RECHECK: Duration = Duration::from_millis(1);
const LAST_RECHECK: Duration = Duration::from_secs(1);

/// Whom a wait waits for.
#[derive(Clone, Copy)]
enum Whom {
    /// One child, by pid.
    Child(pid_t),
    /// One child, by the caller's pidfd.
    PidFd(c_int),
    /// Any child, or any of a process group.
    Any,
}

/// A blocking wait made in a coroutine. `attempt(options)` makes the real call
/// and gives Some(result) unless WNOHANG found nothing; `call()` makes the
/// real call as asked. `stops`: the options also ask for stops or continues.
fn wait_for(
    whom: Whom,
    options: c_int,
    stops: bool,
    mut attempt: impl FnMut(c_int) -> Option<c_int>,
    call: impl FnOnce() -> c_int,
) -> c_int {
    // A cancellation point, WNOHANG or not (glibc's wait4 and waitid).
    super::cancel::cancellation_point();
    if options & libc::WNOHANG != 0 {
        return call();
    }
    let Some(guard) = coroutine_guard() else {
        return call();
    };
    let pid = match whom {
        Whom::Any => return pooled(&guard, call),
        Whom::PidFd(fd) => pid_of(fd),
        Whom::Child(pid) => Some(pid),
    };
    if let Some(r) = attempt(options | libc::WNOHANG) {
        return r;
    }
    // A pidfd only reports the exit. Stops reach a waiting parent (with
    // WUNTRACED) or tracer (always): a pool thread's blocking wait sees them,
    // since any thread of the process may wait for its children.
    if stops || pid.is_some_and(traced) {
        return pooled(&guard, call);
    }
    let r = match whom {
        Whom::PidFd(fd) => park_on_pidfd(&guard, &|| fd, pid, options, &mut attempt),
        _ => match pid.and_then(pidfd_open) {
            Some(own) => {
                let r = park_on_pidfd(&guard, &|| own.raw(), pid, options, &mut attempt);
                let e = errno();
                fdtable::forget(own.raw());
                drop(own);
                set_errno(e);
                r
            }
            None => return pooled(&guard, call),
        },
    };
    r.unwrap_or_else(|| pooled(&guard, call))
}

fn pooled(guard: &Guard, call: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: `call` only passes the caller's arguments and out-pointers.
    unsafe { offloaded(guard, &WAIT, call) }
}

/// True if someone traces `pid` (its ptrace stops are reported to waits).
fn traced(pid: pid_t) -> bool {
    proc_field(&format!("/proc/{pid}/status"), "TracerPid:").is_some_and(|t| t != 0)
}

/// The pid behind a pidfd (its fdinfo's `Pid:`, -1 once reaped).
fn pid_of(pidfd: c_int) -> Option<pid_t> {
    proc_field(&format!("/proc/self/fdinfo/{pidfd}"), "Pid:").filter(|&p| p > 0)
}

/// The number after `field` in a /proc file. Leaves errno as it was.
fn proc_field(path: &str, field: &str) -> Option<pid_t> {
    let e = errno();
    let text = std::fs::read_to_string(path);
    set_errno(e);
    text.ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .parse()
        .ok()
}

/// A pidfd for `pid` (always close-on-exec), one of the runtime's own fds
/// (hidden from the program's close family). Leaves errno as it was.
fn pidfd_open(pid: pid_t) -> Option<OwnFd> {
    let e = errno();
    // SAFETY: pidfd_open takes a pid and flags, and returns a new fd.
    let fd = unsafe { crate::sys::raw_syscall!(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        set_errno(e);
        return None;
    }
    let own = OwnFd::adopt(fd as c_int);
    fdtable::created(own.raw(), Kind::Stream, false);
    set_errno(e);
    Some(own)
}

/// Parks until the child behind `fd` has exited, then reaps it; rechecks on a
/// backoff timer (1 ms doubling to 1 s), in case it started being traced.
/// None: it is traced now, make the call on the pool.
/// `fd()` is the pidfd's number now: ours moves if the program `dup2`s onto it
/// (which wakes this wait with EBADF).
fn park_on_pidfd(
    guard: &Guard,
    fd: &dyn Fn() -> c_int,
    pid: Option<pid_t>,
    options: c_int,
    attempt: &mut dyn FnMut(c_int) -> Option<c_int>,
) -> Option<c_int> {
    let mut pause = FIRST_RECHECK;
    loop {
        let at = fd();
        match blocking::wait(
            guard,
            &WAIT,
            at,
            Direction::Read,
            Some(Instant::now() + pause),
        ) {
            Ok(()) => {}
            Err(libc::EBADF) if fd() != at => {}
            Err(libc::EAGAIN) if pid.is_some_and(traced) => return None,
            Err(libc::EAGAIN) => pause = (pause * 2).min(LAST_RECHECK),
            Err(e) => {
                set_errno(e);
                return Some(-1);
            }
        }
        if let Some(r) = attempt(options | libc::WNOHANG) {
            return Some(r);
        }
    }
}

fn whom(pid: pid_t) -> Whom {
    if pid > 0 { Whom::Child(pid) } else { Whom::Any }
}

/// Some(r) unless `r` is WNOHANG's "nothing yet" (0).
fn reaped(r: pid_t) -> Option<pid_t> {
    (r != 0).then_some(r)
}

hook! {
    /// `waitpid(2)`: in a coroutine, parks until the child changes state.
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t as real {
        let stops = options & (libc::WUNTRACED | libc::WCONTINUED) != 0;
        wait_for(
            whom(pid),
            options,
            stops,
            // SAFETY: the caller's arguments, with WNOHANG added to the options.
            |o| reaped(unsafe { real(pid, status, o) }),
            // SAFETY: forwarding the caller's arguments.
            || unsafe { real(pid, status, options) },
        )
    }
}

alias! {
    /// glibc's exported alias of `waitpid`.
    fn __waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t = waitpid
}

hook! {
    /// `wait4(2)`.
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut libc::rusage) -> pid_t as real {
        let stops = options & (libc::WUNTRACED | libc::WCONTINUED) != 0;
        wait_for(
            whom(pid),
            options,
            stops,
            // SAFETY: the caller's arguments, with WNOHANG added to the options.
            |o| reaped(unsafe { real(pid, status, o, usage) }),
            // SAFETY: forwarding the caller's arguments.
            || unsafe { real(pid, status, options, usage) },
        )
    }
}

hook! {
    /// `wait(2)`: any child, so on the offload pool in a coroutine.
    fn wait(status: *mut c_int) -> pid_t as real {
        // SAFETY: forwarding the caller's argument.
        wait_for(Whom::Any, 0, false, |_| None, || unsafe { real(status) })
    }
}

hook! {
    /// `wait3(2)`: any child, so on the offload pool in a coroutine.
    fn wait3(status: *mut c_int, options: c_int, usage: *mut libc::rusage) -> pid_t as real {
        // SAFETY: forwarding the caller's arguments.
        wait_for(Whom::Any, options, false, |_| None, || unsafe { real(status, options, usage) })
    }
}

hook! {
    /// `waitid(2)`: P_PID and P_PIDFD park on a pidfd in a coroutine.
    fn waitid(idtype: idtype_t, id: libc::id_t, infop: *mut siginfo_t, options: c_int) -> c_int as real {
        let whom = match idtype {
            libc::P_PID => Whom::Child(id as pid_t),
            libc::P_PIDFD => Whom::PidFd(id as c_int),
            _ => Whom::Any,
        };
        let stops = options & (libc::WSTOPPED | libc::WCONTINUED) != 0;
        let attempt = |o: c_int| {
            // WNOHANG's "nothing yet" is a zero si_pid, which the kernel
            // writes; with no infop of the caller's, ask into our own first,
            // without reaping.
            // SAFETY: an all-zero siginfo_t is valid.
            let mut own: siginfo_t = unsafe { std::mem::zeroed() };
            let probe = if infop.is_null() { &mut own as *mut siginfo_t } else { infop };
            let extra = if infop.is_null() { libc::WNOWAIT } else { 0 };
            // SAFETY: the caller's arguments, or our own siginfo.
            let r = unsafe { real(idtype, id, probe, o | extra) };
            // SAFETY: the kernel wrote the siginfo (r == 0).
            if r == 0 && unsafe { (*probe).si_pid() } == 0 {
                return None;
            }
            if r != 0 || !infop.is_null() {
                return Some(r);
            }
            // SAFETY: the caller's arguments; a child is ready: returns at once.
            Some(unsafe { real(idtype, id, infop, o) })
        };
        // SAFETY: forwarding the caller's arguments.
        wait_for(whom, options, stops, attempt, || unsafe { real(idtype, id, infop, options) })
    }
}

hook! {
    /// `fork(2)`: the child starts over with no runtime of the parent's.
    fn fork() -> pid_t as real {
        let held = runtime::before_fork();
        // A coroutine with TLS of its own forks on its OS thread's descriptor:
        // the one glibc's thread lists (which the child rebuilds) hold.
        // SAFETY: no arguments.
        let (pid, e) = runtime::tls::on_carrier(|| (unsafe { real() }, errno()));
        if pid == 0 {
            runtime::offload::after_fork_child();
            runtime::after_fork(held, true);
            fdtable::sharing(Sharing::ForkChild);
        } else {
            runtime::after_fork(held, false);
            if pid > 0 {
                fdtable::sharing(Sharing::ForkParent);
            }
        }
        set_errno(e);
        pid
    }
}

alias! {
    /// glibc's exported alias of `fork`.
    fn __fork() -> pid_t = fork
}

alias! {
    /// `vfork(2)`, made a `fork` (see the module's documentation).
    fn vfork() -> pid_t = fork
}

alias! {
    /// glibc's exported alias of `vfork`.
    fn __vfork() -> pid_t = fork
}

/// Before a program replaces this one: the fds it keeps get the user's flags.
fn before_exec() {
    let e = errno();
    fdtable::sharing(Sharing::Exec);
    set_errno(e);
}

/// `before_exec`, then `call` (an exec or spawn) with a green thread's own
/// signal mask on the OS thread, which the new program inherits.
fn exec_with<R>(call: impl FnOnce() -> R) -> R {
    before_exec();
    runtime::signals::with_own_mask(call)
}

type Argv = *const *const c_char;

hook! {
    /// `execve(2)`.
    fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(path, argv, envp) })
    }
}

hook! {
    /// `execv(3)`.
    fn execv(path: *const c_char, argv: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(path, argv) })
    }
}

hook! {
    /// `execvp(3)`.
    fn execvp(file: *const c_char, argv: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(file, argv) })
    }
}

hook! {
    /// `execvpe(3)`.
    fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(file, argv, envp) })
    }
}

hook! {
    /// `fexecve(3)`.
    fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(fd, argv, envp) })
    }
}

hook! {
    /// `execveat(2)`.
    fn execveat(dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(dirfd, path, argv, envp, flags) })
    }
}

hook! {
    /// `posix_spawn(3)`: the new program keeps this process's fds without
    /// FD_CLOEXEC, so they get the user's flags first.
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: Argv, envp: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(pid, path, actions, attr, argv, envp) })
    }
}

hook! {
    /// `posix_spawnp(3)`.
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: Argv, envp: Argv) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        exec_with(|| unsafe { real(pid, file, actions, attr, argv, envp) })
    }
}

hook! {
    /// `popen(3)`. glibc spawns the shell with a `clone3` whose child starts
    /// on a stack of its own, which Syscall User Dispatch can only let run
    /// where it was made, with system calls allowed: nothing then traps until
    /// the coroutine's next hook, and the `fgets` that follows read the pipe
    /// blocking the OS thread. This hook is that next hook: the coroutine's
    /// calls trap again once it returns. The pipe glibc made inside is new to
    /// the fd table (its number may have meant something else): its facts are
    /// read on first use. The child keeps this process's fds as for
    /// `posix_spawn`.
    fn popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE as real {
        if !runtime::in_coroutine() {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(command, mode) };
        }
        // SAFETY: forwarding the caller's arguments.
        let f = exec_with(|| unsafe { real(command, mode) });
        if !f.is_null() {
            let e = errno();
            // SAFETY: a FILE popen just returned.
            fdtable::forget(unsafe { libc::fileno(f) });
            set_errno(e);
        }
        f
    }
}

hook! {
    /// `posix_spawn_file_actions_adddup2(3)`: `fd` will be handed to another
    /// program as `newfd`, so it gets the user's flags back now.
    fn posix_spawn_file_actions_adddup2(actions: *mut posix_spawn_file_actions_t, fd: c_int, newfd: c_int) -> c_int as real {
        let e = errno();
        fdtable::release(fd);
        set_errno(e);
        // SAFETY: forwarding the caller's arguments.
        unsafe { real(actions, fd, newfd) }
    }
}

/// SIGINT's and SIGQUIT's actions before the first of the `system` calls now
/// running ignored them, and how many run.
static SYSTEM_CALLERS: std::sync::Mutex<(usize, Option<[libc::sigaction; 2]>)> =
    std::sync::Mutex::new((0, None));

hook! {
    /// `system(3)`. glibc's waits for the shell with an internal `waitpid`
    /// that no hook sees, blocking the OS thread and every coroutine on it. In
    /// a coroutine this one does what glibc's does — SIGINT and SIGQUIT
    /// ignored while any `system` runs, SIGCHLD blocked, `/bin/sh -c` spawned
    /// with the caller's mask and those two signals at their default — through
    /// the hooked `posix_spawn` and `waitpid`, so the wait parks. Outside a
    /// coroutine, and for a null command (is there a shell?), it is glibc's.
    fn system(cmd: *const c_char) -> c_int as real {
        if cmd.is_null() || !runtime::in_coroutine() {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(cmd) };
        }
        // SAFETY: a coroutine's call with the caller's NUL-terminated command.
        unsafe { system_parked(cmd) }
    }
}

/// `system` in a coroutine (see the hook).
///
/// # Safety
/// `cmd` is a NUL-terminated string.
unsafe fn system_parked(cmd: *const c_char) -> c_int {
    // SAFETY: zeroed sigaction/sigset_t/posix_spawnattr_t are valid to fill in;
    // every pointer below names one of these locals or a static C string, and
    // the calls are the hooked libc functions with their documented contracts.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut ignore.sa_mask);
        let before = {
            let mut callers = SYSTEM_CALLERS.lock().unwrap_or_else(|e| e.into_inner());
            if callers.0 == 0 {
                let mut old: [libc::sigaction; 2] = std::mem::zeroed();
                super::signal::sigaction(libc::SIGINT, &ignore, &mut old[0]);
                super::signal::sigaction(libc::SIGQUIT, &ignore, &mut old[1]);
                callers.1 = Some(old);
            }
            callers.0 += 1;
            callers.1
        };
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        super::signal::pthread_sigmask(libc::SIG_BLOCK, &chld, &mut mask);

        // The child's SIGINT and SIGQUIT go back to the default unless the
        // caller had them ignored, as glibc's.
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        for (sig, act) in [libc::SIGINT, libc::SIGQUIT]
            .into_iter()
            .zip(before.iter().flatten())
        {
            if act.sa_sigaction != libc::SIG_IGN {
                libc::sigaddset(&mut defaults, sig);
            }
        }
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawnattr_setsigdefault(&mut attr, &defaults);
        libc::posix_spawnattr_setsigmask(&mut attr, &mask);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        );
        let argv: [*const c_char; 4] = [c"sh".as_ptr(), c"-c".as_ptr(), cmd, std::ptr::null()];
        unsafe extern "C" {
            static environ: Argv;
        }
        let mut pid: pid_t = 0;
        let spawned = posix_spawn(
            &mut pid,
            c"/bin/sh".as_ptr(),
            std::ptr::null(),
            &attr,
            argv.as_ptr(),
            environ,
        );
        libc::posix_spawnattr_destroy(&mut attr);
        let mut status: c_int = 0;
        let result = if spawned != 0 {
            // As glibc: the status of a shell that could not run.
            127 << 8
        } else {
            loop {
                if waitpid(pid, &mut status, 0) >= 0 {
                    break status;
                }
                if errno() != libc::EINTR {
                    break -1;
                }
            }
        };
        let e = errno();
        {
            let mut callers = SYSTEM_CALLERS.lock().unwrap_or_else(|e| e.into_inner());
            callers.0 -= 1;
            if let (0, Some(old)) = (callers.0, callers.1) {
                super::signal::sigaction(libc::SIGINT, &old[0], std::ptr::null_mut());
                super::signal::sigaction(libc::SIGQUIT, &old[1], std::ptr::null_mut());
                callers.1 = None;
            }
        }
        super::signal::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        set_errno(e);
        result
    }
}
