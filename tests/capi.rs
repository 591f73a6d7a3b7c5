//! The C API: `examples/c/capi_demo.c` and `tests/c/capi_edges.c`, compiled
//! against `include/patchall.h` and linked with `-lpatchall` (no LD_PRELOAD).
//!
//! Linked this way, libpatchall.so precedes libc in the program's dependencies,
//! so the program's `read` binds to our hook. The demo proves it by the order
//! of its lines: a reader's `read()` on an empty pipe lets three sleepers and the
//! writer run before it returns. The control links libc first: then `read`
//! is libc's, blocks the only thread, and the demo never gets past it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, cc, first_difference, preload_lib, root, run};

/// Compiles `src` (relative to the repository root) against the C API and
/// libpatchall.so; `libs` are the link flags, in order.
fn build(src: &str, dir: &Path, libs: &[&str]) -> PathBuf {
    let lib_dir = preload_lib().parent().expect("library directory");
    let include = format!("-I{}", root().join("include").display());
    let lib_path = format!("-L{}", lib_dir.display());
    let mut args = vec![&*include, "-Wextra", "-Werror", &*lib_path];
    args.extend_from_slice(libs);
    let out = dir.join(Path::new(src).file_stem().expect("file name"));
    cc(&root().join(src), &out, &args);
    out
}

/// The program, finding libpatchall.so through LD_LIBRARY_PATH.
fn linked(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env(
        "LD_LIBRARY_PATH",
        preload_lib().parent().expect("library directory"),
    );
    c
}

const DEMO_EXPECTED: &str = "\
main: spawned 5 coroutines (pa_in_coroutine() = 0)
reader: read() on an empty pipe
sleeper 30 ms: awake
sleeper 60 ms: awake
sleeper 90 ms: awake
writer: writing after 120 ms
reader: got \"hello through a pipe\"
main: joined reader: ok, 20 bytes
main: joined sleeper 90: ok, returned 9
main: joined sleeper 30: ok, returned 3
main: joined sleeper 60: ok, returned 6
main: joined writer: ok
main: joining the writer again: ESRCH
";

#[test]
fn demo_read_parks_only_its_coroutine() {
    let dir = TempDir::new("capi-demo");
    let bin = build("examples/c/capi_demo.c", dir.path(), &["-lpatchall"]);
    let out = run(linked(&bin));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "");
    assert!(
        out.stdout == DEMO_EXPECTED,
        "demo output differs{}\nfull output:\n{}",
        first_difference(DEMO_EXPECTED, &out.stdout),
        out.stdout
    );
}

/// The negative control: with libc linked first, `read` is libc's and blocks
/// the thread, so no sleeper ever wakes. (The output cannot change after the
/// reader's first line; the wait only bounds how long we look.)
#[test]
fn control_libc_first_blocks_the_thread() {
    let dir = TempDir::new("capi-control");
    let bin = build(
        "examples/c/capi_demo.c",
        dir.path(),
        &["-Wl,--no-as-needed", "-lc", "-lpatchall"],
    );
    let out_path = dir.path().join("stdout");
    let mut child = KillOnDrop(
        linked(&bin)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
            .spawn()
            .expect("spawn the control"),
    );
    let reader_line = "reader: read() on an empty pipe\n";
    let stdout = || std::fs::read_to_string(&out_path).expect("read stdout");
    let start = Instant::now();
    while !stdout().contains(reader_line) {
        assert!(child.0.try_wait().expect("wait").is_none(), "{}", stdout());
        assert!(
            start.elapsed() < common::RUN_LIMIT,
            "no output: {}",
            stdout()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Then more than ten times the demo's own 120 ms: long enough for every
    // line to appear, were the thread not blocked.
    std::thread::sleep(Duration::from_millis(1500));
    let finished = child.0.try_wait().expect("wait");
    drop(child);
    assert_eq!(finished, None, "libc's read cannot let the demo finish");
    assert_eq!(
        stdout(),
        format!("main: spawned 5 coroutines (pa_in_coroutine() = 0)\n{reader_line}")
    );
}

/// A child process killed (and reaped) when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn edges_return_codes_ids_and_threads() {
    let expected = std::fs::read_to_string(root().join("tests/c/capi_edges.expected"))
        .expect("read capi_edges.expected");
    let dir = TempDir::new("capi-edges");
    let bin = build("tests/c/capi_edges.c", dir.path(), &["-lpatchall"]);
    let out = run(linked(&bin));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "");
    assert!(
        out.stdout == expected,
        "capi_edges output differs from capi_edges.expected{}\nfull output:\n{}",
        first_difference(&expected, &out.stdout),
        out.stdout
    );
}

/// Loaded with `dlopen`: the library reaches its hot thread-locals in the
/// initial-exec model (`runtime::tp_local`), so its TLS must go into the static
/// block, which glibc keeps room in for libraries loaded later. It loads, and
/// coroutines on two threads see their own scheduler and sleep side by side
/// (the shortest nap wakes first, though spawned second).
#[test]
fn dlopened_library_runs_coroutines_on_two_threads() {
    let dir = TempDir::new("capi-dlopen");
    let bin = build("tests/c/capi_dlopen.c", dir.path(), &["-ldl"]);
    let out = run({
        let mut c = Command::new(&bin);
        c.arg(preload_lib());
        c
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "");
    assert_eq!(
        out.stdout,
        "main: outside 0, woke after 10 20 30 ms\nthread: outside 0, woke after 10 20 30 ms\n"
    );
}

/// The header compiles as C++ too (extern "C", no C-only constructs).
#[test]
fn header_is_valid_cpp() {
    let dir = TempDir::new("capi-cxx");
    let src = dir.path().join("use.cpp");
    std::fs::write(
        &src,
        "#include <patchall.h>\nint main() { pa_options o = {nullptr, 0}; (void)o; return pa_in_coroutine(); }\n",
    )
    .expect("write source");
    let out = Command::new("c++")
        .arg(format!("-I{}", root().join("include").display()))
        .args(["-Wall", "-Werror", "-fsyntax-only"])
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("c++ not found ({e}): this test needs a C++ compiler"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
