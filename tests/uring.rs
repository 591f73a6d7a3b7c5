//! `PATCHALL_IO=uring`: a coroutine's socket reads and writes are operations
//! of its scheduler's io_uring. Every test runs its body in a child process
//! of this binary with the variable set (the configuration is read once per
//! process). The rest of the hook suites run under it too in CI's second
//! pass (README, "Two commands"); the C server below runs under the launcher
//! with `--io uring`.

mod common;
mod data_calls;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Calls;
use data_calls::in_coroutine;

/// Runs the test `name` again in a child with `PATCHALL_IO=uring`, where
/// `body` runs; passes if the child's does.
fn under_uring(name: &str, body: impl FnOnce()) {
    if std::env::var("PATCHALL_IO").as_deref() == Ok("uring") {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("PATCHALL_IO", "uring")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} under PATCHALL_IO=uring:\n{text}"
    );
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
    assert!(
        !text.contains("no io_uring here"),
        "the ring was refused:\n{text}"
    );
}

/// Two coroutines ping-pong over TCP: every byte comes back, and the thread
/// makes no `recvfrom` or `sendto` of its own, only `io_uring_enter`.
#[test]
fn socket_reads_and_writes_are_ring_operations() {
    under_uring("socket_reads_and_writes_are_ring_operations", || {
        const ROUNDS: usize = 200;
        let (mut a, mut b) = common::tcp_pair();
        let calls = ["recvfrom", "sendto", "io_uring_enter"].map(|n| Calls::start(n, false));
        let before = calls.each_ref().map(|c| c.as_ref().map(Calls::count));
        let echo = patchall::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..ROUNDS {
                b.read_exact(&mut buf).unwrap();
                b.write_all(&buf).unwrap();
            }
        })
        .unwrap();
        let client = patchall::spawn(move || {
            let mut buf = [0u8; 64];
            for i in 0..ROUNDS {
                a.write_all(&[i as u8; 64]).unwrap();
                a.read_exact(&mut buf).unwrap();
                assert_eq!(buf, [i as u8; 64], "round {i}");
            }
        })
        .unwrap();
        client.join().unwrap();
        echo.join().unwrap();
        let [Some(recvs), Some(sends), Some(enters)] = calls else {
            eprintln!("no perf tracepoint counters here: checked the data only");
            return;
        };
        let [Some(r0), Some(s0), Some(e0)] = before else {
            unreachable!("counted above")
        };
        let (recvs, sends, enters) = (recvs.count() - r0, sends.count() - s0, enters.count() - e0);
        assert_eq!((recvs, sends), (0, 0), "calls made beside the ring");
        assert!(enters > 0, "no io_uring_enter: the ring was not used");
    });
}

/// A read that SO_RCVTIMEO ends fails with EAGAIN after the timeout, the
/// other coroutines running meanwhile; the data sent afterwards is read
/// whole by the next read (the cancelled operation took none of it).
#[test]
fn a_read_its_socket_timeout_ends_loses_no_data() {
    under_uring("a_read_its_socket_timeout_ends_loses_no_data", || {
        let (mut a, mut b) = common::tcp_pair();
        b.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let ((first, waited, second), ticks) = in_coroutine(move || {
            let started = Instant::now();
            let mut buf = [0u8; 16];
            let first = b.read(&mut buf).map_err(|e| e.kind());
            let waited = started.elapsed();
            a.write_all(b"late").unwrap();
            let n = b.read(&mut buf).unwrap();
            (first, waited, buf[..n].to_vec())
        });
        assert_eq!(first, Err(ErrorKind::WouldBlock));
        assert!(waited >= Duration::from_millis(90), "woke after {waited:?}");
        assert_eq!(second, b"late");
        assert!(ticks > 0, "the read blocked the thread");
    });
}

/// `patchall::timeout` ends a ring read with its error; the data written
/// afterwards is still there for the next read.
#[test]
fn a_timeout_cancels_a_ring_read_and_the_data_stays() {
    under_uring("a_timeout_cancels_a_ring_read_and_the_data_stays", || {
        let (mut a, mut b) = common::tcp_pair();
        let ((first, second), ticks) = in_coroutine(move || {
            let mut buf = [0u8; 16];
            let first = patchall::timeout(Duration::from_millis(50), || {
                b.read(&mut buf).map_err(|e| e.kind())
            });
            a.write_all(b"after").unwrap();
            let n = b.read(&mut buf).unwrap();
            (first.is_err(), buf[..n].to_vec())
        });
        assert!(first, "the read outlived its timeout");
        assert_eq!(second, b"after");
        assert!(ticks > 0, "the read blocked the thread");
    });
}

