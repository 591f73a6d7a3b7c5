//! Real programs under green threads (issue 13): `make -j2` with gcc, node and
//! libuv's pool, node's worker_threads, python3's multiprocessing,
//! `redis-benchmark --threads 2` against redis-server, redis-server itself as
//! the green program, `wrk -t2` against nginx,
//! and `dig` against dnsmasq. Each runs natively, then under
//! `LD_PRELOAD` alone (must already be identical: it shows the test itself is
//! sound), then under `patchall run --green-threads` on 1 and 2 workers, and
//! on 2 with `--io uring` (socket reads and writes as io_uring operations).
//! Where output is exact by nature it must be identical; where it is not
//! (benchmark rates, job order) the test checks what must hold in every mode.
//!
//! Every run is bounded (`RUN`): a hang fails the test and its process group
//! is killed. Servers run natively on 127.0.0.1 and are killed at the end. A
//! test whose program is not installed says so on stderr and passes, unless
//! `PATCHALL_TEST_REQUIRE_PROGRAMS=1` (CI) makes that a failure.

mod common;

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Outcome, Server, TempDir, free_port, launched_with, preload_lib, program_or_skip};

/// How long one run may take: every native run here takes under 3 s.
const RUN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Native,
    Preload,
    Green {
        workers: u32,
    },
    /// Green threads with socket reads and writes through io_uring.
    GreenUring {
        workers: u32,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Native => write!(f, "native"),
            Mode::Preload => write!(f, "preload"),
            Mode::Green { workers } => write!(f, "green (PATCHALL_WORKERS={workers})"),
            Mode::GreenUring { workers } => {
                write!(f, "green, --io uring (PATCHALL_WORKERS={workers})")
            }
        }
    }
}

impl Mode {
    fn wrap(self, mut cmd: Command) -> Command {
        match self {
            Mode::Native => cmd,
            Mode::Preload => {
                cmd.env("LD_PRELOAD", preload_lib());
                cmd
            }
            Mode::Green { workers } => {
                let mut c = launched_with(&["--green-threads"], cmd);
                c.env("PATCHALL_WORKERS", workers.to_string());
                c
            }
            Mode::GreenUring { workers } => {
                let mut c = launched_with(&["--green-threads", "--io", "uring"], cmd);
                c.env("PATCHALL_WORKERS", workers.to_string());
                c
            }
        }
    }

    /// Runs `cmd` in this mode, bounded by `RUN`; a hang is an `Err`.
    fn run(self, cmd: Command) -> Result<Outcome, String> {
        common::run_limited(self.wrap(cmd), RUN)
    }
}

/// The modes compared with the native run.
const WRAPPED: [Mode; 4] = [
    Mode::Preload,
    Mode::Green { workers: 1 },
    Mode::Green { workers: 2 },
    Mode::GreenUring { workers: 2 },
];

