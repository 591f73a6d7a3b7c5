//! Syscall User Dispatch: system calls made behind the hooks (glibc's
//! internal `__read` under `fgets`, `syscall()`, inline `syscall`
//! instructions) park the coroutine as a hooked call does.
//!
//! C face: tests/c/green_dispatch.c reads the same natively, under the
//! preload and under green threads on one and two workers; with dispatch off
//! it hangs (the mechanism is what makes it work); where the kernel refuses
//! the prctl, one line says so and the program runs as before. Rust face: an
//! inline `syscall` in a coroutine parks it when `PATCHALL_SYSCALL_DISPATCH=on`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    Outcome, assert_passed, c_program, ignored_test, launched_with, run, run_limited,
    same_in_every_preload_mode,
};

/// Compiled once: a rebuild while another test runs it fails with ETXTBSY.
fn dispatch_program() -> Command {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    Command::new(PROGRAM.get_or_init(|| c_program("green_dispatch")))
}

fn green(workers: &str, inner: Command) -> Command {
    let mut c = launched_with(&["--green-threads"], inner);
    c.env("PATCHALL_WORKERS", workers);
    c
}

#[test]
fn trapped_calls_read_as_natively_in_every_mode() {
    let native = same_in_every_preload_mode(dispatch_program);
    assert!(native.status.success(), "{native:?}");
    let want = std::fs::read_to_string(common::root().join("tests/c/green_dispatch.expected"))
        .expect("green_dispatch.expected");
    assert_eq!(
        native.stdout, want,
        "the native run changed: update the .expected file"
    );
}

#[test]
fn on_one_worker_the_waiting_threads_run_while_trapped_calls_wait() {
    // The scenarios in which one thread's trapped call waits for another:
    // on one OS thread, a call that blocked it would hang the program.
    for scenario in [
        "fgets_socket",
        "raw_reads",
        "two_parked",
        "all_signals_blocked",
    ] {
        let mut native = dispatch_program();
        native.arg(scenario);
        let want = run(native);
        let mut inner = dispatch_program();
        inner.arg(scenario);
        let got = run(green("1", inner));
        assert_eq!(got, want, "{scenario}");
        assert!(!want.stdout.contains("ran: no"), "{scenario}: {want:?}");
    }
}

/// glibc calls `open`, `read` and `close` inside `free` with the arena's lock
/// held (its first heap shrink reads /proc/sys/vm/overcommit_memory). On two
/// workers the green threads of the second share that thread's arena: a
/// trapped call there that suspended the coroutine (the open handed to the
/// offload pool) deadlocked the worker at once (measured: every run hung).
/// Trapped calls that wait for no other party run where they were made.
#[test]
fn a_free_that_reads_proc_under_the_arena_lock_is_not_suspended() {
    let program = c_program("green_heap_trim");
    let native = run(Command::new(&program));
    let want = "threads finished: 8 of 8\none ran on another OS thread than main's: yes\n";
    assert_eq!(native.stdout, want);
    let limit = Duration::from_secs(30);
    let two = run_limited(green("2", Command::new(&program)), limit)
        .unwrap_or_else(|hung| panic!("a trapped call inside free suspended: {hung}"));
    assert_eq!(two, native);
    let one =
        run_limited(green("1", Command::new(&program)), limit).unwrap_or_else(|h| panic!("{h}"));
    assert!(
        one.stdout.starts_with("threads finished: 8 of 8\n"),
        "{one:?}"
    );
}

#[test]
fn a_thread_that_stays_native_blocks_as_natively() {
    let mut native = dispatch_program();
    native.arg("native_thread");
    let want = run(native);
    assert_eq!(want.stdout, "native thread read 9 \"from main\"\n");
    for workers in ["1", "2"] {
        let mut inner = dispatch_program();
        inner.arg("native_thread");
        let mut cmd = green(workers, inner);
        cmd.env("PATCHALL_NATIVE_THREADS", "stays_native");
        assert_eq!(run(cmd), want, "{workers} workers");
    }
}

