//! The readiness cache: a read that found nothing (EAGAIN, or a TCP read
//! shorter than asked) makes the next read park without a call, and nothing
//! that no edge announces is ever waited for. System calls are counted with a
//! perf tracepoint counter on the coroutines' thread where the kernel allows
//! it; the tests that count say so and check only the data otherwise.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::Calls;

fn counters(threads: bool) -> Option<(Calls, Calls)> {
    let c = Calls::start("recvfrom", threads).zip(Calls::start("epoll_pwait", threads));
    if c.is_none() {
        eprintln!("no perf tracepoint counters here: checking the data only");
    }
    c
}

/// Runs `body` in a coroutine on this thread with a ticker beside it; fails
/// if it takes longer than `limit` (a read that waits for an edge that never
/// comes) or if the ticker never ran (the body blocked the thread).
fn in_coroutine<T: Send + 'static>(
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
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
    let worker = patchall::spawn(move || patchall::timeout(limit, body)).unwrap();
    let r = worker.join().unwrap();
    stop.store(true, SeqCst);
    ticker.join().unwrap();
    assert!(ticks.load(SeqCst) > 0, "the other coroutine never ran");
    r.expect("a read waited for an edge that never came")
}

fn read_exact_in_reads(s: &mut TcpStream, want: usize) -> (Vec<u8>, usize) {
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "early end of file after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    (got, reads)
}

#[test]
fn a_read_after_a_short_read_parks_without_a_call() {
    const ROUNDS: usize = 300;
    let (mut server, mut client) = common::tcp_pair();
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for i in 0..ROUNDS {
            client.write_all(&[i as u8; 64]).unwrap();
            client.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [i as u8; 64], "echo of round {i}");
        }
    });
    let calls = counters(false);
    let before = calls.as_ref().map(|(r, e)| (r.count(), e.count()));
    in_coroutine(Duration::from_secs(60), move || {
        let mut buf = [0u8; 4096];
        let mut echoed = 0;
        while echoed < ROUNDS * 64 {
            let n = server.read(&mut buf).unwrap();
            assert!(n > 0);
            server.write_all(&buf[..n]).unwrap();
            echoed += n;
        }
    });
    peer.join().unwrap();
    if let (Some((r, _)), Some((r0, _))) = (calls, before) {
        let recvs = r.count() - r0;
        // Before the cache: two per round trip (the data, then EAGAIN).
        assert!(
            recvs <= (ROUNDS + ROUNDS / 10) as u64,
            "{recvs} recvfrom for {ROUNDS} round trips"
        );
    }
}

#[test]
fn end_of_file_right_after_a_short_read_is_read() {
    for round in 0..100 {
        let (mut a, mut b) = common::tcp_pair();
        let writer = std::thread::spawn(move || {
            if round % 2 == 1 {
                std::thread::sleep(Duration::from_millis(2));
            }
            a.write_all(b"0123456789").unwrap();
            if round % 3 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(a);
        });
        let (first, second) = in_coroutine(Duration::from_secs(20), move || {
            if round % 4 == 0 {
                // Everything queued before the first read: one event for both.
                patchall::sleep(Duration::from_millis(5));
            }
            let mut buf = [0u8; 4096];
            let mut got = b.read(&mut buf).unwrap();
            while got < 10 {
                got += b.read(&mut buf[got..]).unwrap();
            }
            (got, b.read(&mut buf).unwrap())
        });
        writer.join().unwrap();
        assert_eq!((first, second), (10, 0), "round {round}");
    }
}

fn send_flags(fd: RawFd, data: &[u8], flags: libc::c_int) {
    // SAFETY: a live buffer and its length.
    let r = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) };
    assert_eq!(r, data.len() as isize);
}

fn recv_flags(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> isize {
    // SAFETY: a live buffer and its length.
    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) }
}

/// TCP urgent data: a read stops short at the urgent mark with data behind it,
/// which no further edge announces.
#[test]
fn data_behind_the_urgent_mark_is_read() {
    for waited_before in [false, true] {
        let (mut a, mut b) = common::tcp_pair();
        let (go, gone) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            if waited_before {
                std::thread::sleep(Duration::from_millis(20));
                a.write_all(b"g").unwrap();
                gone.recv().unwrap();
            }
            send_flags(a.as_raw_fd(), b"abc", 0);
            send_flags(a.as_raw_fd(), b"X", libc::MSG_OOB);
            send_flags(a.as_raw_fd(), b"def", 0);
            a
        });
        let (first, second, oob) = in_coroutine(Duration::from_secs(20), move || {
            let mut buf = [0u8; 4096];
            if waited_before {
                assert_eq!(b.read(&mut buf).unwrap(), 1);
                go.send(()).unwrap();
                // This read parks as a waiter while a coroutine keeps the
                // thread busy: everything arrives before the reactor looks,
                // and one event (readable, urgent) wakes the read, which
                // stops at the mark. No edge follows.
                let spinner = patchall::spawn(|| {
                    let until = std::time::Instant::now() + Duration::from_millis(30);
                    while std::time::Instant::now() < until {
                        std::hint::spin_loop();
                    }
                })
                .unwrap();
                let n = b.read(&mut buf).unwrap();
                spinner.join().unwrap();
                let first = buf[..n].to_vec();
                let mut x = [0u8; 1];
                let r = recv_flags(b.as_raw_fd(), &mut x, libc::MSG_OOB);
                let n = b.read(&mut buf).unwrap();
                return (first, buf[..n].to_vec(), (r, x[0]));
            }
            patchall::sleep(Duration::from_millis(20));
            let n = b.read(&mut buf).unwrap();
            let first = buf[..n].to_vec();
            // Before reading past the mark, which discards the urgent byte.
            let mut x = [0u8; 1];
            let r = recv_flags(b.as_raw_fd(), &mut x, libc::MSG_OOB);
            let n = b.read(&mut buf).unwrap();
            let second = buf[..n].to_vec();
            (first, second, (r, x[0]))
        });
        drop(writer.join().unwrap());
        assert_eq!(
            first, b"abc",
            "stopped at the mark (waited before: {waited_before})"
        );
        assert_eq!(second, b"def", "the data behind the mark");
        assert_eq!(oob, (1, b'X'));
    }
}

