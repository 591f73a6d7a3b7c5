//! Green threads under the preload: the C programs of `tests/c/green_*.c` and a
//! Rust program run with `PATCHALL_GREEN_THREADS=1`, and the same programs with
//! green threads off (and without the preload), which must read the same.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{c_program, cargo_build, preload_lib, root};

/// Longest any one program may run before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How a program is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No preload at all.
    Plain,
    /// Preloaded, green threads off.
    Off,
    /// Preloaded, green threads on.
    Green,
}

const ALL: [Mode; 3] = [Mode::Plain, Mode::Off, Mode::Green];

#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `program` in `mode` with `env` added (and no `PATCHALL_*` variables
/// from the caller), killing it after RUN_LIMIT.
fn run(program: &Path, mode: Mode, env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PATCHALL_") {
            cmd.env_remove(&key);
        }
    }
    match mode {
        Mode::Plain => {
            cmd.env_remove("LD_PRELOAD");
        }
        Mode::Off | Mode::Green => {
            cmd.env("LD_PRELOAD", preload_lib()).env(
                "PATCHALL_GREEN_THREADS",
                if mode == Mode::Green { "1" } else { "0" },
            );
        }
    }
    cmd.envs(env.iter().copied());
    let what = format!("{} ({mode:?})", program.display());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let _ = out.read_to_string(&mut stdout);
        let _ = err.read_to_string(&mut stderr);
        let _ = tx.send((child.wait(), stdout, stderr));
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok((status, stdout, stderr)) => Outcome {
            status: status.expect("wait for the program"),
            stdout,
            stderr,
        },
        Err(_) => {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} still running after {RUN_LIMIT:?}: killed");
        }
    }
}

