//! Helpers shared by the integration tests that run programs: the built
//! `libpatchall.so`, a C compiler, bounded child processes, temp dirs, and the
//! do-no-harm set of real programs (python3, curl, git, ls) run two ways.
//!
//! Each test crate includes this module (`mod common;`) and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest any single child process may run before the test kills it.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The repository root (this package's manifest directory).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/<profile>`: where this test binary's cargo puts `libpatchall.so`
/// and the `patchall` launcher (the test binary is `<target>/<profile>/deps/*`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_owned()
}

/// Runs `cargo build <args>` with the cargo, profile and target directory of
/// this test binary (`<target>/<profile>/deps/<test>-*`), so under plain
/// `cargo test` it is a no-op or an incremental build, never a second tree
/// (cargo releases its build lock before running tests). Returns
/// `<target>/<profile>`.
pub fn cargo_build(args: &[&str]) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .args(args)
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir
}

/// `libpatchall.so`, built once per test process (see `cargo_build`).
pub fn preload_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = cargo_build(&["-p", "patchall-preload"]).join("libpatchall.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

/// Compiles the C file `src` into the executable `out` with the system `cc`
/// (`-std=gnu11 -Wall -pthread`); `extra` follows the source, so it may hold
/// `-I`, `-D`, `-O` flags as well as `-L`/`-l` libraries. Panics with cc's
/// output on failure.
pub fn cc(src: &Path, out: &Path, extra: &[&str]) {
    let result = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-pthread", "-o"])
        .arg(out)
        .arg(src)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cc not found ({e}): these tests need a C compiler"));
    assert!(
        result.status.success(),
        "cc {} {extra:?}: {}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "patchall-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with stdin from /dev/null, capturing its output,
/// killing it after `RUN_LIMIT` (see `run_limited`).
pub fn run(cmd: Command) -> Outcome {
    run_limited(cmd, RUN_LIMIT).unwrap_or_else(|hung| panic!("{hung}"))
}

/// How a do-no-harm test runs a program the second time: under `LD_PRELOAD`,
/// through `patchall run`, ...
pub type Wrap<'a> = &'a dyn Fn(Command) -> Command;

/// Runs `make()` plain and `wrap(make())`; asserts identical status, stdout and
/// stderr; returns the plain outcome.
pub fn same_outcome(make: impl Fn() -> Command, wrap: Wrap) -> Outcome {
    let plain = run(make());
    let wrapped = run(wrap(make()));
    assert_eq!(
        plain,
        wrapped,
        "the wrapped run differs from the plain one{}",
        first_difference(&plain.stdout, &wrapped.stdout)
    );
    plain
}

/// `same_outcome` under `libpatchall.so` without green threads, then with them
/// on one and on two workers; returns the plain (native) outcome.
pub fn same_in_every_preload_mode(make: impl Fn() -> Command) -> Outcome {
    let mut native = None;
    for (green, workers) in [("0", "1"), ("1", "1"), ("1", "2")] {
        let wrap = |mut c: Command| {
            c.env("LD_PRELOAD", preload_lib())
                .env("PATCHALL_GREEN_THREADS", green)
                .env("PATCHALL_WORKERS", workers);
            c
        };
        native = Some(same_outcome(&make, &wrap));
    }
    native.expect("three modes ran")
}

/// A short pointer at the first differing line, for assertion messages.
pub fn first_difference(want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (None, None) => return String::new(),
            (a, b) if a == b => continue,
            (a, b) => {
                return format!(
                    "\nfirst difference at stdout line {n}:\n  plain/expected: {a:?}\n  got:            {b:?}"
                );
            }
        }
    }
    unreachable!()
}

/// A tool the do-no-harm tests need: missing is a failure, never a silent pass.
pub fn require(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{tool} --version` failed ({}): the do-no-harm tests need a working {tool}",
            out.status
        ),
        Err(e) => {
            panic!("{tool} not found ({e}): the do-no-harm tests need {tool}; install it (CI does)")
        }
    }
}

const PYTHON_SCRIPT: &str = r#"
import queue, select, socket, subprocess, threading, time

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(8)
port = srv.getsockname()[1]

def serve(n):
    for _ in range(n):
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(3)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data.upper() * 1000)

results = queue.Queue()

def client(i):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"hello %d\n" % i)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        results.put((i, len(got), got[:8].decode()))

server = threading.Thread(target=serve, args=(4,))
server.start()
clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
for t in clients:
    t.start()
for t in clients:
    t.join()
server.join()
print(sorted(results.get() for _ in range(4)))

print(subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip())
print(subprocess.run("exit 3", shell=True).returncode)

a, b = socket.socketpair()
b.sendall(b"x")
print("select", select.select([a], [], [], 5)[0] == [a])
print("poll", select.poll().poll(0))
a.settimeout(0.05)
print("recv", a.recv(1))
try:
    a.recv(1)
except socket.timeout:
    print("timeout")
b.close()
a.settimeout(None)
print("eof", a.recv(1))

closed = socket.socket()
closed.bind(("127.0.0.1", 0))
try:
    socket.create_connection(closed.getsockname(), timeout=5)
except ConnectionRefusedError:
    print("refused")

lock = threading.Lock()
total = [0]
def add(n):
    for _ in range(n):
        with lock:
            total[0] += 1
        time.sleep(0)
adders = [threading.Thread(target=add, args=(500,)) for _ in range(4)]
for t in adders:
    t.start()
for t in adders:
    t.join()
print("total", total[0])
time.sleep(0.01)
"#;

/// python3: sockets, threads, subprocess, select/poll, timeouts, a lock.
pub fn do_no_harm_python(wrap: Wrap) {
    require("python3");
    let out = same_outcome(
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PYTHON_SCRIPT]);
            c
        },
        wrap,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "[(0, 8000, 'HELLO 0\\n'), (1, 8000, 'HELLO 1\\n'), (2, 8000, 'HELLO 2\\n'), (3, 8000, 'HELLO 3\\n')]\n\
         hi\n3\nselect True\npoll []\nrecv b'x'\ntimeout\neof b''\nrefused\ntotal 2000\n"
    );
}

/// Serves `count` HTTP requests with a fixed response, then stops.
pub fn http_server(count: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let server = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("set timeout");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = "hello from patchall\n".repeat(500);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, server)
}

/// curl against a local server, and against a closed port (exit 7 both ways).
pub fn do_no_harm_curl(wrap: Wrap) {
    require("curl");
    let (port, server) = http_server(2);
    let url = format!("http://127.0.0.1:{port}/hello");
    let out = same_outcome(
        || {
            let mut c = Command::new("curl");
            c.args(["-sS", "-i", "--max-time", "30", &url]);
            c
        },
        wrap,
    );
    server.join().expect("server thread");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert_eq!(out.stdout.matches("hello from patchall\n").count(), 500);

    // A refused connection: same exit code (7); the message holds a duration.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused_url = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let refused = || {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", &refused_url]);
        c
    };
    let plain = run(refused()).status;
    assert_eq!(plain.code(), Some(7), "curl should fail to connect");
    assert_eq!(run(wrap(refused())).status, plain);
}

/// `git --version`.
pub fn do_no_harm_git(wrap: Wrap) {
    require("git");
    let out = same_outcome(
        || {
            let mut c = Command::new("git");
            c.arg("--version");
            c
        },
        wrap,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("git version "), "{out:?}");
}

/// `ls -l` of a fixed directory, and of a missing one (exit 2 both ways).
pub fn do_no_harm_ls(wrap: Wrap) {
    let dir = TempDir::new("ls");
    for (name, content) in [("alpha.txt", "a"), ("beta.bin", "bbbb"), ("gamma", "")] {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let ls = |path: PathBuf| {
        move || {
            let mut c = Command::new("ls");
            c.arg("-l").arg(&path).env("LC_ALL", "C").env("TZ", "UTC");
            c
        }
    };
    let out = same_outcome(ls(dir.path().to_owned()), wrap);
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, ["alpha.txt", "beta.bin", "gamma", "sub"]);

    let missing = same_outcome(ls(dir.path().join("missing")), wrap);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}

/// Compiles `tests/c/<name>.c` (warnings are errors) into this test's temporary
/// directory and returns the program.
pub fn c_program(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c");
    std::fs::create_dir_all(&dir).expect("create the C output directory");
    let out = dir.join(name);
    cc(
        &root().join("tests/c").join(format!("{name}.c")),
        &out,
        &["-O2", "-g", "-Wextra", "-Werror"],
    );
    out
}

/// A command that runs one `#[ignore]`d test of this very test binary, alone
/// and with its output shown: for a scenario that needs a process of its own
/// (a `PATCHALL_*` setting, read once per process; a mount namespace). Run it
/// with `run`, which keeps only the `PATCHALL_*` variables the command sets.
pub fn ignored_test(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.args([
        "--ignored",
        "--exact",
        name,
        "--test-threads=1",
        "--nocapture",
    ]);
    c
}

/// Asserts that a run of `ignored_test` passed its one test.
pub fn assert_passed(name: &str, out: &Outcome) {
    assert!(
        out.status.success() && out.stdout.contains("1 passed"),
        "{name} failed in its own process ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

// ---- system calls counted with perf tracepoints ----

/// Counts one system call's entries made by the calling thread (and, with
/// `threads`, by the threads it starts afterwards, added as they end).
pub struct Calls(OwnedFd);

impl Calls {
    pub fn start(name: &str, threads: bool) -> Option<Calls> {
        let id: u64 = std::fs::read_to_string(format!(
            "/sys/kernel/tracing/events/syscalls/sys_enter_{name}/id"
        ))
        .ok()?
        .trim()
        .parse()
        .ok()?;
        // perf_event_attr: type, size, config, then zeros but `inherit`.
        let mut attr = [0u64; 16];
        attr[0] = 2 | (128 << 32); // PERF_TYPE_TRACEPOINT, size 128
        attr[1] = id;
        attr[5] = if threads { 1 << 1 } else { 0 };
        // SAFETY: a zero-padded perf_event_attr of the size it states.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0,
                -1,
                -1,
                8, // PERF_FLAG_FD_CLOEXEC
            )
        };
        // SAFETY: a new fd of ours on success.
        (fd >= 0).then(|| Calls(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    pub fn count(&self) -> u64 {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a local.
        let r = unsafe { libc::syscall(libc::SYS_read, self.0.as_raw_fd(), &mut n, 8) };
        assert_eq!(r, 8, "reading a perf counter");
        n
    }
}

// ---- bounded runs, the launcher, real programs and the servers they talk to ----

/// Removes the `LD_PRELOAD` and `PATCHALL_*` variables `cmd` would inherit from
/// the test's environment; those `cmd` sets itself are kept.
pub fn strip_inherited(cmd: &mut Command) {
    let explicit: Vec<OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if (name.starts_with("PATCHALL_") || name == "LD_PRELOAD") && !explicit.contains(&key) {
            cmd.env_remove(&key);
        }
    }
}

/// The last `max` bytes of `s` (on a character boundary), for failure messages.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` to completion in a process group of its own, with stdin from
/// /dev/null, capturing its output (environment as in `strip_inherited`).
/// After `limit` the whole group is killed, so a hung `make` takes its
/// compilers with it, and the error holds what the command printed until then.
/// Whatever is left in the group when the command exits is killed too: no
/// straggler keeps the output pipes open.
pub fn run_limited(mut cmd: Command, limit: Duration) -> Result<Outcome, String> {
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};

    strip_inherited(&mut cmd);
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id() as libc::pid_t;
    let drain = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = r.read(&mut chunk) {
                sink.lock()
                    .expect("output buffer")
                    .extend_from_slice(&chunk[..n]);
            }
        });
        (buf, reader)
    };
    let (out, out_reader) = drain(Box::new(child.stdout.take().expect("stdout")));
    let (err, err_reader) = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let timed_out = loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it in or leaves si_pid 0.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT sees the exit without reaping: while the leader is a zombie its
        // pid, the group's id, cannot be reused, so the killpg below reaches only
        // this group.
        // SAFETY: `info` is a valid siginfo_t for waitid to write.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid succeeded, so si_pid is initialised (0: still running).
        if r == 0 && unsafe { info.si_pid() } != 0 {
            break false;
        }
        if start.elapsed() > limit {
            break true;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: plain syscall; the group is this child's (see above).
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    let status = child.wait().expect("wait for child");
    // A process that left the group (setsid) may still hold the pipes: wait a
    // while, never forever.
    let grace = Instant::now() + Duration::from_secs(5);
    while !(out_reader.is_finished() && err_reader.is_finished()) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(10));
    }
    let drained = out_reader.is_finished() && err_reader.is_finished();
    let text = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().expect("output buffer")).into_owned()
    };
    let outcome = Outcome {
        status,
        stdout: text(&out),
        stderr: text(&err),
    };
    if timed_out || !drained {
        let why = if timed_out {
            format!("still running after {limit:?}: its process group was killed")
        } else {
            "exited, but a process outside its group still holds its output".to_owned()
        };
        return Err(format!(
            "{what} {why}\n--- stdout so far (tail):\n{}\n--- stderr so far (tail):\n{}",
            tail(&outcome.stdout, 1500),
            tail(&outcome.stderr, 1500)
        ));
    }
    Ok(outcome)
}

