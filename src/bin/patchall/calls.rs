//! What happens to each blocking libc call a program may import: the table
//! `patchall check` classifies a program's imports with.
//!
//! Every symbol `libpatchall.so` exports (but the C API's `pa_*`) is in a group
//! marked `hooked`, and nothing else is: tests/check.rs compares this table
//! with `nm -D --defined-only` of the built library, so it cannot drift from
//! src/hooks. The groups not hooked list calls that can wait where no hook
//! sees them. Self-contained (no `crate::`): the test includes this file.

/// What a call does, called in a coroutine (a green thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Parks the coroutine until it can complete; the others run meanwhile.
    Parks,
    /// Runs on the offload pool (or parks on a pidfd); the coroutine parks.
    Offloaded,
    /// File calls: as `--offload-files` says; the note is for `auto` (`always`:
    /// the pool; `off`: the thread blocks).
    Files,
    /// Cooperative with green threads on; without them glibc's own, which
    /// blocks only the OS thread that calls it, as natively.
    Green,
    /// Hooked for bookkeeping (fds, signals, threads, exec); never waits.
    Quiet,
    /// Blocks the OS thread in some uses only (named in the note).
    Sometimes,
    /// Not hooked: a wait blocks the OS thread and every green thread on it.
    Blocks,
}

impl Kind {
    /// The name `--json` gives it.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Parks => "parks",
            Kind::Offloaded => "offloaded",
            Kind::Files => "files",
            Kind::Green => "green",
            Kind::Quiet => "quiet",
            Kind::Sometimes => "sometimes",
            Kind::Blocks => "blocks",
        }
    }
}

pub struct Group {
    pub kind: Kind,
    /// Does libpatchall.so define these (interpose them)?
    pub hooked: bool,
    /// What happens, one line.
    pub what: &'static str,
    pub names: &'static [&'static str],
    /// What blocks is a system call that syscall dispatch
    /// (`--syscall-dispatch on`) traps and gives the hooks' treatment: it
    /// parks instead.
    pub caught: bool,
}

impl Group {
    const fn caught(mut self) -> Group {
        self.caught = true;
        self
    }
}

const fn group(
    kind: Kind,
    hooked: bool,
    what: &'static str,
    names: &'static [&'static str],
) -> Group {
    Group {
        kind,
        hooked,
        what,
        names,
        caught: false,
    }
}

use Kind::*;

