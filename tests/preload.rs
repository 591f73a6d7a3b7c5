//! The preload face: `libpatchall.so` under `LD_PRELOAD`, outside coroutines.
//!
//! Contract 1 of DESIGN.md: a preloaded program that never spawns behaves exactly
//! as without the preload. The C probes in `tests/c/` print one deterministic line
//! per scenario; each runs plain and preloaded, in three compile variants, and the
//! two runs must match each other and the probe's `.expected` file. Real programs
//! (python3, curl, git, ls) must give the same output and exit code too.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every symbol the library must export (DESIGN.md: "hook every alias").
const REQUIRED_SYMBOLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "connect",
    "close",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "ioctl",
    "setsockopt",
    "pipe",
    "pipe2",
    "sleep",
    "usleep",
    "nanosleep",
    "clock_nanosleep",
    "poll",
    "ppoll",
    "__poll",
    "select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "__read_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "__poll_chk",
    "__close",
    "sigaction",
    "signal",
    "sysv_signal",
    "siginterrupt",
    "getaddrinfo",
    "getnameinfo",
    "gethostbyname",
    "gethostbyname2",
    "gethostbyname_r",
    "gethostbyname2_r",
    "gethostbyaddr",
    "gethostbyaddr_r",
    "open",
    "open64",
    "__open",
    "__open64",
    "openat",
    "openat64",
    "creat",
    "creat64",
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "pread",
    "pread64",
    "__pread_chk",
    "__pread64_chk",
    "pwrite",
    "pwrite64",
    "preadv",
    "preadv64",
    "pwritev",
    "pwritev64",
    "fsync",
    "fdatasync",
    "waitpid",
    "__waitpid",
    "wait4",
    "wait",
    "wait3",
    "waitid",
    "fork",
    "__fork",
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "fexecve",
    "execveat",
    "posix_spawn",
    "posix_spawnp",
    "posix_spawn_file_actions_adddup2",
];