fn expected(name: &str) -> String {
    let path = root().join("tests/c").join(format!("{name}.expected"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a C program in every mode: the same status and the output of its
/// `.expected` file each time.
fn same_everywhere(name: &str, code: i32) {
    let program = c_program(name);
    let want = expected(name);
    for mode in ALL {
        let got = run(&program, mode, &[]);
        assert_eq!(got.status.code(), Some(code), "{name} {mode:?}: {got:?}");
        assert_eq!(got.stdout, want, "{name} {mode:?}, stderr: {}", got.stderr);
    }
}

/// Green on one and on two OS threads (`PATCHALL_WORKERS`): success and
/// stdout `want` (the expected file's, or the native run's).
fn green_on_one_and_two_workers(program: &Path, want: &str) {
    for workers in ["1", "2"] {
        let got = run(program, Mode::Green, &[("PATCHALL_WORKERS", workers)]);
        assert_eq!(got.status.code(), Some(0), "{workers} workers: {got:?}");
        assert_eq!(
            got.stdout, want,
            "{workers} workers, stderr: {}",
            got.stderr
        );
    }
}

/// The `name value` lines of a program's output.
fn field(out: &Outcome, name: &str) -> i64 {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in {out:?}"))
}

#[test]
fn a_thousand_sleeping_threads_share_one_os_thread() {
    let program = c_program("green_sleepers");
    // Its stdio read of /proc is trapped and handled as a hooked `read`,
    // which the offload pool would make on a thread of its own: counted here.
    let green = run(&program, Mode::Green, &[("PATCHALL_OFFLOAD_FILES", "off")]);
    assert!(green.status.success(), "{green:?}");
    assert_eq!(field(&green, "finished"), 1000, "{green:?}");
    // They really slept: none was done when `main` woke halfway (its timer
    // comes first, so this holds however late the scheduler runs).
    assert_eq!(field(&green, "finished before 50 ms"), 0, "{green:?}");
    // `main` and every thread are coroutines of the main OS thread.
    let threads = field(&green, "threads while sleeping");
    assert!((1..=4).contains(&threads), "{green:?}");
    // One after the other they would take 100 s.
    assert!(field(&green, "elapsed ms") < 30_000, "{green:?}");

    // With green threads off the same program runs on a thousand OS threads
    // (on a loaded machine the first may end while the last are created).
    let native = run(&program, Mode::Off, &[]);
    assert!(native.status.success(), "{native:?}");
    assert_eq!(field(&native, "finished"), 1000, "{native:?}");
    assert!(field(&native, "threads while sleeping") > 50, "{native:?}");
}

#[test]
fn pthread_semantics_are_those_of_native_threads() {
    // join values, self/equal, names, keys and destructors, pthread_once with a
    // sleeping init routine (and one cancelled inside it), pthread_exit with
    // cleanup handlers, cancellation in sleep/read/join and while disabled,
    // detach, tryjoin, timedjoin, kill 0, getattr_np, EAGAIN for a stack that
    // cannot exist.
    same_everywhere("green_semantics", 0);
}

#[test]
fn condvar_and_semaphore_waits_are_cancellation_points() {
    // Cleanup handlers innermost first, the condvar's mutex held in them, join
    // giving PTHREAD_CANCELED; disabled, the wait goes on; a cancellation due
    // before the wait acts at once (sem_clockwait takes its token first).
    same_everywhere("green_cancel_waits", 0);
    let program = c_program("green_cancel_waits");
    let want = expected("green_cancel_waits");
    green_on_one_and_two_workers(&program, &want);
}

#[test]
fn handovers_let_the_other_green_thread_run() {
    // sched_yield and a contended pthread_spin_lock yield to the other green
    // threads; sendfile, splice and tee wait for a socket or pipe that a green
    // thread of the same OS thread drains or fills; O_NONBLOCK set through one
    // dup is seen through the others; a FIFO's open waits for a green writer.
    // Natively, preloaded without green threads (the calls made outside
    // coroutines: libc's results and errnos), and green on 1 and 2 workers.
    same_everywhere("green_handover", 0);
    let program = c_program("green_handover");
    let want = expected("green_handover");
    green_on_one_and_two_workers(&program, &want);
}

#[test]
fn locks_glibc_used_before_main_work_for_green_threads() {
    // Before green threads are on (at `__libc_start_main`), libraries'
    // constructors lock with glibc's own code: a rwlock it last write-locked
    // stays in glibc's write phase, which read as one reader here, and the
    // first write lock in `main` waited for ever (bind9's dig, OpenSSL's
    // locks). Rwlocks of both kinds, mutexes, a condvar, a barrier and a
    // semaphore used from .preinit_array then from threads, on one OS thread
    // and on two.
    same_everywhere("green_early_locks", 0);
    let program = c_program("green_early_locks");
    let want = expected("green_early_locks");
    green_on_one_and_two_workers(&program, &want);
}

#[test]
fn main_may_end_with_pthread_exit() {
    same_everywhere("green_main_exit", 0);
}

#[test]
fn a_vfork_child_closing_fds_leaves_the_parents_waiters_alone() {
    // Before vfork ran as fork, the green reader's first read failed with
    // EBADF: the child's `close` ran our hook on the parent's scheduler.
    same_everywhere("green_vfork", 0);
}

#[test]
fn exit_in_a_thread_flushes_stdio_and_runs_atexit_handlers() {
    same_everywhere("green_thread_exit", 3);
}

#[test]
fn a_dedicated_signal_thread_sigwaits_while_the_others_run() {
    // Every thread blocks SIGUSR1 and SIGTERM, one waits for them (sigtimedwait,
    // sigwaitinfo, sigwait) while a ticker runs; main sends with pthread_kill,
    // kill and sigqueue. The output (with the kernel's si_codes) is the native
    // one, on one OS thread and on two.
    let program = c_program("green_sigwait");
    let native = run(&program, Mode::Plain, &[]);
    assert!(native.status.success(), "{native:?}");
    assert!(native.stdout.ends_with("done\n"), "{native:?}");
    assert!(
        native.stdout.contains("others ran meanwhile: yes"),
        "{native:?}"
    );
    green_on_one_and_two_workers(&program, &native.stdout);
}

#[test]
fn process_shared_semaphores_let_the_other_green_threads_run() {
    // Python's multiprocessing pattern: main waits on a named semaphore that a
    // thread of its own posts; on a pshared one a child process posts; timed
    // waits time out, a handler without SA_RESTART gives EINTR. Before, the
    // wait blocked the OS thread: on one worker the poster never ran.
    let program = c_program("green_shared_sem");
    let native = run(&program, Mode::Plain, &[]);
    assert!(native.status.success(), "{native:?}");
    assert!(native.stdout.ends_with("done\n"), "{native:?}");
    assert!(!native.stdout.contains("others ran: no"), "{native:?}");
    green_on_one_and_two_workers(&program, &native.stdout);
}

#[test]
fn each_green_thread_has_its_own_signal_mask() {
    // Queries return the caller's own mask; a change in one thread is not seen
    // in main; kill() to the process ends the read of the only thread that lets
    // the signal in, not another's; sigwait still takes a signal every thread
    // blocks; fork and posix_spawn children get the maker's mask. Output as
    // natively, on one OS thread and on two.
    let program = c_program("green_sigmask");
    let native = run(&program, Mode::Plain, &[]);
    assert!(native.status.success(), "{native:?}");
    for line in [
        "main: USR1 yes USR2 no TERM no\n",
        "changer: USR1 no USR2 yes TERM yes\n",
        "unblocker: read -1 EINTR\n",
        "reader: read 1\n",
        "waiter: sigwait 0 SIGUSR2\n",
        "fork child: HUP yes USR1 yes\n",
    ] {
        assert!(native.stdout.contains(line), "{line:?}: {native:?}");
    }
    assert!(native.stdout.ends_with("done\n"), "{native:?}");
    green_on_one_and_two_workers(&program, &native.stdout);
}

#[test]
fn start_routines_named_in_patchall_native_threads_stay_native() {
    let program = c_program("green_native_routine");
    let own = |mode, env: &[(&str, &str)]| {
        let out = run(&program, mode, env);
        assert!(out.status.success(), "{out:?}");
        field(&out, "own os thread:")
    };
    assert_eq!(own(Mode::Green, &[]), 0);
    assert_eq!(
        own(Mode::Green, &[("PATCHALL_NATIVE_THREADS", "native_worker")]),
        1
    );
    assert_eq!(
        own(Mode::Green, &[("PATCHALL_NATIVE_THREADS", "green_native")]),
        1
    );
    assert_eq!(own(Mode::Off, &[]), 1);
    // bind9's thread trampoline stays native unasked (its threads keep their
    // ids in thread-locals).
    let out = run(&program, Mode::Green, &[]);
    assert_eq!(
        field(&out, "libisc trampoline, own os thread:"),
        1,
        "{out:?}"
    );
}

/// The `std_threads` example (plain std threads), built like the library.
fn std_threads_example() -> PathBuf {
    cargo_build(&["--example", "std_threads"]).join("examples/std_threads")
}

#[test]
fn rust_std_threads_stay_native() {
    let program = std_threads_example();
    let native = run(&program, Mode::Plain, &[]);
    assert!(native.status.success(), "{native:?}");
    assert!(
        native.stdout.contains("scoped threads summed 60"),
        "{native:?}"
    );
    let green = run(&program, Mode::Green, &[]);
    assert!(green.status.success(), "{green:?}");
    assert_eq!(green.stdout, native.stdout, "{green:?}");

    // Without `.symtab` the object is recognised as Rust's by std's strings.
    let stripped = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("std_threads_stripped");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&program)
        .status()
        .expect("run strip (binutils)");
    assert!(strip.success());
    let green = run(&stripped, Mode::Green, &[]);
    assert!(green.status.success(), "{green:?}");
    assert_eq!(green.stdout, native.stdout, "{green:?}");
}

/// `PATCHALL_STACK_SIZE` sizes a green thread's stack (as it does a
/// coroutine's) unless the program's attribute sets one; the thread reads
/// its own bounds and finds its locals inside them. Native threads keep
/// glibc's size whatever the variable says.
#[test]
fn green_threads_take_patchall_stack_size_unless_their_attribute_sets_one() {
    let program = c_program("green_stack_size");
    let plain = run(&program, Mode::Plain, &[]);
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");
    let glibc = field(&plain, "glibc");
    assert_eq!(field(&plain, "attr"), 1 << 20, "{plain:?}");
    let green = run(&program, Mode::Green, &[]);
    assert_eq!(green.status.code(), Some(0), "{green:?}");
    assert_eq!(field(&green, "default"), glibc, "no variable: glibc's size");
    assert_eq!(field(&green, "attr"), 1 << 20);
    for workers in ["1", "2"] {
        let env = [
            ("PATCHALL_STACK_SIZE", "64k"),
            ("PATCHALL_WORKERS", workers),
        ];
        let small = run(&program, Mode::Green, &env);
        assert_eq!(small.status.code(), Some(0), "{workers} workers: {small:?}");
        assert_eq!(field(&small, "default"), 64 << 10, "{small:?}");
        assert_eq!(field(&small, "attr"), 1 << 20, "the attribute's size wins");
    }
    let native = run(&program, Mode::Off, &[("PATCHALL_STACK_SIZE", "64k")]);
    assert_eq!(native.status.code(), Some(0), "{native:?}");
    assert_eq!(field(&native, "default"), field(&plain, "default"));
}
