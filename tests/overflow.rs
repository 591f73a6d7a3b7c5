//! Stack overflow reports and stack exhaustion, each in a child process.
//!
//! Every test here runs twice: as the parent (the normal `cargo test` run), which
//! re-executes this test binary with only itself selected and `CHILD` set; and as
//! that child, where `is_child()` holds and the test body does the dangerous part
//! (overflowing a stack, lowering `RLIMIT_AS`). The parent judges by the child's
//! exit status and output.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use patchall::{Builder, StackMode};

const CHILD: &str = "PATCHALL_OVERFLOW_TEST_CHILD";
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Printed by a child that finished its part; a child that ran no test at all
/// (a renamed test, a filter that matched nothing) would also exit 0.
const DONE: &str = "child: done";

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs the test named `test` in a fresh copy of this binary with `env` set, and
/// returns its output. Fails the test if the child hangs.
fn run_child(test: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("PATCHALL_STACKS")
        .env_remove("PATCHALL_STACK_SIZE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn the child test process");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().expect("wait for the child"));
    });
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(output) => output,
        Err(_) => {
            // SAFETY: `pid` is our own child, not yet reaped (the waiter still waits).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child `{test}` hung for {CHILD_TIMEOUT:?} and was killed");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The child exited successfully after printing `DONE`.
fn assert_child_done(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(DONE),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// The child is about to abort on purpose: no core file for it.
fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) }, 0);
}

/// Recurses until the stack runs out; each frame writes 512 bytes of it.
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[0] = depth as u8;
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(frame[1])
}

/// Child part of the overflow tests: a coroutine named "deep" with a 64 KiB
/// stack recurses forever. Prints its id; must never return.
fn overflow_deep() -> ! {
    no_core_dumps();
    let deep = Builder::new()
        .name("deep")
        .stack_size(64 * 1024)
        .spawn(|| recurse(0))
        .unwrap();
    eprintln!("child: deep is coroutine {}", deep.coroutine().id());
    let result = deep.join();
    panic!("the overflow went unnoticed: join gave {result:?}");
}

/// The child's stderr holds exactly the report for the coroutine it announced,
/// and it died by SIGABRT (not by a bare SIGSEGV, not by exiting).
fn assert_reported(out: &Output, name: &str, size: &str) {
    let stderr = text(&out.stderr);
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("child: {name} is coroutine ")))
        .unwrap_or_else(|| panic!("the child did not announce {name}; stderr:\n{stderr}"));
    let report = format!("patchall: coroutine {id} \"{name}\" overflowed its {size} stack\n");
    assert!(
        stderr.contains(&report),
        "expected {report:?} in the child's stderr:\n{stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "the child must abort after the report; status {:?}, stderr:\n{stderr}",
        out.status
    );
}

#[test]
fn overflow_in_a_guarded_stack_is_reported_by_name() {
    if is_child() {
        overflow_deep();
    }
    let out = run_child("overflow_in_a_guarded_stack_is_reported_by_name", &[]);
    assert_reported(&out, "deep", "64 KiB");
}