/// A read parked in the ring sees end of file when another coroutine shuts
/// the socket down for reading, data after another closed it, and a big write the reader drains slowly
/// arrives whole, in order.
#[test]
fn a_ring_read_ends_at_shutdown_or_data_and_big_writes_arrive_whole() {
    under_uring(
        "a_ring_read_ends_at_shutdown_or_data_and_big_writes_arrive_whole",
        || {
            let (_a, b) = common::tcp_pair();
            let b2 = b.try_clone().unwrap();
            let reader = patchall::spawn(move || {
                let mut b = b;
                b.read(&mut [0u8; 8]).map_err(|e| e.kind())
            })
            .unwrap();
            let closer = patchall::spawn(move || {
                patchall::sleep(Duration::from_millis(30));
                b2.shutdown(Shutdown::Read).unwrap();
            })
            .unwrap();
            closer.join().unwrap();
            assert_eq!(reader.join().unwrap(), Ok(0));

            // A close from another coroutine leaves the read in flight, as
            // natively: the operation holds the socket, whose data it reads.
            let (mut a, b) = common::tcp_pair();
            let fd = b.as_raw_fd();
            let b = std::mem::ManuallyDrop::new(b);
            let reader = patchall::spawn(move || {
                let mut b: &TcpStream = &b;
                let mut buf = [0u8; 8];
                let n = b.read(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .unwrap();
            let closer = patchall::spawn(move || {
                patchall::sleep(Duration::from_millis(30));
                // SAFETY: the reader's stream is never dropped; this closes it.
                assert_eq!(unsafe { libc::close(fd) }, 0);
                patchall::sleep(Duration::from_millis(30));
                a.write_all(b"still").unwrap();
            })
            .unwrap();
            closer.join().unwrap();
            assert_eq!(reader.join().unwrap(), b"still");

            const BYTES: usize = 8 << 20;
            let (mut a, mut b) = common::tcp_pair();
            let writer = patchall::spawn(move || {
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
                a.write_all(&data).unwrap();
            })
            .unwrap();
            let reader = patchall::spawn(move || {
                let mut got = Vec::with_capacity(BYTES);
                let mut buf = vec![0u8; 7001];
                loop {
                    let n = b.read(&mut buf).unwrap();
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.len() % 5 == 0 {
                        patchall::sleep(Duration::from_micros(100));
                    }
                }
            })
            .unwrap();
            writer.join().unwrap();
            let got = reader.join().unwrap();
            assert_eq!(got.len(), BYTES);
            assert!(got.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
        },
    );
}

/// An unmodified thread-per-connection C server under `patchall run --io
/// uring --green-threads`: 40 clients at once, 20 round trips of 1,000 bytes
/// each, every byte checked; the server holds an io_uring while it serves
/// and counts every byte.
#[test]
fn a_green_c_server_serves_through_the_ring() {
    const CLIENTS: usize = 40;
    const ROUNDS: usize = 20;
    const SIZE: usize = 1000;
    let mut inner = Command::new(common::c_program("echo_threads"));
    inner.arg(CLIENTS.to_string());
    let mut cmd = common::launched_with(&["--io", "uring", "--green-threads"], inner);
    common::strip_inherited(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = common::port_line(&mut out);
    let connected = Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let connected = connected.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut back = vec![0u8; SIZE];
                for round in 0..ROUNDS {
                    let data = vec![(i * 7 + round) as u8; SIZE];
                    s.write_all(&data).unwrap();
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, data, "client {i}, round {round}");
                    if round == 0 {
                        connected.wait();
                    }
                }
            })
        })
        .collect();
    connected.wait();
    // Every client is served now: the server's fds include its ring.
    let ring = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target.to_string_lossy().contains("io_uring"));
    for c in clients {
        c.join().unwrap();
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the server did not exit after its last client");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        ring,
        "the server had no io_uring fd while serving; stderr: {err}"
    );
    assert!(!err.contains("no io_uring"), "{err}");
    assert_eq!(
        rest.trim(),
        format!(
            "served {} bytes in {CLIENTS} connections",
            CLIENTS * ROUNDS * SIZE
        )
    );
}