/// `inner` run through `patchall run OPTIONS --`, with the same arguments,
/// environment changes and working directory.
pub fn launched_with(options: &[&str], inner: Command) -> Command {
    let launcher = Path::new(env!("CARGO_BIN_EXE_patchall"));
    assert_eq!(
        preload_lib().parent(),
        launcher.parent(),
        "cargo puts the launcher and the library in one directory"
    );
    let mut c = Command::new(launcher);
    c.arg("run").args(options).arg("--");
    c.arg(inner.get_program()).args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(v) => c.env(key, v),
            None => c.env_remove(key),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        c.current_dir(dir);
    }
    c
}

/// The path of a program a real-program test runs, found in `PATH` or in the
/// sbin directories (nginx and dnsmasq live there, often outside a user's
/// `PATH`). Missing, the test should skip: `None`, with a SKIPPED line on
/// stderr naming the Debian package. With `PATCHALL_TEST_REQUIRE_PROGRAMS=1`
/// (CI, which installs them all) a missing program is a failure instead.
pub fn program_or_skip(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    if found.is_none() {
        let required = std::env::var("PATCHALL_TEST_REQUIRE_PROGRAMS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: `{name}` not found (Debian package {package}); \
             PATCHALL_TEST_REQUIRE_PROGRAMS=1 makes that a failure (.ci/run installs it)"
        );
        // Straight to fd 2: the harness captures eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: `{name}` not found; install the Debian package {package}"
        );
    }
    found
}