/// Longest any single child process may run before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The repository root (this package's manifest directory).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds `libpatchall.so` with the same cargo, profile and target directory as
/// this test binary (`<target>/<profile>/deps/preload-*`), so under plain
/// `cargo test` it is a no-op or an incremental build, never a second tree.
/// Cargo releases its build-directory lock before running tests, so the nested
/// build does not wait on the outer one.
fn preload_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile directory name");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "patchall-preload",
            "--manifest-path",
        ])
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
        let out = cmd.output().expect("run cargo build -p patchall-preload");
        assert!(
            out.status.success(),
            "cargo build -p patchall-preload failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lib = profile_dir.join("libpatchall.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "patchall-preload-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion (killing it after `RUN_LIMIT`), with `LD_PRELOAD` set
/// to our library or removed, and no `PATCHALL_*` variables from the caller.
fn run(mut cmd: Command, preload: bool) -> Outcome {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PATCHALL_") {
            cmd.env_remove(&key);
        }
    }
    if preload {
        cmd.env("LD_PRELOAD", preload_lib());
    } else {
        cmd.env_remove("LD_PRELOAD");
    }
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} (preload: {preload}) still running after {RUN_LIMIT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs the command plain and preloaded; asserts identical status, stdout and
/// stderr; returns the plain outcome.
fn same_with_and_without(make: impl Fn() -> Command) -> Outcome {
    let plain = run(make(), false);
    let preloaded = run(make(), true);
    assert_eq!(
        plain,
        preloaded,
        "preloaded run differs from the plain one{}",
        first_difference(&plain.stdout, &preloaded.stdout)
    );
    plain
}

/// A short pointer at the first differing line, for assertion messages.
fn first_difference(want: &str, got: &str) -> String {
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
fn require(tool: &str) {
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

/// Undefined (`imported = true`) or defined dynamic symbols of an ELF file.
fn dynamic_symbols(file: &Path, imported: bool) -> BTreeSet<String> {
    let flag = if imported {
        "--undefined-only"
    } else {
        "--defined-only"
    };
    let out = Command::new("nm")
        .args(["-D", flag])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("nm not found ({e}): binutils is needed"));
    assert!(
        out.status.success(),
        "nm -D {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_owned())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    /// `-D_FILE_OFFSET_BITS=64`: `fcntl` becomes `fcntl64`, `open` `open64`.
    LargeFile,
    /// `-O2 -D_FORTIFY_SOURCE=2`: `read` becomes `__read_chk`, `poll` `__poll_chk`…
    Fortify,
}

const VARIANTS: [Variant; 3] = [Variant::Plain, Variant::LargeFile, Variant::Fortify];

impl Variant {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &["-O0"],
            Variant::LargeFile => &["-O0", "-D_FILE_OFFSET_BITS=64"],
            Variant::Fortify => &["-O2", "-D_FORTIFY_SOURCE=2"],
        }
    }
}

/// Compiles `tests/c/<probe>.c` with the system `cc` into `dir`.
fn compile(probe: &str, variant: Variant, dir: &Path) -> PathBuf {
    let src = root().join("tests/c").join(format!("{probe}.c"));
    let bin = dir.join(format!("{probe}-{variant:?}"));
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-pthread"])
        .args(variant.flags())
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cc not found ({e}): the probes need a C compiler"));
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs one probe in every compile variant, plain and preloaded. Both runs must
/// succeed, match each other, and match `tests/c/<probe>.expected`; each variant
/// must import the libc entry points it exists to exercise. With `overflow`, the
/// fortified build is also run in its overflow mode: the checking variant must
/// abort the same way with and without the preload.
fn probe(name: &str, imports: &[(Variant, &[&str])], overflow: bool) {
    let expected = std::fs::read_to_string(root().join("tests/c").join(format!("{name}.expected")))
        .expect("read the probe's .expected file");
    assert!(
        expected.ends_with("done\n"),
        "{name}.expected must end with `done`"
    );
    let dir = TempDir::new(name);
    let command = |bin: &Path, args: &[&str]| {
        let mut c = Command::new(bin);
        // A core dump, if any, lands in the temp dir and goes with it.
        c.arg(dir.path()).args(args).current_dir(dir.path());
        c
    };
    for variant in VARIANTS {
        let bin = compile(name, variant, dir.path());
        let imported = dynamic_symbols(&bin, true);
        for sym in imports
            .iter()
            .filter(|(v, _)| *v == variant)
            .flat_map(|(_, s)| *s)
        {
            assert!(
                imported.contains(*sym),
                "{name} ({variant:?}) should call {sym}; it imports {imported:?}"
            );
        }
        let plain = same_with_and_without(|| command(&bin, &[]));
        assert!(
            plain.status.success(),
            "{name} ({variant:?}) failed: {plain:?}"
        );
        assert_eq!(plain.stderr, "", "{name} ({variant:?}) wrote to stderr");
        assert!(
            plain.stdout == expected,
            "{name} ({variant:?}) output differs from {name}.expected{}",
            first_difference(&expected, &plain.stdout)
        );
        if overflow && variant == Variant::Fortify {
            let aborted = same_with_and_without(|| command(&bin, &["overflow"]));
            assert_eq!(
                aborted.status.signal(),
                Some(libc::SIGABRT),
                "{name} overflow: {aborted:?}"
            );
            assert!(
                aborted.stderr.contains("buffer overflow detected"),
                "{aborted:?}"
            );
            assert_eq!(aborted.stdout, "", "the overflowing call must not return");
        }
    }
}

#[test]
fn exports_every_hook() {
    let exported = dynamic_symbols(preload_lib(), false);
    let missing: Vec<_> = REQUIRED_SYMBOLS
        .iter()
        .filter(|s| !exported.contains(**s))
        .collect();
    assert!(
        missing.is_empty(),
        "libpatchall.so does not export {missing:?}; it exports {exported:?}"
    );
}

/// The loader, asked with `LD_DEBUG=bindings`, says which object satisfies each
/// symbol a probe imports: every one the library exports must bind to it.
#[test]
fn hooks_are_interposed_at_run_time() {
    let dir = TempDir::new("bindings");
    let exported = dynamic_symbols(preload_lib(), false);
    let cases = [
        (
            "probe_net",
            Variant::Plain,
            &["read", "recv", "connect", "accept4"][..],
        ),
        (
            "probe_io",
            Variant::Fortify,
            &["__read_chk", "write", "writev"][..],
        ),
    ];
    for (name, variant, must) in cases {
        let bin = compile(name, variant, dir.path());
        let hooked: BTreeSet<_> = dynamic_symbols(&bin, true)
            .intersection(&exported)
            .cloned()
            .collect();
        for sym in must {
            assert!(
                hooked.contains(*sym),
                "{name} ({variant:?}) should import hooked {sym}"
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.arg(dir.path())
            .env("LD_DEBUG", "bindings")
            .env("LD_BIND_NOW", "1");
        let out = run(cmd, true);
        assert!(out.status.success(), "{out:?}");
        let from_probe = format!("binding file {} ", bin.display());
        let bound_to_us: BTreeSet<_> = out
            .stderr
            .lines()
            .filter(|l| l.contains(&from_probe) && l.contains("libpatchall.so"))
            .filter_map(|l| l.split('`').nth(1)?.split('\'').next())
            .map(str::to_owned)
            .collect();
        let elsewhere: Vec<_> = hooked.difference(&bound_to_us).collect();
        assert!(
            elsewhere.is_empty(),
            "{name}: the loader bound {elsewhere:?} elsewhere; to libpatchall.so: {bound_to_us:?}"
        );
    }
}

#[test]
fn constructor_warns_once_about_a_bad_variable() {
    let with = |value: &str| {
        let mut cmd = Command::new("true");
        cmd.env("PATCHALL_STACK_SIZE", value);
        // `run` drops inherited PATCHALL_* variables, not the ones set here.
        let out = run(cmd, true);
        assert!(out.status.success(), "{out:?}");
        out.stderr
    };
    let bad = with("lots");
    assert_eq!(
        bad.matches("PATCHALL_STACK_SIZE").count(),
        1,
        "one warning expected, got {bad:?}"
    );
    assert!(bad.starts_with("patchall: ignoring bad value"), "{bad:?}");
    assert_eq!(with("512k"), "", "a good value must not warn");
}

#[test]
fn probe_io_pipes() {
    probe("probe_io", &[(Variant::Fortify, &["__read_chk"])], true);
}

#[test]
fn probe_net_sockets() {
    let plain: &[&str] = &["recvmmsg", "sendmmsg", "accept4", "setsockopt"];
    probe(
        "probe_net",
        &[
            (Variant::Plain, plain),
            (Variant::Fortify, &["__recv_chk", "__recvfrom_chk"]),
        ],
        true,
    );
}

#[test]
fn probe_wait_poll_select_sleep() {
    let plain: &[&str] = &[
        "poll",
        "ppoll",
        "select",
        "pselect",
        "epoll_wait",
        "epoll_pwait",
        "nanosleep",
        "clock_nanosleep",
        "sleep",
        "usleep",
    ];
    probe(
        "probe_wait",
        &[(Variant::Plain, plain), (Variant::Fortify, &["__poll_chk"])],
        true,
    );
}

#[test]
fn probe_fd_lifetime_and_flags() {
    let plain: &[&str] = &["fcntl", "dup", "dup2", "dup3", "__close", "ioctl", "pipe2"];
    probe(
        "probe_fd",
        &[
            (Variant::Plain, plain),
            (Variant::LargeFile, &["fcntl64", "open64"]),
        ],
        false,
    );
}

#[test]
fn probe_offloadable_calls() {
    let plain: &[&str] = &[
        "getaddrinfo",
        "getnameinfo",
        "gethostbyname",
        "gethostbyname2",
        "gethostbyname_r",
        "gethostbyname2_r",
        "gethostbyaddr",
        "gethostbyaddr_r",
        "open",
        "openat",
        "creat",
        "pread",
        "pwrite",
        "preadv",
        "pwritev",
        "fsync",
        "fdatasync",
        "waitpid",
        "wait4",
        "wait",
        "wait3",
        "waitid",
        "fork",
        "execv",
        "posix_spawn",
        "posix_spawnp",
        "posix_spawn_file_actions_adddup2",
    ];
    let large: &[&str] = &[
        "open64",
        "openat64",
        "creat64",
        "pread64",
        "pwrite64",
        "preadv64",
        "pwritev64",
    ];
    probe(
        "probe_offload",
        &[
            (Variant::Plain, plain),
            (Variant::LargeFile, large),
            (Variant::Fortify, &["__open_2", "__openat_2", "__pread_chk"]),
        ],
        false,
    );
}

#[test]
fn probe_signal_dispositions() {
    let plain: &[&str] = &["sigaction", "signal", "sysv_signal", "siginterrupt"];
    probe("probe_signal", &[(Variant::Plain, plain)], false);
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

#[test]
fn do_no_harm_python() {
    require("python3");
    let out = same_with_and_without(|| {
        let mut c = Command::new("python3");
        c.args(["-c", PYTHON_SCRIPT]);
        c
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "[(0, 8000, 'HELLO 0\\n'), (1, 8000, 'HELLO 1\\n'), (2, 8000, 'HELLO 2\\n'), (3, 8000, 'HELLO 3\\n')]\n\
         hi\n3\nselect True\npoll []\nrecv b'x'\ntimeout\neof b''\nrefused\ntotal 2000\n"
    );
}

/// Serves `count` HTTP requests with a fixed response, then stops.
fn http_server(count: usize) -> (u16, std::thread::JoinHandle<()>) {
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

#[test]
fn do_no_harm_curl() {
    require("curl");
    let (port, server) = http_server(2);
    let url = format!("http://127.0.0.1:{port}/hello");
    let out = same_with_and_without(|| {
        let mut c = Command::new("curl");
        c.args(["-sS", "-i", "--max-time", "30", &url]);
        c
    });
    server.join().expect("server thread");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert_eq!(out.stdout.matches("hello from patchall\n").count(), 500);

    // A refused connection: same exit code (7); the message holds a duration.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused_url = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let refused = |preload| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", &refused_url]);
        run(c, preload).status
    };
    let plain = refused(false);
    assert_eq!(plain.code(), Some(7), "curl should fail to connect");
    assert_eq!(refused(true), plain);
}

#[test]
fn do_no_harm_git() {
    require("git");
    let out = same_with_and_without(|| {
        let mut c = Command::new("git");
        c.arg("--version");
        c
    });
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("git version "), "{out:?}");
}

#[test]
fn do_no_harm_ls() {
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
    let out = same_with_and_without(ls(dir.path().to_owned()));
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, ["alpha.txt", "beta.bin", "gamma", "sub"]);

    let missing = same_with_and_without(ls(dir.path().join("missing")));
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}