/// Runs `check` natively (it must pass: else the test, not patchall, is
/// wrong), then in every wrapped mode; fails listing every mode that failed.
fn in_every_mode(what: &str, mut check: impl FnMut(Mode) -> Result<(), String>) {
    // Built (by cargo) before anything is timed.
    preload_lib();
    if let Err(e) = check(Mode::Native) {
        panic!("{what}, natively: {e}");
    }
    let failures: Vec<String> = WRAPPED
        .into_iter()
        .filter_map(|mode| check(mode).err().map(|e| format!("== {mode}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} modes failed\n{}",
        failures.len(),
        WRAPPED.len(),
        failures.join("\n")
    );
}

/// Status, stdout and stderr must equal the native run's.
fn same_as(native: &Outcome, got: &Outcome) -> Result<(), String> {
    if native == got {
        return Ok(());
    }
    Err(format!(
        "differs from native{}\n  native: {native:?}\n  got:    {got:?}",
        common::first_difference(&native.stdout, &got.stdout)
    ))
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

/// Status equal and the same lines in stdout and stderr, in any order (a
/// parallel make prints its jobs in the order they happen to start).
fn same_lines_as(native: &Outcome, got: &Outcome) -> Result<(), String> {
    if native.status == got.status
        && sorted_lines(&native.stdout) == sorted_lines(&got.stdout)
        && sorted_lines(&native.stderr) == sorted_lines(&got.stderr)
    {
        return Ok(());
    }
    Err(format!(
        "differs from native (lines compared sorted)\n  native: {native:?}\n  got:    {got:?}"
    ))
}

// ---- make -j2 with gcc ----------------------------------------------------

const MAKEFILE: &str = r#"CC = gcc
CFLAGS = -O1 -Wall
OBJS = main.o a.o b.o c.o d.o

all: prog
	./prog

prog: $(OBJS)
	$(CC) -o $@ $(OBJS)

# -j2 starts main.o and a.o first, b.o when main.o is done. a.o waits (at most
# 20 s) until b.o has started and says so: two jobs at once meet, a make that
# ran one job at a time would print "a.o alone".
a.o b.o: %.o: %.c
	@touch $*.started
	@if [ $* = a ]; then i=0; while [ ! -e b.started ] && [ $$i -lt 200 ]; do sleep 0.1; i=$$((i+1)); done; \
	  if [ -e b.started ]; then echo "a.o met b.o"; else echo "a.o alone"; fi; fi
	$(CC) $(CFLAGS) -c -o $@ $<

%.o: %.c
	$(CC) $(CFLAGS) -c -o $@ $<

# -k: bad.o does not compile, e.o and f.o (not built before) still are.
broken: bad.o e.o f.o
	$(CC) -o $@ $^
"#;

/// A small C project in `dir`: five sources compiled in parallel into `prog`,
/// and a target `broken` with one source that does not compile.
fn write_c_project(dir: &Path) {
    let files = [
        ("Makefile", MAKEFILE.to_owned()),
        (
            "main.c",
            "#include <stdio.h>\nint fa(void); int fb(void); int fc(void); int fd(void);\n\
             int main(void) { printf(\"sum %d\\n\", fa() + fb() + fc() + fd()); return 0; }\n"
                .to_owned(),
        ),
        ("a.c", "int fa(void) { return 1; }\n".to_owned()),
        ("b.c", "int fb(void) { return 20; }\n".to_owned()),
        ("c.c", "int fc(void) { return 300; }\n".to_owned()),
        ("d.c", "int fd(void) { return 4; }\n".to_owned()),
        ("e.c", "int fe(void) { return 5; }\n".to_owned()),
        ("f.c", "int ff(void) { return 6; }\n".to_owned()),
        (
            "bad.c",
            "int bad(void) { return missing_name; }\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write the C project");
    }
}

#[test]
fn make_j2_builds_a_c_project() {
    let test = "make_j2_builds_a_c_project";
    let (Some(make), Some(_)) = (
        program_or_skip(test, "make", "make"),
        program_or_skip(test, "gcc", "gcc"),
    ) else {
        return;
    };
    let tmp = TempDir::new("make");
    // Each run builds from scratch in a directory of its own.
    let fresh = |mode: Mode| {
        let dir = tmp
            .path()
            .join(mode.to_string().replace([' ', '(', ')', '='], "_"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("mkdir");
        write_c_project(&dir);
        dir
    };
    let make_in = |dir: &Path, args: &[&str]| {
        let mut c = Command::new(&make);
        c.args(args).current_dir(dir).env("LC_ALL", "C");
        c
    };
    let mut native: Option<(Outcome, Outcome)> = None;
    in_every_mode("make -j2", |mode| {
        let dir = fresh(mode);
        let build = mode.run(make_in(&dir, &["-j2"]))?;
        let broken = mode.run(make_in(&dir, &["-j2", "-k", "broken"]))?;
        // The program really was built: run it natively.
        let prog = common::run_limited(Command::new(dir.join("prog")), RUN)?;
        if !prog.status.success() || prog.stdout != "sum 325\n" {
            return Err(format!("the built program is wrong: {prog:?}"));
        }
        match &native {
            None => {
                let lines = sorted_lines(&build.stdout);
                let want = [
                    "./prog",
                    "a.o met b.o",
                    "gcc -O1 -Wall -c -o a.o a.c",
                    "gcc -O1 -Wall -c -o b.o b.c",
                    "gcc -O1 -Wall -c -o c.o c.c",
                    "gcc -O1 -Wall -c -o d.o d.c",
                    "gcc -O1 -Wall -c -o main.o main.c",
                    "gcc -o prog main.o a.o b.o c.o d.o",
                    "sum 325",
                ];
                if !build.status.success() || lines != want || !build.stderr.is_empty() {
                    return Err(format!("make -j2: {build:?}"));
                }
                if broken.status.code() != Some(2)
                    || !broken.stdout.contains("-o f.o f.c")
                    || !broken.stderr.contains("missing_name")
                    || !broken.stderr.contains("Target 'broken' not remade")
                {
                    return Err(format!("make -j2 -k broken: {broken:?}"));
                }
                native = Some((build, broken));
                Ok(())
            }
            Some((want_build, want_broken)) => {
                same_lines_as(want_build, &build).map_err(|e| format!("make -j2: {e}"))?;
                same_lines_as(want_broken, &broken).map_err(|e| format!("make -j2 -k: {e}"))
            }
        }
    });
}

// ---- node: libuv's pool, timers, child processes, exits --------------------

/// Pool work (fs, crypto, zlib, dns.lookup), timers, a child process; results
/// printed in a fixed order, and an exit status set at the end.
const NODE_POOL: &str = r#"'use strict';
const fs = require('fs');
const crypto = require('crypto');
const zlib = require('zlib');
const dns = require('dns');
const { execFile } = require('child_process');
const file = process.argv[2];
const step = (name, fn) => new Promise((resolve) => fn((...r) => resolve([name, ...r])));
// Orders libuv fixes: timers by due time, whatever the delay; in an I/O
// callback, setImmediate before setTimeout 0.
const order = [];
process.nextTick(() => order.push('tick'));
const timers = new Promise((resolve) => {
  setTimeout(() => { order.push('timer 30'); resolve(['timers', ...order]); }, 30);
  setTimeout(() => order.push('timer 10'), 10);
});
const inIo = step('in I/O', (done) => fs.stat(file, () => {
  const seen = [];
  setTimeout(() => { seen.push('timeout 0'); done(...seen); }, 0);
  setImmediate(() => seen.push('immediate'));
}));
const jobs = [
  step('readFile', (done) => fs.readFile(file, 'utf8', (e, d) => done(e ? e.code : d.length, d.split('\n')[0]))),
  step('readFile missing', (done) => fs.readFile(file + '.missing', (e) => done(e.code))),
  ...[0, 1, 2, 3, 4, 5].map((i) => step('pbkdf2 ' + i, (done) =>
    crypto.pbkdf2('secret', 'salt' + i, 20000, 8, 'sha256', (e, k) => done(k.toString('hex'))))),
  step('gzip', (done) => zlib.gzip(Buffer.alloc(100000, 'x'), (e, z) => zlib.gunzip(z, (e2, back) => done(back.length)))),
  step('lookup', (done) => dns.lookup('localhost', { family: 4 }, (e, a) => done(e ? e.code : a))),
  step('child', (done) => execFile('sh', ['-c', 'echo child out; exit 4'], (e, out) => done(e.code, out.trim()))),
  step('stat', (done) => fs.stat(file, (e, s) => done(e ? e.code : s.size))),
  timers,
  inIo,
];
Promise.all(jobs).then((results) => {
  for (const r of results) console.log(r.join(' '));
  setTimeout(() => { console.log('exitCode 3'); process.exitCode = 3; }, 20);
});
"#;

/// process.exit() while the pool is still busy: libuv joins its threads from
/// an exit handler.
const NODE_EXIT_BUSY: &str = r#"'use strict';
const crypto = require('crypto');
for (let i = 0; i < 8; i++) crypto.pbkdf2('secret', 'salt' + i, 50000, 8, 'sha256', () => {});
require('fs').readFile(__filename, () => {});
setTimeout(() => { console.log('exit 5 with the pool busy'); process.exit(5); }, 5);
"#;

/// An uncaught exception after pool work: status 1, the stack on stderr.
const NODE_THROW: &str = r#"'use strict';
require('crypto').pbkdf2('secret', 'salt', 1000, 8, 'sha256', (e, k) => {
  console.log('key', k.toString('hex'));
  throw new Error('thrown from a pool callback');
});
"#;

#[test]
fn node_pool_timers_and_exits() {
    let Some(node) = program_or_skip("node_pool_timers_and_exits", "node", "nodejs") else {
        return;
    };
    let tmp = TempDir::new("node");
    let data = tmp.path().join("data.txt");
    std::fs::write(&data, "hello from a file\n".repeat(1000)).expect("write data");
    let scripts = [
        ("pool.js", NODE_POOL),
        ("exit_busy.js", NODE_EXIT_BUSY),
        ("throw.js", NODE_THROW),
    ];
    for (name, text) in scripts {
        std::fs::write(tmp.path().join(name), text).expect("write script");
    }
    let node_cmd = |script: &str| {
        let mut c = Command::new(&node);
        c.arg(tmp.path().join(script))
            .arg(&data)
            .current_dir(tmp.path());
        c
    };
    let mut native: Vec<Outcome> = Vec::new();
    in_every_mode("node", |mode| {
        for (i, (script, _)) in scripts.iter().enumerate() {
            let got = mode
                .run(node_cmd(script))
                .map_err(|e| format!("{script}: {e}"))?;
            match native.get(i) {
                Some(want) => same_as(want, &got).map_err(|e| format!("{script}: {e}"))?,
                None => native.push(got),
            }
        }
        if mode == Mode::Native {
            let want_pool = "readFile 18000 hello from a file\nreadFile missing ENOENT\n\
                pbkdf2 0 483151816c6f3d92\npbkdf2 1 50022b0fd30749af\npbkdf2 2 723e6d894b0176bf\n\
                pbkdf2 3 842bf2b020a9c3e9\npbkdf2 4 d5f34c57e951ed14\npbkdf2 5 da82f43010793498\n\
                gzip 100000\nlookup 127.0.0.1\nchild 4 child out\nstat 18000\n\
                timers tick timer 10 timer 30\nin I/O immediate timeout 0\nexitCode 3\n";
            let pool = &native[0];
            if pool.status.code() != Some(3) || pool.stdout != want_pool {
                return Err(format!("pool.js: {pool:?}"));
            }
            let busy = &native[1];
            if busy.status.code() != Some(5) || busy.stdout != "exit 5 with the pool busy\n" {
                return Err(format!("exit_busy.js: {busy:?}"));
            }
            let threw = &native[2];
            if threw.status.code() != Some(1)
                || !threw.stderr.contains("thrown from a pool callback")
            {
                return Err(format!("throw.js: {threw:?}"));
            }
        }
        Ok(())
    });
}

// ---- python3 multiprocessing ------------------------------------------------

/// A Pool's queue locks are `sem_open` semaphores shared with its worker
/// processes; leaving the `with` block, the main thread waits on one that a
/// worker holds until the pool's own handler thread sends it a sentinel.
/// Under green threads that wait used to block the OS thread the handler
/// threads run on (a hang before exit on one worker and on two).
const PY_POOL: &str = r#"import multiprocessing as mp
def square(x):
    return x * x
if __name__ == "__main__":
    with mp.Pool(2) as p:
        print(p.map(abs, [-1, -2, -3]))
        print(sum(p.map(square, range(500), chunksize=1)))
        print(p.apply_async(square, (7,)).get(timeout=20))
    q, lock = mp.Queue(), mp.Lock()
    def put(q, lock, i):
        with lock:
            q.put(i)
    procs = [mp.Process(target=put, args=(q, lock, i)) for i in range(3)]
    for x in procs:
        x.start()
    print(sorted(q.get() for _ in procs))
    for x in procs:
        x.join()
    print([x.exitcode for x in procs])
"#;

#[test]
fn python_multiprocessing_pool() {
    let Some(python) = program_or_skip("python_multiprocessing_pool", "python3", "python3") else {
        return;
    };
    let tmp = TempDir::new("python");
    let script = tmp.path().join("pool.py");
    std::fs::write(&script, PY_POOL).expect("write script");
    let mut native = None;
    in_every_mode("python3 multiprocessing", |mode| {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).current_dir(tmp.path());
        let got = mode.run(cmd)?;
        match &native {
            Some(want) => same_as(want, &got),
            None if got.status.success()
                && got.stdout == "[1, 2, 3]\n41541750\n49\n[0, 1, 2]\n[0, 0, 0]\n" =>
            {
                native = Some(got);
                Ok(())
            }
            None => Err(format!("unexpected: {got:?}")),
        }
    });
}

/// Three `worker_threads`, each computing and posting its result back. As
/// green threads on one OS thread they crashed in V8's `Isolate::Exit` (the
/// isolate it restores is another worker's, kept in a shared thread-local):
/// node's worker start routine is now kept native.
const NODE_WORKERS: &str = r#"'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
if (isMainThread) {
  let done = 0; const res = [];
  for (let i = 0; i < 3; i++) {
    const w = new Worker(__filename, { workerData: i });
    w.on('message', (m) => { res[i] = m; });
    w.on('exit', () => { if (++done === 3) console.log(res.join(' ')); });
  }
} else {
  let s = 0;
  for (let k = 0; k < 1e6; k++) s += k % (workerData + 2);
  parentPort.postMessage(`w${workerData}:${s}`);
}
"#;

#[test]
fn node_worker_threads() {
    let Some(node) = program_or_skip("node_worker_threads", "node", "nodejs") else {
        return;
    };
    let tmp = TempDir::new("node-workers");
    let script = tmp.path().join("workers.js");
    std::fs::write(&script, NODE_WORKERS).expect("write script");
    let mut native = None;
    in_every_mode("node worker_threads", |mode| {
        let mut cmd = Command::new(&node);
        cmd.arg(&script).current_dir(tmp.path());
        let got = mode.run(cmd)?;
        match &native {
            Some(want) => same_as(want, &got),
            None if got.status.success() && got.stdout == "w0:500000 w1:999999 w2:1500000\n" => {
                native = Some(got);
                Ok(())
            }
            None => Err(format!("unexpected: {got:?}")),
        }
    });
}

// ---- redis-benchmark --threads 2 against redis-server ----------------------

/// The rate `redis-benchmark -q` reported for `test` ("SET: 12345.67 requests
/// per second, ..."); its progress lines end in `\r`, the result in `\n`.
fn redis_rate(stdout: &str, test: &str) -> Option<f64> {
    let prefix = format!("{test}: ");
    stdout
        .split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .find_map(|rest| rest.split_once(" requests per second"))
        .and_then(|(rate, _)| rate.parse().ok())
}

#[test]
fn redis_benchmark_threads_2() {
    let test = "redis_benchmark_threads_2";
    let (Some(server), Some(bench)) = (
        program_or_skip(test, "redis-server", "redis-server"),
        program_or_skip(test, "redis-benchmark", "redis-tools"),
    ) else {
        return;
    };
    let tmp = TempDir::new("redis");
    let port = free_port();
    let mut cmd = Command::new(server);
    cmd.args([
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--bind", "127.0.0.1", "--dir"])
    .arg(tmp.path());
    let redis = Server::start("redis-server", cmd, port, &tmp.path().join("redis.log"));
    let tests = ["SET", "GET"];
    in_every_mode("redis-benchmark --threads 2", |mode| {
        let mut c = Command::new(&bench);
        c.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args([
            "--threads",
            "2",
            "-n",
            "5000",
            "-q",
            "-t",
            "set,get",
        ]);
        let out = mode.run(c)?;
        let missing: Vec<&str> = tests
            .iter()
            .copied()
            .filter(|t| !redis_rate(&out.stdout, t).is_some_and(|r| r > 0.0))
            .collect();
        if !out.status.success() || !missing.is_empty() || !out.stderr.is_empty() {
            return Err(format!(
                "no positive rate for {missing:?}: {out:?}\nserver log:\n{}",
                redis.log()
            ));
        }
        Ok(())
    });
}

// ---- redis-server as the green program --------------------------------------

/// The exchange `redis_server_is_the_green_program` checks word for word:
/// (command, reply as `redis-cli` prints it).
const REDIS_EXCHANGE: [(&[&str], &str); 6] = [
    (&["SET", "greeting", "hello"], "OK"),
    (&["GET", "greeting"], "hello"),
    (&["INCRBY", "counter", "41"], "41"),
    (&["INCR", "counter"], "42"),
    (&["RPUSH", "list", "a", "b", "c"], "3"),
    (&["LRANGE", "list", "0", "-1"], "a\nb\nc"),
];

/// redis-server itself under green threads (its main thread, its bio
/// threads and jemalloc's background thread become coroutines): exact
/// replies to `redis-cli`, 50 native `redis-benchmark` clients served, and
/// a clean exit on SHUTDOWN. With a TLS block from malloc for each green
/// thread it died in jemalloc's `mallctl` before it listened; glibc's own
/// threads take theirs from their stacks, and so do ours now.
#[test]
fn redis_server_is_the_green_program() {
    let test = "redis_server_is_the_green_program";
    let (Some(server), Some(cli), Some(bench)) = (
        program_or_skip(test, "redis-server", "redis-server"),
        program_or_skip(test, "redis-cli", "redis-tools"),
        program_or_skip(test, "redis-benchmark", "redis-tools"),
    ) else {
        return;
    };
    in_every_mode("redis-server as the program", |mode| {
        let tmp = TempDir::new("redis-green");
        let port = free_port().to_string();
        let mut cmd = Command::new(&server);
        cmd.args(["--port", &port, "--save", "", "--appendonly", "no"])
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(tmp.path());
        let log = tmp.path().join("redis.log");
        let redis = Server::try_start("redis-server", mode.wrap(cmd), port.parse().unwrap(), &log)?;
        let ask = |args: &[&str]| {
            let mut c = Command::new(&cli);
            c.args(["-h", "127.0.0.1", "-p", &port]).args(args);
            common::run_limited(c, RUN)
        };
        for (args, want) in REDIS_EXCHANGE {
            let got = ask(args)?;
            if got.stdout.trim_end() != want {
                return Err(format!(
                    "{args:?}: {got:?}, not {want:?}\nlog:\n{}",
                    redis.log()
                ));
            }
        }
        let mut c = Command::new(&bench);
        c.args(["-h", "127.0.0.1", "-p", &port]).args([
            "-c",
            "50",
            "-n",
            "5000",
            "-q",
            "-t",
            "set,get,incr,lpush",
        ]);
        let out = common::run_limited(c, RUN)?;
        let missing: Vec<&str> = ["SET", "GET", "INCR", "LPUSH"]
            .into_iter()
            .filter(|t| !redis_rate(&out.stdout, t).is_some_and(|r| r > 0.0))
            .collect();
        if !out.status.success() || !missing.is_empty() {
            return Err(format!(
                "no positive rate for {missing:?}: {out:?}\nlog:\n{}",
                redis.log()
            ));
        }
        // 5,000 INCRs by the benchmark on its own key, after ours.
        let counter = ask(&["GET", "counter"])?;
        if counter.stdout.trim_end() != "42" {
            return Err(format!("counter: {counter:?}"));
        }
        ask(&["SHUTDOWN", "NOSAVE"])?;
        let log_now = redis.log();
        match redis.exit_within(RUN) {
            Some(status) if status.success() => Ok(()),
            other => Err(format!("after SHUTDOWN: {other:?}\nlog:\n{log_now}")),
        }
    });
}

// ---- wrk -t2 against nginx -------------------------------------------------

/// Counts responses per wrk thread and prints them at the end, so a thread that
/// never ran shows.
const WRK_SCRIPT: &str = r#"local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) responses = 0 end
function response(status, headers, body) responses = responses + 1 end
function done(summary, latency, requests)
  for i, t in ipairs(threads) do
    io.write(string.format("thread %d responses %d\n", i, t:get("responses")))
  end
end
"#;

/// nginx, one process, everything it writes under `dir`.
fn nginx_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n}}\n"
    )
}

#[test]
fn wrk_t2_against_nginx() {
    let test = "wrk_t2_against_nginx";
    let (Some(nginx), Some(wrk)) = (
        program_or_skip(test, "nginx", "nginx-light"),
        program_or_skip(test, "wrk", "wrk"),
    ) else {
        return;
    };
    let tmp = TempDir::new("nginx");
    let port = free_port();
    std::fs::create_dir(tmp.path().join("html")).expect("mkdir html");
    std::fs::write(tmp.path().join("html/index.html"), "hello from nginx\n").expect("write");
    let conf = tmp.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(tmp.path(), port)).expect("write nginx.conf");
    let script = tmp.path().join("count.lua");
    std::fs::write(&script, WRK_SCRIPT).expect("write count.lua");
    let mut cmd = Command::new(nginx);
    // -e: the error log before the config is read (the default is /var/log).
    cmd.arg("-e")
        .arg(tmp.path().join("error.log"))
        .arg("-p")
        .arg(tmp.path())
        .arg("-c")
        .arg(&conf);
    let server = Server::start("nginx", cmd, port, &tmp.path().join("nginx.out"));
    let url = format!("http://127.0.0.1:{port}/");
    in_every_mode("wrk -t2 -c20 -d2s", |mode| {
        let mut c = Command::new(&wrk);
        c.args(["-t2", "-c20", "-d2s", "-s"]).arg(&script).arg(&url);
        let start = Instant::now();
        let out = mode.run(c)?;
        let wall = start.elapsed();
        let requests: u64 = out
            .stdout
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0);
        let per_thread: Vec<u64> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("thread "))
            .filter_map(|l| l.split_once(" responses "))
            .filter_map(|(_, n)| n.parse().ok())
            .collect();
        let mut problems = Vec::new();
        if !out.status.success() {
            problems.push(format!("status {}", out.status));
        }
        if requests == 0 {
            problems.push("no requests".to_owned());
        }
        if per_thread.len() != 2 || per_thread.contains(&0) {
            problems.push(format!("responses per thread {per_thread:?}"));
        }
        for bad in ["Socket errors", "Non-2xx"] {
            if out.stdout.contains(bad) {
                problems.push(format!("a {bad:?} line"));
            }
        }
        // -d2s: a run that ends long after 2 s ignored its timer.
        if wall > Duration::from_secs(12) {
            problems.push(format!("took {wall:?} for a 2 s run"));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}: {out:?}\nnginx error.log:\n{}",
            problems.join(", "),
            std::fs::read_to_string(tmp.path().join("error.log")).unwrap_or_default()
        ))
    });
    drop(server);
}