/// A connected TCP pair on 127.0.0.1 (client, server), Nagle off on both.
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// The port a server names in its first line of output, `port N` (the C
/// servers of tests/c and the bench servers print it so).
pub fn port_line(out: &mut impl std::io::BufRead) -> u16 {
    let mut first = String::new();
    out.read_line(&mut first)
        .expect("read the server's first line");
    first
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("first line {first:?}, want `port N`"))
}

/// A port on 127.0.0.1 that is free for both TCP and UDP right now (a DNS
/// server takes both).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 in 100 tries");
}

/// A server a test started natively (no preload, whatever the test's own
/// environment): on drop its process group is killed and reaped.
pub struct Server {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` with stdin from /dev/null and stdout and stderr into `log`,
    /// then waits, at most 20 s, until 127.0.0.1:`port` accepts TCP connections.
    /// Panics with the log if the server exits or never listens.
    pub fn start(name: &str, cmd: Command, port: u16, log: &Path) -> Server {
        Server::try_start(name, cmd, port, log).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `start`, with the failure (and the log) as an `Err`.
    pub fn try_start(
        name: &str,
        mut cmd: Command,
        port: u16,
        log: &Path,
    ) -> Result<Server, String> {
        use std::os::unix::process::CommandExt;
        strip_inherited(&mut cmd);
        let file = std::fs::File::create(log).expect("create the server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup the log fd"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        let mut server = Server {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before listening:\n{}",
                    server.log()
                ));
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} not listening on 127.0.0.1:{port} after 20 s:\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("({}: {e})", self.name))
    }

    /// Waits at most `limit` for the server to exit by itself (told to by a
    /// client); its status, or None if it still runs (then it is killed).
    pub fn exit_within(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: plain syscall on the group this child leads (not yet reaped).
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