fn unix_pair(ty: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut sv = [0; 2];
    assert_eq!(
        // SAFETY: an array of two ints.
        unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) },
        0
    );
    // SAFETY: two new fds of ours.
    unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) }
}

/// Message sockets return one message per read, however large the buffer; a
/// unix stream stops where the writer's control data changes. Neither short
/// read means the queue is empty.
#[test]
fn short_reads_of_message_and_unix_sockets_leave_nothing_behind() {
    for (ty, name) in [
        (libc::SOCK_SEQPACKET, "seqpacket"),
        (libc::SOCK_DGRAM, "dgram"),
        (libc::SOCK_STREAM, "unix stream, control data between"),
    ] {
        for waited_before in [false, true] {
            let (r, w) = unix_pair(ty);
            let (go, gone) = std::sync::mpsc::channel();
            let writer = std::thread::spawn(move || {
                if waited_before {
                    std::thread::sleep(Duration::from_millis(20));
                    send_flags(w.as_raw_fd(), b"g", 0);
                    gone.recv().unwrap();
                }
                for i in 0..3u8 {
                    if ty == libc::SOCK_STREAM && i == 1 {
                        send_with_fd(w.as_raw_fd(), &[i; 10]);
                    } else {
                        send_flags(w.as_raw_fd(), &[i; 10], 0);
                    }
                }
                w
            });
            let reads = in_coroutine(Duration::from_secs(20), move || {
                let mut buf = [0u8; 4096];
                if waited_before {
                    assert_eq!(recv_flags(r.as_raw_fd(), &mut buf, 0), 1);
                    go.send(()).unwrap();
                }
                patchall::sleep(Duration::from_millis(20));
                let mut reads = Vec::new();
                let mut total = 0;
                while total < 30 {
                    let n = recv_flags(r.as_raw_fd(), &mut buf, 0);
                    assert!(n > 0, "{name}: {n}");
                    reads.push(buf[..n as usize].to_vec());
                    total += n as usize;
                }
                reads
            });
            drop(writer.join().unwrap());
            let want: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10]).collect();
            if ty == libc::SOCK_STREAM {
                // Where the stream stops is the kernel's business; that it
                // stopped short with data left is the point.
                assert!(reads.len() >= 2, "{name}: {reads:?}");
                assert_eq!(reads.concat(), want.concat(), "{name}");
            } else {
                assert_eq!(reads, want, "{name}, waited before: {waited_before}");
            }
        }
    }
}