// ---- dig against dnsmasq ---------------------------------------------------

/// dig's header line holds a random query id: "id: 12345" becomes "id: ID".
fn mask_dig_id(out: &Outcome) -> Outcome {
    let stdout = out
        .stdout
        .lines()
        .map(|l| match l.find(" id: ") {
            Some(at) => format!("{} id: ID\n", &l[..at]),
            None => format!("{l}\n"),
        })
        .collect();
    Outcome {
        status: out.status,
        stdout,
        stderr: out.stderr.clone(),
    }
}

#[test]
fn dig_against_dnsmasq() {
    let test = "dig_against_dnsmasq";
    let (Some(dnsmasq), Some(dig)) = (
        program_or_skip(test, "dnsmasq", "dnsmasq-base"),
        program_or_skip(test, "dig", "bind9-dnsutils"),
    ) else {
        return;
    };
    let tmp = TempDir::new("dnsmasq");
    let port = free_port();
    let mut cmd = Command::new(dnsmasq);
    cmd.args(["--no-daemon", "--conf-file=/dev/null", "--pid-file="])
        .arg(format!("--port={port}"))
        .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--address=/test.local/127.0.0.7",
        ])
        .arg("--address=/nx.local/");
    let server = Server::start("dnsmasq", cmd, port, &tmp.path().join("dnsmasq.log"));
    // A DNS server that never answers: dig's own timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let silent_port = silent.local_addr().expect("addr").port();

    // (what, server port, arguments, the exact stdout where it is known)
    let cases: [(&str, u16, &[&str], Option<&str>); 4] = [
        (
            "one name",
            port,
            &["+short", "+time=2", "host.test.local"],
            Some("127.0.0.7\n"),
        ),
        (
            "two names",
            port,
            &["+short", "+time=2", "a.test.local", "b.test.local"],
            Some("127.0.0.7\n127.0.0.7\n"),
        ),
        (
            "NXDOMAIN",
            port,
            &["+noall", "+comments", "+time=2", "missing.nx.local"],
            None,
        ),
        (
            "no answer",
            silent_port,
            &["+short", "+time=1", "host.test.local"],
            None,
        ),
    ];
    let mut native: Vec<Outcome> = Vec::new();
    in_every_mode("dig", |mode| {
        for (i, (name, port, args, want)) in cases.iter().enumerate() {
            let mut c = Command::new(&dig);
            c.arg("@127.0.0.1")
                .args(["-p", &port.to_string(), "+tries=1"])
                .args(*args);
            let got = mask_dig_id(&mode.run(c).map_err(|e| format!("{name}: {e}"))?);
            match native.get(i) {
                Some(first) => same_as(first, &got).map_err(|e| format!("{name}: {e}"))?,
                None => {
                    if let Some(want) = want
                        && (got.stdout != *want || !got.status.success())
                    {
                        return Err(format!("{name}: want {want:?}: {got:?}"));
                    }
                    native.push(got);
                }
            }
        }
        if mode == Mode::Native {
            let nx = &native[2];
            if !nx.status.success() || !nx.stdout.contains("status: NXDOMAIN, id: ID") {
                return Err(format!("NXDOMAIN: {nx:?}"));
            }
            let silent = &native[3];
            if silent.status.code() != Some(9) || !silent.stdout.contains("timed out") {
                return Err(format!("no answer: {silent:?}"));
            }
        }
        Ok(())
    });
    drop(silent);
    drop(server);
}
