//! `PATCHALL_IO=uring`: a coroutine's socket reads and writes are operations
//! of its scheduler's io_uring. Every test runs its body in a child process
//! of this binary with the variable set (the configuration is read once per
//! process). The rest of the hook suites run under it too in CI's second
//! pass (README, "Testing").

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

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

/// Counts one system call's entries made by the calling thread.
struct Calls(OwnedFd);

impl Calls {
    fn start(name: &str) -> Option<Calls> {
        let id: u64 = std::fs::read_to_string(format!(
            "/sys/kernel/tracing/events/syscalls/sys_enter_{name}/id"
        ))
        .ok()?
        .trim()
        .parse()
        .ok()?;
        // perf_event_attr: type, size, config, then zeros.
        let mut attr = [0u64; 16];
        attr[0] = 2 | (128 << 32); // PERF_TYPE_TRACEPOINT, size 128
        attr[1] = id;
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

    fn count(&self) -> u64 {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a local.
        let r = unsafe { libc::syscall(libc::SYS_read, self.0.as_raw_fd(), &mut n, 8) };
        assert_eq!(r, 8, "reading a perf counter");
        n
    }
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Runs `body` in a coroutine with a ticker beside it; returns the body's
/// result and how often the ticker ran meanwhile.
fn in_coroutine<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> (T, usize) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (ticks.clone(), stop.clone());
    let ticker = patchall::spawn(move || {
        while !s.load(SeqCst) {
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    let r = patchall::spawn(body).unwrap().join().unwrap();
    stop.store(true, SeqCst);
    ticker.join().unwrap();
    (r, ticks.load(SeqCst))
}

/// Two coroutines ping-pong over TCP: every byte comes back, and the thread
/// makes no `recvfrom` or `sendto` of its own, only `io_uring_enter`.
#[test]
fn socket_reads_and_writes_are_ring_operations() {
    under_uring("socket_reads_and_writes_are_ring_operations", || {
        const ROUNDS: usize = 200;
        let (mut a, mut b) = tcp_pair();
        let calls = ["recvfrom", "sendto", "io_uring_enter"].map(Calls::start);
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
        let (mut a, mut b) = tcp_pair();
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
        let (mut a, mut b) = tcp_pair();
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
            let (_a, b) = tcp_pair();
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
            let (mut a, b) = tcp_pair();
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
            let (mut a, mut b) = tcp_pair();
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