pub static GROUPS: &[Group] = &[
    group(
        Parks,
        true,
        "parks until the fd is ready (a regular file: see files)",
        &[
            "read",
            "__read",
            "__read_chk",
            "readv",
            "write",
            "__write",
            "writev",
        ],
    ),
    group(
        Parks,
        true,
        "parks until the socket is ready",
        &[
            "recv",
            "__recv_chk",
            "recvfrom",
            "__recvfrom_chk",
            "recvmsg",
            "recvmmsg",
            "send",
            "__send",
            "sendto",
            "sendmsg",
            "sendmmsg",
            "accept",
            "accept4",
        ],
    ),
    group(
        Parks,
        true,
        "parks until the connection is made (or refused)",
        &["connect", "__connect"],
    ),
    group(
        Parks,
        true,
        "parks until the eventfd can be read or written",
        &["eventfd_read", "eventfd_write"],
    ),
    group(
        Parks,
        true,
        "parks on each side that can wait (a socket, a pipe)",
        &["sendfile", "sendfile64", "splice", "tee"],
    ),
    group(
        Parks,
        true,
        "parks on a timer",
        &[
            "sleep",
            "usleep",
            "nanosleep",
            "__nanosleep",
            "clock_nanosleep",
        ],
    ),
    group(
        Parks,
        true,
        "parks until a watched fd is ready or the timeout passes",
        &[
            "poll",
            "__poll",
            "__poll_chk",
            "ppoll",
            "__ppoll_chk",
            "select",
            "__select",
            "pselect",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
        ],
    ),
    group(
        Parks,
        true,
        "parks until a signal it waits for arrives",
        &[
            "sigsuspend",
            "__sigsuspend",
            "pause",
            "sigpause",
            "__sigpause",
            "__xpg_sigpause",
            "sigwait",
            "sigwaitinfo",
            "sigtimedwait",
            "__sigtimedwait",
        ],
    ),
    group(
        Parks,
        true,
        "lets the scheduler's other coroutines run first",
        &["sched_yield", "__sched_yield", "pthread_yield"],
    ),
    group(
        Parks,
        true,
        "spins 100 tries, then yields between tries",
        &["pthread_spin_lock"],
    ),
    group(
        Offloaded,
        true,
        "DNS lookup on the pool",
        &[
            "getaddrinfo",
            "getnameinfo",
            "gethostbyname",
            "gethostbyname_r",
            "gethostbyname2",
            "gethostbyname2_r",
            "gethostbyaddr",
            "gethostbyaddr_r",
        ],
    ),
    group(
        Offloaded,
        true,
        "one child: parks on a pidfd; others: on the pool",
        &["wait", "wait3", "wait4", "waitid", "waitpid", "__waitpid"],
    ),
    group(
        Offloaded,
        true,
        "/bin/sh -c through posix_spawn; the wait parks",
        &["system"],
    ),
    group(
        Quiet,
        true,
        "starts /bin/sh -c; its pipe's reads and writes park like any pipe's",
        &["popen"],
    ),
    group(
        Files,
        true,
        "inline when cached and it cannot wait, else on the pool",
        &[
            "open",
            "__open",
            "open64",
            "__open64",
            "openat",
            "openat64",
            "__open_2",
            "__open64_2",
            "__openat_2",
            "__openat64_2",
            "creat",
            "creat64",
        ],
    ),
    group(
        Files,
        true,
        "inline from the page cache (RWF_NOWAIT), else on the pool",
        &[
            "pread",
            "pread64",
            "__pread_chk",
            "__pread64_chk",
            "preadv",
            "preadv64",
        ],
    ),
    group(
        Files,
        true,
        "up to 64 KiB inline, more on the pool",
        &["pwrite", "pwrite64", "pwritev", "pwritev64"],
    ),
    group(Files, true, "on the pool", &["fsync", "fdatasync"]),
    group(
        Green,
        true,
        "a lock, condition, barrier or semaphore wait parks",
        &[
            "pthread_mutex_lock",
            "__pthread_mutex_lock",
            "pthread_mutex_timedlock",
            "pthread_mutex_clocklock",
            "pthread_rwlock_rdlock",
            "__pthread_rwlock_rdlock",
            "pthread_rwlock_timedrdlock",
            "pthread_rwlock_clockrdlock",
            "pthread_rwlock_wrlock",
            "__pthread_rwlock_wrlock",
            "pthread_rwlock_timedwrlock",
            "pthread_rwlock_clockwrlock",
            "pthread_cond_wait",
            "pthread_cond_timedwait",
            "pthread_cond_clockwait",
            "pthread_barrier_wait",
            "sem_wait",
            "sem_timedwait",
            "sem_clockwait",
            "mtx_lock",
            "mtx_timedlock",
            "cnd_wait",
            "cnd_timedwait",
        ],
    ),
    group(
        Green,
        true,
        "parks until the thread ends",
        &[
            "pthread_join",
            "pthread_timedjoin_np",
            "pthread_clockjoin_np",
        ],
    ),
    group(
        Green,
        true,
        "parks while another thread runs the init routine",
        &["pthread_once"],
    ),
    group(
        Quiet,
        true,
        "green threads: patchall's own",
        &[
            "pthread_create",
            "pthread_detach",
            "pthread_equal",
            "pthread_exit",
            "pthread_self",
            "pthread_cancel",
            "pthread_testcancel",
            "pthread_setcancelstate",
            "pthread_setcanceltype",
            "pthread_tryjoin_np",
            "pthread_kill",
            "pthread_sigqueue",
            "pthread_getattr_np",
            "pthread_getaffinity_np",
            "pthread_setaffinity_np",
            "pthread_getcpuclockid",
            "pthread_getname_np",
            "pthread_setname_np",
            "pthread_getschedparam",
            "pthread_setschedparam",
            "pthread_setschedprio",
            "pthread_key_create",
            "pthread_key_delete",
            "pthread_getspecific",
            "pthread_setspecific",
            "pthread_mutex_trylock",
            "__pthread_mutex_trylock",
            "pthread_mutex_unlock",
            "__pthread_mutex_unlock",
            "pthread_mutex_destroy",
            "__pthread_mutex_destroy",
            "pthread_rwlock_tryrdlock",
            "__pthread_rwlock_tryrdlock",
            "pthread_rwlock_trywrlock",
            "__pthread_rwlock_trywrlock",
            "pthread_rwlock_unlock",
            "__pthread_rwlock_unlock",
            "pthread_rwlock_destroy",
            "__pthread_rwlock_destroy",
            "pthread_cond_signal",
            "pthread_cond_broadcast",
            "pthread_cond_destroy",
            "pthread_barrier_destroy",
            "sem_trywait",
            "sem_post",
            "sem_getvalue",
            "mtx_trylock",
            "mtx_unlock",
            "cnd_signal",
            "cnd_broadcast",
            "cnd_destroy",
            "__pthread_register_cancel",
            "__pthread_register_cancel_defer",
            "__pthread_unregister_cancel",
            "__pthread_unregister_cancel_restore",
            "__pthread_unwind_next",
            "__libc_start_main",
        ],
    ),
    group(
        Quiet,
        true,
        "tracked in patchall's fd table",
        &[
            "socket",
            "socketpair",
            "shutdown",
            "setsockopt",
            "pipe",
            "pipe2",
            "eventfd",
            "timerfd_create",
            "signalfd",
            "inotify_init",
            "inotify_init1",
            "close",
            "__close",
            "close_range",
            "closefrom",
            "dup",
            "dup2",
            "__dup2",
            "dup3",
            "ioctl",
        ],
    ),
    group(
        Quiet,
        true,
        "handlers wrapped for EINTR; a mask per green thread",
        &[
            "sigaction",
            "__sigaction",
            "signal",
            "bsd_signal",
            "sysv_signal",
            "__sysv_signal",
            "siginterrupt",
            "pthread_sigmask",
            "sigprocmask",
            "sigblock",
            "sigsetmask",
            "siggetmask",
            "sighold",
            "sigrelse",
        ],
    ),
    group(
        Quiet,
        true,
        "the child starts clean; the user's fd flags come back",
        &[
            "fork",
            "__fork",
            "vfork",
            "__vfork",
            "execv",
            "execve",
            "execveat",
            "execvp",
            "execvpe",
            "fexecve",
            "posix_spawn",
            "posix_spawnp",
            "posix_spawn_file_actions_adddup2",
        ],
    ),
    group(
        Quiet,
        true,
        "with own TLS per green thread, run on the OS thread's descriptor (glibc's setxid walks its thread list)",
        &[
            "setuid",
            "setgid",
            "seteuid",
            "setegid",
            "setreuid",
            "setregid",
            "setresuid",
            "setresgid",
            "setgroups",
        ],
    ),
    group(
        Quiet,
        true,
        "with own TLS per green thread, a library's initial-exec TLS gets room in every green thread's block",
        &["dlopen"],
    ),
    group(
        Sometimes,
        true,
        "a record-lock wait (F_SETLKW, F_OFD_SETLKW) blocks",
        &["fcntl", "__fcntl", "fcntl64"],
    ),
    group(
        Blocks,
        false,
        "a file lock wait blocks",
        &["flock", "lockf", "lockf64"],
    ),
    group(
        Blocks,
        false,
        "a System V IPC wait blocks",
        &["msgrcv", "msgsnd", "semop", "semtimedop"],
    ),
    group(
        Blocks,
        false,
        "a message queue wait blocks",
        &["mq_receive", "mq_timedreceive", "mq_send", "mq_timedsend"],
    ),
    group(
        Blocks,
        false,
        "waits for a terminal or a native C11 thread: blocks",
        &["tcdrain", "thrd_join"],
    ),
    group(
        Blocks,
        false,
        "a DNS query inside glibc (not getaddrinfo's path): blocks",
        &[
            "res_query",
            "res_search",
            "res_querydomain",
            "res_send",
            "res_nquery",
            "res_nsearch",
            "res_nquerydomain",
            "res_nsend",
            "__res_query",
            "__res_search",
            "__res_querydomain",
            "__res_send",
            "__res_nquery",
            "__res_nsearch",
            "__res_nsend",
        ],
    )
    .caught(),
    group(
        Blocks,
        false,
        "a C11 sleep inside glibc: blocks",
        &["thrd_sleep"],
    )
    .caught(),
    group(
        Sometimes,
        false,
        "stdio read: blocks on a socket, pipe or terminal FILE (no hook inside glibc)",
        &[
            "fgets",
            "__fgets_chk",
            "fgets_unlocked",
            "fread",
            "__fread_chk",
            "fread_unlocked",
            "fgetc",
            "getc",
            "_IO_getc",
            "getchar",
            "getline",
            "getdelim",
            "__getdelim",
            "fscanf",
            "scanf",
            "__isoc99_fscanf",
            "__isoc99_scanf",
            "vfscanf",
            "__isoc99_vfscanf",
        ],
    )
    .caught(),
    group(
        Sometimes,
        false,
        "waits for popen's child inside glibc: blocks",
        &["pclose"],
    )
    .caught(),
    group(
        Parks,
        true,
        "a raw system call the hooks handle (read, futex, ...) parks; others run at once",
        &["syscall"],
    ),
    group(
        Sometimes,
        false,
        "objects made so stay glibc's: contending on one blocks",
        &[
            "pthread_mutexattr_setpshared",
            "pthread_mutexattr_setrobust",
            "pthread_mutexattr_setprotocol",
            "pthread_condattr_setpshared",
            "pthread_rwlockattr_setpshared",
            "pthread_barrierattr_setpshared",
        ],
    ),
    group(
        Sometimes,
        false,
        "user/group lookup: an nscd, sssd or LDAP query blocks",
        &[
            "getpwnam",
            "getpwnam_r",
            "getpwuid",
            "getpwuid_r",
            "getgrnam",
            "getgrnam_r",
            "getgrgid",
            "getgrgid_r",
            "getgrouplist",
            "initgroups",
        ],
    )
    .caught(),
    group(
        Sometimes,
        false,
        "waits for the disk on the thread (not offloaded)",
        &["copy_file_range", "sync", "syncfs", "sync_file_range"],
    ),
];

/// The group `name` is in, if any.
pub fn find(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.names.contains(&name))
}