/// A thread made by C code (raw `pthread_create`) has no alternate signal stack,
/// unlike Rust's threads: the scheduler must install one, or the SIGSEGV handler
/// would itself run on the overflowed stack.
#[test]
fn overflow_on_a_thread_without_an_alternate_stack_is_reported() {
    extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `stack_t` is a pointer and integers: all-zero is valid.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: querying the alternate stack only writes into `current`.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut current) };
        assert_ne!(
            current.ss_flags & libc::SS_DISABLE,
            0,
            "a raw thread has none"
        );
        overflow_deep()
    }
    if is_child() {
        let mut thread: libc::pthread_t = 0;
        // SAFETY: a valid start routine that never returns; default attributes.
        let rc = unsafe {
            libc::pthread_create(
                &mut thread,
                std::ptr::null(),
                thread_main,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: `thread` was just created and is joined once.
        unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
        panic!("the raw thread returned: the overflow went unnoticed");
    }
    let out = run_child(
        "overflow_on_a_thread_without_an_alternate_stack_is_reported",
        &[],
    );
    assert_reported(&out, "deep", "64 KiB");
}

fn vm_size_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Each guarded stack is one memory mapping: at `vm.max_map_count` spawn must fail
/// cleanly and leave the process enough mappings to go on (malloc, threads).
#[test]
fn guarded_stacks_stop_short_of_the_mapping_limit() {
    if is_child() {
        let max_map_count: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut handles = Vec::with_capacity(max_map_count);
        let err = loop {
            let i = handles.len();
            match Builder::new().stack_size(16 * 1024).spawn(move || i) {
                Ok(h) => handles.push(h),
                Err(e) => break e,
            }
            assert!(i < max_map_count, "more guarded stacks than mappings");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "spawn error: {err}");
        let n = handles.len();
        if max_map_count >= 65530 {
            assert!(n >= 60_000, "only {n} guarded coroutines at once");
        }
        // Still room for the heap to grow by new mappings, and for a thread.
        let blocks: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 1 << 20]).collect();
        assert!(mappings() < max_map_count);
        assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
        drop(blocks);
        let sum: usize = patchall::join_all(handles)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, n * (n - 1) / 2);
        println!("child: {n} guarded coroutines, then ENOMEM; process healthy");
        println!("{DONE}");
        return;
    }
    let out = run_child("guarded_stacks_stop_short_of_the_mapping_limit", &[]);
    assert_child_done(&out);
}

#[test]
fn exhausted_address_space_makes_spawn_fail_then_recover() {
    if is_child() {
        // Room for a few stack chunks beyond what the process has mapped now.
        let limit = vm_size_bytes() + (96 << 20);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads one valid rlimit struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        let mut handles = Vec::new();
        let err = loop {
            let i = handles.len();
            match patchall::spawn(move || {
                patchall::yield_now();
                i
            }) {
                Ok(h) => handles.push(h),
                Err(e) => break e,
            }
            assert!(i < 100_000, "RLIMIT_AS did not limit stack allocation");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "spawn error: {err}");
        let n = handles.len();
        assert!(n > 0, "not even one stack fit under the limit");
        let sum: usize = patchall::join_all(handles)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, n * (n - 1) / 2);
        // The finished coroutines' stacks went back to the pool: as many spawn again
        // without a new mapping, though the limit still holds.
        let again: Vec<_> = (0..n)
            .map(|i| patchall::spawn(move || i * 2).expect("a pooled stack"))
            .collect();
        assert!(
            patchall::spawn(|| ()).is_err(),
            "the limit still holds and the pool is used up"
        );
        let sum: usize = patchall::join_all(again)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, n * (n - 1));
        println!("child: spawn failed with ENOMEM after {n} coroutines");
        println!("{DONE}");
        return;
    }
    let out = run_child("exhausted_address_space_makes_spawn_fail_then_recover", &[]);
    assert_child_done(&out);
}

#[test]
fn dense_stacks_hold_many_coroutines_in_few_mappings() {
    const N: usize = 20_000;
    if is_child() {
        assert_eq!(patchall::config().stack_mode, StackMode::Dense);
        let before = mappings();
        let handles: Vec<_> = (0..N)
            .map(|i| {
                patchall::spawn(move || {
                    patchall::yield_now();
                    i
                })
                .unwrap()
            })
            .collect();
        // All N are alive (spawned, not yet run): every stack is mapped now.
        let grew = mappings().saturating_sub(before);
        let sum: usize = patchall::join_all(handles)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, N * (N - 1) / 2);
        // Guarded stacks would need one mapping each.
        assert!(grew < N / 20, "{N} dense stacks took {grew} new mappings");
        println!("child: {N} dense coroutines in {grew} new mappings");
        println!("{DONE}");
        return;
    }
    let out = run_child(
        "dense_stacks_hold_many_coroutines_in_few_mappings",
        &[("PATCHALL_STACKS", "dense")],
    );
    assert_child_done(&out);
}