/// Sends `data` with a copy of stdin's fd attached (SCM_RIGHTS).
fn send_with_fd(fd: RawFd, data: &[u8]) {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; the fields set point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` has room for one cmsg carrying one fd.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        libc::CMSG_DATA(c).cast::<RawFd>().write_unaligned(0);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::sendmsg(fd, &msg, 0) }, data.len() as isize);
}

/// A writer slower than its reader: each read is short, the next parks, and
/// the next edge wakes it. It must cost no more calls per message than trying
/// first did (two recvfrom and one epoll wait), nor lose an edge.
#[test]
fn a_slow_writer_costs_fewer_calls_per_message() {
    const MESSAGES: usize = 200;
    let (mut a, mut b) = common::tcp_pair();
    let writer = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            a.write_all(&[i as u8; 16]).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let calls = counters(false);
    let before = calls.as_ref().map(|(r, e)| (r.count(), e.count()));
    let (got, reads) = in_coroutine(Duration::from_secs(60), move || {
        read_exact_in_reads(&mut b, MESSAGES * 16)
    });
    writer.join().unwrap();
    let want: Vec<u8> = (0..MESSAGES).flat_map(|i| [i as u8; 16]).collect();
    assert_eq!(got, want, "every byte, in order");
    if let (Some((r, e)), Some((r0, e0))) = (calls, before) {
        let (recvs, waits) = (r.count() - r0, e.count() - e0);
        assert!(
            recvs <= reads as u64 + 5,
            "{recvs} recvfrom for {reads} reads that returned data"
        );
        assert!(
            recvs + waits <= (reads as u64) * 22 / 10 + 10,
            "{recvs} recvfrom + {waits} epoll waits for {reads} reads"
        );
    }
}

/// A reader slower than its writer always finds data waiting, yet after a
/// short read it parks first (as tokio does): the wake-up then costs a poll,
/// never a failing read, and no byte waits for an edge that already came.
#[test]
fn a_slow_reader_parks_without_a_failing_read() {
    const MESSAGES: usize = 200;
    let (mut a, mut b) = common::tcp_pair();
    let writer = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            a.write_all(&[i as u8; 16]).unwrap();
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let calls = counters(false);
    let before = calls.as_ref().map(|(r, e)| (r.count(), e.count()));
    let (got, reads) = in_coroutine(Duration::from_secs(60), move || {
        let mut got = Vec::new();
        let mut reads = 0;
        let mut buf = [0u8; 4096];
        while got.len() < MESSAGES * 16 {
            let n = b.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            reads += 1;
            // Busy longer than the writer's pause: the next bytes are in.
            let until = std::time::Instant::now() + Duration::from_micros(200);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        (got, reads)
    });
    writer.join().unwrap();
    let want: Vec<u8> = (0..MESSAGES).flat_map(|i| [i as u8; 16]).collect();
    assert_eq!(got, want, "every byte, in order");
    if let (Some((r, e)), Some((r0, e0))) = (calls, before) {
        let (recvs, waits) = (r.count() - r0, e.count() - e0);
        assert!(
            recvs <= reads as u64 + 5,
            "{recvs} recvfrom for {reads} reads ({waits} epoll waits)"
        );
    }
}

/// Two workers, each serving half of the connections: every echo comes back,
/// and the reads cost about one recvfrom each.
#[test]
fn echo_on_two_workers_reads_once_per_round_trip() {
    const CONNS: usize = 20;
    const ROUNDS: usize = 100;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Started before the counter, so that only the workers' calls count.
    let clients = std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = (0..CONNS)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                s
            })
            .collect();
        let mut buf = [0u8; 64];
        for round in 0..ROUNDS {
            for (i, c) in conns.iter_mut().enumerate() {
                c.write_all(&[(round + i) as u8; 64]).unwrap();
            }
            for (i, c) in conns.iter_mut().enumerate() {
                c.read_exact(&mut buf).unwrap();
                assert_eq!(buf, [(round + i) as u8; 64]);
            }
        }
    });
    let calls = counters(true);
    let before = calls.as_ref().map(|(r, e)| (r.count(), e.count()));
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let mut handles = Vec::new();
    for _ in 0..CONNS {
        let (mut s, _) = l.accept().unwrap();
        handles.push(
            rt.spawn(move || {
                let mut buf = [0u8; 4096];
                let mut total = 0;
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        return total;
                    }
                    s.write_all(&buf[..n]).unwrap();
                    total += n;
                }
            })
            .unwrap(),
        );
    }
    clients.join().unwrap();
    let served: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    drop(rt);
    assert_eq!(served, CONNS * ROUNDS * 64);
    if let (Some((r, _)), Some((r0, _))) = (calls, before) {
        // The workers' counts are added as their threads end. Each
        // connection's last read sees end of file.
        let recvs = r.count() - r0;
        let trips = (CONNS * ROUNDS) as u64;
        assert!(
            recvs <= trips + trips / 10 + CONNS as u64,
            "{recvs} recvfrom for {trips} round trips"
        );
    }
}

/// Readers on both workers share one socket while a writer trickles bytes
/// into it, so that one worker's reactor records events while a reader on
/// the other is between its read and its clear: every byte is read once.
/// (Each worker's epoll reports every edge of an fd it registered, so an
/// erased event would delay a reader until its own reactor's next poll, not
/// strand it; the unit test `an_event_after_a_read_began_survives_its_clear`
/// checks the tick itself.)
#[test]
fn readers_on_two_workers_share_a_socket_without_losing_bytes() {
    const BYTES: usize = 20_000;
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let (mut a, b) = common::tcp_pair();
    let b = Arc::new(b);
    let taken = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (b, taken) = (b.clone(), taken.clone());
            rt.spawn(move || {
                patchall::timeout(Duration::from_secs(60), || {
                    let mut buf = [0u8; 7];
                    let mut mine = 0;
                    while taken.load(SeqCst) < BYTES {
                        // Short reads and full ones, racing the other worker.
                        let n = (&*b).read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        mine += n;
                        taken.fetch_add(n, SeqCst);
                    }
                    mine
                })
            })
            .unwrap()
        })
        .collect();
    for i in 0..BYTES {
        a.write_all(&[i as u8]).unwrap();
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
    drop(a); // end of file releases the readers still parked
    let read: usize = readers
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect("a reader stalled with bytes queued")
        })
        .sum();
    assert_eq!(read, BYTES);
}