#[test]
fn without_dispatch_glibc_internal_reads_block_the_only_thread() {
    let mut inner = dispatch_program();
    inner.arg("fgets_socket");
    let mut cmd = green("1", inner);
    cmd.env("PATCHALL_SYSCALL_DISPATCH", "off");
    match run_limited(cmd, Duration::from_secs(3)) {
        Err(hung) => assert!(hung.contains("still running"), "{hung}"),
        Ok(out) => panic!("fgets returned without dispatch: {out:?}"),
    }
    // A raw `syscall()` still parks (its hook), but an inline read that the
    // hook made non-blocking sees EAGAIN, as before dispatch.
    let mut inner = dispatch_program();
    inner.arg("raw_reads");
    let mut cmd = green("1", inner);
    cmd.env("PATCHALL_SYSCALL_DISPATCH", "off");
    let out = run(cmd);
    assert!(out.stdout.contains("syscall(SYS_read) = 13"), "{out:?}");
    assert!(out.stdout.contains("inline read = -11"), "{out:?}");
}

#[test]
fn a_kernel_without_dispatch_gets_one_line_and_todays_behaviour() {
    let wrapper = c_program("no_dispatch");
    let mut native = dispatch_program();
    native.arg("handler_syscalls");
    let want = run(native);
    let mut inner = Command::new(&wrapper);
    inner
        .arg(env!("CARGO_BIN_EXE_patchall"))
        .args(["run", "--green-threads", "--"]);
    inner
        .arg(dispatch_program().get_program())
        .arg("handler_syscalls");
    let got = run(inner);
    assert_eq!(got.stdout, want.stdout, "{got:?}");
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        got.stderr,
        "patchall: syscall user dispatch unavailable (errno 22, needs Linux 5.11+): \
         calls glibc makes internally still block the thread\n"
    );
}

#[test]
fn a_bad_setting_warns_once_and_keeps_the_default() {
    let mut inner = dispatch_program();
    inner.arg("fgets_socket");
    let mut cmd = green("1", inner);
    cmd.env("PATCHALL_SYSCALL_DISPATCH", "maybe");
    let out: Outcome = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("fgets: hello over a socket"), "{out:?}");
    assert_eq!(
        out.stderr.matches("PATCHALL_SYSCALL_DISPATCH").count(),
        1,
        "{out:?}"
    );
}

/// `read` made with an inline `syscall` instruction: no libc function, no hook.
fn inline_read(fd: i32, buf: &mut [u8]) -> isize {
    let r: isize;
    // SAFETY: read(2) into our buffer; the instruction clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_read as isize => r,
            in("rdi") fd,
            in("rsi") buf.as_mut_ptr(),
            in("rdx") buf.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    r
}

#[test]
#[ignore = "run by rust_coroutines_opt_in, in a process with PATCHALL_SYSCALL_DISPATCH=on"]
fn rust_inline_syscall_parks_the_coroutine() {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into our array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [r, w] = fds;
    let start = Instant::now();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(100));
        let t = Instant::now();
        // SAFETY: writing our bytes to our pipe.
        assert_eq!(unsafe { libc::write(w, b"abc".as_ptr().cast(), 3) }, 3);
        t
    })
    .unwrap();
    let reader = patchall::spawn(move || {
        let mut buf = [0u8; 8];
        let n = inline_read(r, &mut buf);
        (n, buf, Instant::now())
    })
    .unwrap();
    // A ticker proves the thread was free while the read waited.
    let ticks = patchall::spawn(|| {
        let mut n = 0;
        while n < 5 {
            patchall::sleep(Duration::from_millis(10));
            n += 1;
        }
        n
    })
    .unwrap();
    let (n, buf, read_at) = reader.join().unwrap();
    let wrote_at = writer.join().unwrap();
    assert_eq!(n, 3);
    assert_eq!(&buf[..3], b"abc");
    assert!(read_at >= wrote_at, "the read returned before the write");
    assert_eq!(ticks.join().unwrap(), 5);
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn rust_coroutines_opt_in() {
    let name = "rust_inline_syscall_parks_the_coroutine";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_SYSCALL_DISPATCH", "on");
    assert_passed(name, &run(cmd));
}