/// One frame larger than the whole 64 KiB stack, written end to end: it runs over
/// the bottom word (the canary) into the stack below.
#[inline(never)]
fn overrun_stack() {
    let mut frame = [0x5au8; 80 * 1024];
    black_box(&mut frame);
}

/// Child part of the dense overflow tests. `then` runs after the overrun, back in
/// the coroutine's own stack.
fn dense_smash(then: fn()) -> ! {
    no_core_dumps();
    assert_eq!(patchall::config().stack_mode, StackMode::Dense);
    // Dense stacks of a fresh size class are handed out from the highest
    // address down: the stack right below the smasher's (a free one) absorbs
    // the overrun without a fault, as a live neighbour's would.
    let neighbour = Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| patchall::sleep(Duration::from_secs(60)))
        .unwrap();
    let smash = Builder::new()
        .name("smash")
        .stack_size(64 * 1024)
        .spawn(move || {
            overrun_stack();
            then();
        })
        .unwrap();
    eprintln!("child: smash is coroutine {}", smash.coroutine().id());
    let result = smash.join();
    drop(neighbour);
    panic!("the overrun went unnoticed: join gave {result:?}");
}

#[test]
fn dense_overrun_is_reported_when_the_coroutine_switches_out() {
    if is_child() {
        dense_smash(patchall::yield_now);
    }
    let out = run_child(
        "dense_overrun_is_reported_when_the_coroutine_switches_out",
        &[("PATCHALL_STACKS", "dense")],
    );
    assert_reported(&out, "smash", "64 KiB");
}

#[test]
fn dense_overrun_is_reported_when_the_coroutine_returns() {
    if is_child() {
        dense_smash(|| ());
    }
    let out = run_child(
        "dense_overrun_is_reported_when_the_coroutine_returns",
        &[("PATCHALL_STACKS", "dense")],
    );
    assert_reported(&out, "smash", "64 KiB");
}

/// Child part of the dense overflow tests that fault: `sleepers` coroutines
/// take the first stacks of a fresh 1 MiB size class (32 to a chunk), then a
/// coroutine named "deep" recurses forever on the next one.
fn dense_deep(sleepers: usize) -> ! {
    no_core_dumps();
    assert_eq!(patchall::config().stack_mode, StackMode::Dense);
    let sleeping: Vec<_> = (0..sleepers)
        .map(|_| {
            Builder::new()
                .stack_size(1 << 20)
                .spawn(|| patchall::sleep(Duration::from_secs(60)))
                .unwrap()
        })
        .collect();
    let deep = Builder::new()
        .name("deep")
        .stack_size(1 << 20)
        .spawn(|| recurse(0))
        .unwrap();
    eprintln!("child: deep is coroutine {}", deep.coroutine().id());
    let result = deep.join();
    drop(sleeping);
    panic!("the overflow went unnoticed: join gave {result:?}");
}

/// The first stack of a chunk has free stacks below it: the recursion runs
/// down through them into the chunk's guard, and is reported there.
#[test]
fn dense_overflow_through_free_stacks_is_reported() {
    if is_child() {
        dense_deep(0);
    }
    let out = run_child(
        "dense_overflow_through_free_stacks_is_reported",
        &[("PATCHALL_STACKS", "dense")],
    );
    assert_reported(&out, "deep", "1024 KiB");
}

/// The last stack of a chunk is its lowest: its overflow faults in the
/// chunk's guard at once (it died by a bare SIGSEGV before).
#[test]
fn dense_overflow_of_the_lowest_stack_is_reported() {
    if is_child() {
        dense_deep(31);
    }
    let out = run_child(
        "dense_overflow_of_the_lowest_stack_is_reported",
        &[("PATCHALL_STACKS", "dense")],
    );
    assert_reported(&out, "deep", "1024 KiB");
}
