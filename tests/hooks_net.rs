//! The socket family: socket, socketpair, accept, accept4, connect, shutdown, the recv and
//! send families, setsockopt(SO_RCVTIMEO/SO_SNDTIMEO). Inside a coroutine each
//! call parks while the others run and returns what the blocking call returns;
//! outside, result and errno are the raw system call's.

mod data_calls;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use data_calls::{
    BAD_FD, Face, Outcome, after, check_reader, check_writer, close, errno, in_coroutine, outcome,
    pattern, raw_getfl, raw_write_all, recv, recv_flags,
};
use libc::{c_int, c_void, iovec, mmsghdr, msghdr, sockaddr, sockaddr_in, socklen_t};

// ---- the calls, each through the hook or by the raw system call ----

const SIN_LEN: socklen_t = std::mem::size_of::<sockaddr_in>() as socklen_t;

fn sin(addr: SocketAddrV4) -> sockaddr_in {
    sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sin(sa: &sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

/// recvfrom(2), also giving the sender's IPv4 address when there is one.
fn recvfrom_addr(
    face: Face,
    fd: i32,
    buf: &mut [u8],
    flags: c_int,
) -> (Outcome, Option<SocketAddrV4>) {
    // SAFETY: an all-zero sockaddr_in is valid.
    let mut sa: sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = SIN_LEN;
    let (p, n, a) = (
        buf.as_mut_ptr(),
        buf.len(),
        (&raw mut sa).cast::<sockaddr>(),
    );
    let got = outcome(match face {
        // SAFETY: buffer, address and length are live locals of the right sizes.
        Face::Hooked => unsafe { libc::recvfrom(fd, p.cast(), n, flags, a, &mut len) },
        // SAFETY: as above.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_recvfrom, fd, p, n, flags, a, &mut len) as isize
        },
    });
    let from =
        (got.is_ok() && sa.sin_family == libc::AF_INET as libc::sa_family_t).then(|| from_sin(&sa));
    (got, from)
}

fn recvfrom(face: Face, fd: i32, buf: &mut [u8]) -> Outcome {
    recvfrom_addr(face, fd, buf, 0).0
}

fn recvmsg(face: Face, fd: i32, buf: &mut [u8]) -> Outcome {
    recvmsg_flags(face, fd, buf, 0)
}

/// recvmsg(2) into two iovecs, the first of at most 3 bytes.
fn recvmsg_flags(face: Face, fd: i32, buf: &mut [u8], flags: c_int) -> Outcome {
    let (a, b) = buf.split_at_mut(buf.len().min(3));
    let mut iov = [a, b].map(|p| iovec {
        iov_base: p.as_mut_ptr().cast(),
        iov_len: p.len(),
    });
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    outcome(match face {
        // SAFETY: `msg` describes live, writable parts of `buf`.
        Face::Hooked => unsafe { libc::recvmsg(fd, &mut msg, flags) },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_recvmsg, fd, &mut msg, flags) as isize },
    })
}

fn send_flags(face: Face, fd: i32, buf: &[u8], flags: c_int) -> Outcome {
    let (p, n) = (buf.as_ptr(), buf.len());
    outcome(match face {
        // SAFETY: the buffer is live for its length.
        Face::Hooked => unsafe { libc::send(fd, p.cast(), n, flags) },
        // SAFETY: as above; send(2) is sendto(2) without an address.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_sendto, fd, p, n, flags, null::<sockaddr>(), 0) as isize
        },
    })
}

fn send(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    send_flags(face, fd, buf, 0)
}

fn sendto_addr(face: Face, fd: i32, buf: &[u8], to: Option<SocketAddrV4>) -> Outcome {
    let sa = to.map(sin);
    let (a, alen) = sa.as_ref().map_or((null(), 0), |s| {
        ((s as *const sockaddr_in).cast::<sockaddr>(), SIN_LEN)
    });
    let (p, n) = (buf.as_ptr(), buf.len());
    outcome(match face {
        // SAFETY: buffer and address are live for the call.
        Face::Hooked => unsafe { libc::sendto(fd, p.cast(), n, 0, a, alen) },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_sendto, fd, p, n, 0, a, alen) as isize },
    })
}

fn sendto(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    sendto_addr(face, fd, buf, None)
}

/// sendmsg(2) from three uneven iovecs.
fn sendmsg(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    let (a, rest) = buf.split_at(buf.len().min(1));
    let (b, c) = rest.split_at(rest.len() / 3);
    let mut iov = [a, b, c].map(|p| iovec {
        iov_base: p.as_ptr() as *mut c_void,
        iov_len: p.len(),
    });
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 3;
    outcome(match face {
        // SAFETY: `msg` describes live parts of `buf`, only read.
        Face::Hooked => unsafe { libc::sendmsg(fd, &msg, 0) },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_sendmsg, fd, &msg, 0) as isize },
    })
}

/// recvmmsg(2) of up to `n` datagrams of up to 64 bytes.
fn recvmmsg(
    face: Face,
    fd: i32,
    n: usize,
    flags: c_int,
    timeout: Option<Duration>,
) -> Result<Vec<Vec<u8>>, i32> {
    let mut bufs = vec![[0u8; 64]; n];
    let mut iovs: Vec<iovec> = bufs
        .iter_mut()
        .map(|b| iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<mmsghdr> = iovs
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut m: mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let tsp = ts.as_mut().map_or(null_mut(), |t| t as *mut libc::timespec);
    let (m, vlen) = (msgs.as_mut_ptr(), n as u32);
    let got = outcome(match face {
        // SAFETY: `msgs` holds `n` headers pointing at live buffers.
        Face::Hooked => unsafe { libc::recvmmsg(fd, m, vlen, flags, tsp) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_recvmmsg, fd, m, vlen, flags, tsp) as isize },
    })?;
    Ok((0..got)
        .map(|i| bufs[i][..msgs[i].msg_len as usize].to_vec())
        .collect())
}

/// sendmmsg(2) of one message per part; the count and each message's `msg_len`.
fn sendmmsg<P: AsRef<[u8]>>(face: Face, fd: i32, parts: &[P]) -> (Outcome, Vec<usize>) {
    let mut iovs: Vec<iovec> = parts
        .iter()
        .map(|p| iovec {
            iov_base: p.as_ref().as_ptr() as *mut c_void,
            iov_len: p.as_ref().len(),
        })
        .collect();
    let mut msgs: Vec<mmsghdr> = iovs
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut m: mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let (m, vlen) = (msgs.as_mut_ptr(), parts.len() as u32);
    let got = outcome(match face {
        // SAFETY: `msgs` holds one header per live part, only read.
        Face::Hooked => unsafe { libc::sendmmsg(fd, m, vlen, 0) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_sendmmsg, fd, m, vlen, 0) as isize },
    });
    (got, msgs.iter().map(|m| m.msg_len as usize).collect())
}

fn socket(face: Face, domain: c_int, ty: c_int) -> Outcome {
    outcome(match face {
        // SAFETY: no pointers involved.
        Face::Hooked => unsafe { libc::socket(domain, ty, 0) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_socket, domain, ty, 0) as isize },
    })
}

fn socketpair(face: Face, domain: c_int, ty: c_int) -> Result<(i32, i32), i32> {
    let mut fds = [-1; 2];
    let r = match face {
        // SAFETY: socketpair writes two fds into the array.
        Face::Hooked => unsafe { libc::socketpair(domain, ty, 0, fds.as_mut_ptr()) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_socketpair, domain, ty, 0, fds.as_mut_ptr()) as isize
        },
    };
    outcome(r).map(|_| (fds[0], fds[1]))
}

/// accept4(2) (accept(2) when `flags` is None), with the peer's address.
fn accept(face: Face, fd: i32, flags: Option<c_int>) -> (Outcome, Option<SocketAddrV4>) {
    // SAFETY: an all-zero sockaddr_in is valid.
    let mut sa: sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = SIN_LEN;
    let a = (&raw mut sa).cast::<sockaddr>();
    let got = outcome(match (face, flags) {
        // SAFETY: address and length are live locals of the right sizes.
        (Face::Hooked, None) => unsafe { libc::accept(fd, a, &mut len) as isize },
        // SAFETY: as above.
        (Face::Hooked, Some(f)) => unsafe { libc::accept4(fd, a, &mut len, f) as isize },
        // SAFETY: as above.
        (Face::Raw, None) => unsafe { libc::syscall(libc::SYS_accept, fd, a, &mut len) as isize },
        // SAFETY: as above.
        (Face::Raw, Some(f)) => unsafe {
            libc::syscall(libc::SYS_accept4, fd, a, &mut len, f) as isize
        },
    });
    let from =
        (got.is_ok() && sa.sin_family == libc::AF_INET as libc::sa_family_t).then(|| from_sin(&sa));
    (got, from)
}

fn connect(face: Face, fd: i32, to: SocketAddrV4) -> Outcome {
    let sa = sin(to);
    let a = (&raw const sa).cast::<sockaddr>();
    outcome(match face {
        // SAFETY: the address is a live local of the given length.
        Face::Hooked => unsafe { libc::connect(fd, a, SIN_LEN) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_connect, fd, a, SIN_LEN) as isize },
    })
}

fn set_timeout(face: Face, fd: i32, opt: c_int, tv_sec: i64, tv_usec: i64) -> Outcome {
    let tv = libc::timeval { tv_sec, tv_usec };
    let (p, n) = (
        (&raw const tv).cast::<c_void>(),
        std::mem::size_of::<libc::timeval>() as socklen_t,
    );
    outcome(match face {
        // SAFETY: the timeval is a live local of the given length.
        Face::Hooked => unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, p, n) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_setsockopt, fd, libc::SOL_SOCKET, opt, p, n) as isize
        },
    })
}

/// The timeout the kernel holds for `fd`, read by the raw system call.
fn raw_timeout(fd: i32, opt: c_int) -> Duration {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the local.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut tv,
            &mut len,
        )
    };
    assert_eq!(r, 0);
    Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000)
}

// ---- fixtures ----

fn localhost() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
}

fn local_addr(fd: i32) -> SocketAddrV4 {
    // SAFETY: an all-zero sockaddr_in is valid.
    let mut sa: sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = SIN_LEN;
    assert_eq!(
        // SAFETY: getsockname writes at most `len` bytes into the local.
        unsafe { libc::getsockname(fd, (&raw mut sa).cast(), &mut len) },
        0
    );
    from_sin(&sa)
}

/// A TCP listener on 127.0.0.1 with the given backlog (made through the hooks).
fn tcp_listener(backlog: c_int) -> (i32, SocketAddrV4) {
    tcp_listener_at(localhost(), backlog)
}

/// A TCP listener bound to `addr` (port 0: any free port).
fn tcp_listener_at(addr: SocketAddrV4, backlog: c_int) -> (i32, SocketAddrV4) {
    let fd = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
    let sa = sin(addr);
    let one: c_int = 1;
    // SAFETY: binding and listening on our own socket, the address a live local.
    unsafe {
        let p = (&raw const one).cast::<c_void>();
        assert_eq!(
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, p, 4),
            0
        );
        assert_eq!(libc::bind(fd, (&raw const sa).cast(), SIN_LEN), 0);
        assert_eq!(libc::listen(fd, backlog), 0);
    }
    (fd, local_addr(fd))
}

/// A 127.0.0.1 port nobody listens on: connecting there gives ECONNREFUSED.
fn closed_port() -> SocketAddrV4 {
    let (fd, addr) = tcp_listener(1);
    close(fd);
    addr
}

/// A TCP connection whose client end was connected inside a coroutine (so we
/// made it non-blocking), as (client, server).
fn tcp_pair(nonblocking: bool) -> (i32, i32) {
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = patchall::spawn(move || TcpStream::connect(addr).unwrap())
        .unwrap()
        .join()
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nonblocking(nonblocking).unwrap();
    server.set_nonblocking(nonblocking).unwrap();
    (client.into_raw_fd(), server.into_raw_fd())
}

fn unix_pair(nonblocking: bool) -> (i32, i32) {
    let ty = libc::SOCK_STREAM | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    socketpair(Face::Hooked, libc::AF_UNIX, ty).unwrap()
}

fn udp() -> (UdpSocket, SocketAddrV4) {
    let s = UdpSocket::bind(localhost()).unwrap();
    let std::net::SocketAddr::V4(a) = s.local_addr().unwrap() else {
        unreachable!()
    };
    (s, a)
}

/// Fills a blocking socket's send buffer with per-call MSG_DONTWAIT.
fn fill_dontwait(fd: i32) {
    let chunk = [0u8; 65536];
    while send_flags(Face::Raw, fd, &chunk, libc::MSG_DONTWAIT).is_ok() {}
    assert_eq!(errno(), libc::EAGAIN);
}

// ---- the data calls through the shared scenarios ----

#[test]
fn recv_on_unix_and_tcp() {
    check_reader("recv/unix", recv, unix_pair);
    check_reader("recv/tcp", recv, tcp_pair);
}

#[test]
fn recvfrom_on_unix_and_tcp() {
    check_reader("recvfrom/unix", recvfrom, unix_pair);
    check_reader("recvfrom/tcp", recvfrom, tcp_pair);
}

#[test]
fn recvmsg_on_unix_and_tcp() {
    check_reader("recvmsg/unix", recvmsg, unix_pair);
    check_reader("recvmsg/tcp", recvmsg, tcp_pair);
}

#[test]
fn send_on_unix() {
    check_writer("send/unix", send, unix_pair);
}

#[test]
fn sendto_on_unix() {
    check_writer("sendto/unix", sendto, unix_pair);
}

#[test]
fn sendmsg_on_unix() {
    check_writer("sendmsg/unix", sendmsg, unix_pair);
}

/// TCP through std: a client connected in a coroutine (we made it non-blocking)
/// writes 8 MiB from a coroutine, then 8 MiB more from a plain thread, which must
/// block as the user expects rather than fail with WouldBlock.
#[test]
fn large_tcp_writes_from_a_coroutine_and_then_a_plain_thread() {
    const BIG: usize = 8 << 20;
    let (c, s) = tcp_pair(false);
    let reader = std::thread::spawn(move || {
        // SAFETY: taking ownership of the server end.
        let mut s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(s) };
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    // SAFETY: taking ownership of the client end.
    let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(c) };
    let (client, ticks) = in_coroutine(move || {
        let mut client = client;
        client.write_all(&pattern(BIG)).unwrap();
        client
    });
    assert!(ticks > 0, "the thread blocked during the write");
    let mut client = client;
    client.write_all(&pattern(BIG)).unwrap();
    drop(client);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 2 * BIG);
    assert!(got[..BIG] == pattern(BIG)[..] && got[BIG..] == pattern(BIG)[..]);
}

/// The peer resets a connection with unread data: ECONNRESET for the parked
/// reader, then EPIPE for a writer, inside as outside.
#[test]
fn econnreset_then_epipe_on_tcp() {
    // SAFETY: ignoring SIGPIPE, as Rust programs do, so EPIPE is reported.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let reset = |c: i32, s: i32| {
        raw_write_all(c, b"never read");
        std::thread::sleep(Duration::from_millis(5));
        close(s);
    };
    let (c, s) = tcp_pair(false);
    let peer = after(30, move || reset(c, s));
    let ((got, then), ticks) = in_coroutine(move || {
        let got = recv(Face::Hooked, c, &mut [0u8; 8]);
        (got, send(Face::Hooked, c, b"x"))
    });
    peer.join().unwrap();
    assert_eq!((got, then), (Err(libc::ECONNRESET), Err(libc::EPIPE)));
    assert!(ticks > 0);
    close(c);
    for face in [Face::Hooked, Face::Raw] {
        let (c, s) = tcp_pair(false);
        reset(c, s);
        assert_eq!(
            recv(face, c, &mut [0u8; 8]),
            Err(libc::ECONNRESET),
            "{face:?}"
        );
        assert_eq!(send(face, c, b"x"), Err(libc::EPIPE), "{face:?}");
        close(c);
    }
}

// ---- flags: MSG_WAITALL, MSG_DONTWAIT ----

/// recv and recvmsg with MSG_WAITALL, on unix and TCP streams.
#[test]
fn recv_waitall_collects_the_full_length_across_sends() {
    type RecvFlags = fn(Face, i32, &mut [u8], c_int) -> Outcome;
    for (name, call) in [
        ("recv", recv_flags as RecvFlags),
        ("recvmsg", recvmsg_flags),
    ] {
        check_waitall(name, call);
    }
}

fn check_waitall(name: &str, call: fn(Face, i32, &mut [u8], c_int) -> Outcome) {
    let drip = |w: i32, close_after: usize| {
        after(20, move || {
            for part in [&b"ab"[..], b"cd", b"ef"].into_iter().take(close_after) {
                raw_write_all(w, part);
                std::thread::sleep(Duration::from_millis(10));
            }
            close(w);
        })
    };
    for pair in [unix_pair, tcp_pair] {
        let (r, w) = pair(false);
        let peer = drip(w, 3);
        let ((got, buf), ticks) = in_coroutine(move || {
            let mut buf = [0u8; 6];
            (call(Face::Hooked, r, &mut buf, libc::MSG_WAITALL), buf)
        });
        peer.join().unwrap();
        assert_eq!((got, &buf), (Ok(6), b"abcdef"), "{name}");
        assert!(ticks > 0);
        close(r);
        // End of file part way: what arrived, as the kernel gives it.
        let (r, w) = pair(false);
        let peer = drip(w, 1);
        let (got, _) =
            in_coroutine(move || call(Face::Hooked, r, &mut [0u8; 6], libc::MSG_WAITALL));
        peer.join().unwrap();
        assert_eq!(got, Ok(2), "{name}");
        close(r);
        // Outside: the hooked call on the end we may have made non-blocking,
        // the raw one on the blocking end (raw calls see our O_NONBLOCK).
        for face in [Face::Hooked, Face::Raw] {
            let (a, b) = pair(false);
            let (r, w) = if face == Face::Hooked { (a, b) } else { (b, a) };
            let peer = drip(w, 3);
            let mut buf = [0u8; 6];
            assert_eq!(
                call(face, r, &mut buf, libc::MSG_WAITALL),
                Ok(6),
                "{name} {face:?}"
            );
            assert_eq!(&buf, b"abcdef");
            peer.join().unwrap();
            close(r);
        }
    }
}

/// On a datagram socket MSG_WAITALL does not join datagrams: one comes back.
#[test]
fn recv_waitall_on_udp_returns_one_datagram() {
    let (r, raddr) = udp();
    let (w, _) = udp();
    let fd = r.as_raw_fd();
    let peer = after(20, move || {
        w.send_to(b"one", raddr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        w.send_to(b"two", raddr).unwrap();
    });
    let ((got, buf), _) = in_coroutine(move || {
        let mut buf = [0u8; 16];
        (
            recv_flags(Face::Hooked, fd, &mut buf, libc::MSG_WAITALL),
            buf,
        )
    });
    assert_eq!((got, &buf[..3]), (Ok(3), &b"one"[..]));
    // Outside, as the kernel: the second datagram alone.
    peer.join().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        recv_flags(Face::Hooked, fd, &mut buf, libc::MSG_WAITALL),
        Ok(3)
    );
    assert_eq!(&buf[..3], b"two");
}

#[test]
fn msg_dontwait_gives_eagain_inside_and_outside() {
    for pair in [unix_pair, tcp_pair] {
        let (r, w) = pair(false);
        // A late byte makes a wrongly parked (or blocked) call return Ok instead.
        let peer = after(1000, move || raw_write_all(w, b"late"));
        let t = Instant::now();
        let (inside, _) =
            in_coroutine(move || recv_flags(Face::Hooked, r, &mut [0u8; 4], libc::MSG_DONTWAIT));
        assert_eq!(inside, Err(libc::EAGAIN));
        // The TCP client end is one we made non-blocking: outside, MSG_DONTWAIT
        // still means "do not wait".
        assert_eq!(
            recv_flags(Face::Hooked, r, &mut [0u8; 4], libc::MSG_DONTWAIT),
            Err(libc::EAGAIN)
        );
        assert_eq!(
            recv_flags(Face::Raw, r, &mut [0u8; 4], libc::MSG_DONTWAIT),
            Err(libc::EAGAIN)
        );
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "a MSG_DONTWAIT call waited"
        );
        peer.join().unwrap();
        // Sending to a full buffer.
        fill_dontwait(r);
        let (inside, _) =
            in_coroutine(move || send_flags(Face::Hooked, r, b"x", libc::MSG_DONTWAIT));
        assert_eq!(inside, Err(libc::EAGAIN));
        assert_eq!(
            send_flags(Face::Hooked, r, b"x", libc::MSG_DONTWAIT),
            Err(libc::EAGAIN)
        );
        close(r);
        close(w);
    }
}

// ---- datagrams: sendto/recvfrom, recvmmsg, sendmmsg ----

#[test]
fn udp_sendto_and_recvfrom() {
    let (r, raddr) = udp();
    let (w, waddr) = udp();
    let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
    let sender = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(30));
        sendto_addr(Face::Hooked, wfd, b"datagram", Some(raddr))
    })
    .unwrap();
    let (((got, from), buf), ticks) = in_coroutine(move || {
        let mut buf = [0u8; 32];
        (recvfrom_addr(Face::Hooked, rfd, &mut buf, 0), buf)
    });
    assert_eq!(sender.join().unwrap(), Ok(8));
    assert_eq!(
        (got, from, &buf[..8]),
        (Ok(8), Some(waddr), &b"datagram"[..])
    );
    assert!(ticks > 0);
    // Outside: the same as the raw calls, sender's address included.
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(sendto_addr(face, wfd, b"xyz", Some(raddr)), Ok(3));
        let mut buf = [0u8; 32];
        assert_eq!(
            recvfrom_addr(face, rfd, &mut buf, 0),
            (Ok(3), Some(waddr)),
            "{face:?}"
        );
        assert_eq!(
            recvfrom_addr(face, rfd, &mut buf, libc::MSG_DONTWAIT).0,
            Err(libc::EAGAIN)
        );
    }
    drop((r, w));
}

#[test]
fn recvmmsg_waitforone_parks_for_the_first_datagram() {
    let (r, raddr) = udp();
    let (w, _) = udp();
    let fd = r.as_raw_fd();
    let peer = after(30, move || {
        w.connect(raddr).unwrap();
        let (n, _) = sendmmsg(Face::Raw, w.as_raw_fd(), &[b"one", b"two"]);
        assert_eq!(n, Ok(2));
    });
    let (got, ticks) =
        in_coroutine(move || recvmmsg(Face::Hooked, fd, 4, libc::MSG_WAITFORONE, None));
    peer.join().unwrap();
    let got = got.unwrap();
    assert!(
        !got.is_empty() && got[..] == [b"one".to_vec(), b"two".to_vec()][..got.len()],
        "{got:?}"
    );
    assert!(ticks > 0);
}

/// Without MSG_WAITFORONE a blocking recvmmsg waits for all `vlen` datagrams.
#[test]
fn recvmmsg_waits_for_every_datagram() {
    let drip = |w: UdpSocket, to: SocketAddrV4| {
        after(20, move || {
            for m in ["a", "b", "c"] {
                w.send_to(m.as_bytes(), to).unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let expected: Vec<Vec<u8>> = ["a", "b", "c"].map(|m| m.as_bytes().to_vec()).into();
    let (r, raddr) = udp();
    let fd = r.as_raw_fd();
    let peer = drip(udp().0, raddr);
    let (got, ticks) = in_coroutine(move || recvmmsg(Face::Hooked, fd, 3, 0, None));
    peer.join().unwrap();
    assert_eq!(got, Ok(expected.clone()));
    assert!(ticks > 0);
    for face in [Face::Hooked, Face::Raw] {
        let peer = drip(udp().0, raddr);
        assert_eq!(
            recvmmsg(face, fd, 3, 0, None),
            Ok(expected.clone()),
            "{face:?}"
        );
        peer.join().unwrap();
    }
}

/// recvmmsg's own timeout is checked after each datagram, as the kernel does.
#[test]
fn recvmmsg_timeout_is_checked_after_each_datagram() {
    let (r, raddr) = udp();
    let fd = r.as_raw_fd();
    let drip = move || {
        let w = udp().0;
        after(10, move || {
            w.send_to(b"a", raddr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            w.send_to(b"b", raddr).unwrap();
        })
    };
    let expected = Ok(vec![b"a".to_vec(), b"b".to_vec()]);
    let peer = drip();
    let (got, _) =
        in_coroutine(move || recvmmsg(Face::Hooked, fd, 3, 0, Some(Duration::from_millis(100))));
    peer.join().unwrap();
    assert_eq!(got, expected);
    for face in [Face::Hooked, Face::Raw] {
        let peer = drip();
        assert_eq!(
            recvmmsg(face, fd, 3, 0, Some(Duration::from_millis(100))),
            expected,
            "{face:?}"
        );
        peer.join().unwrap();
    }
}

#[test]
fn recvmmsg_outside_is_the_kernels() {
    let (r, raddr) = udp();
    let (w, waddr) = udp();
    let fd = r.as_raw_fd();
    for face in [Face::Hooked, Face::Raw] {
        w.send_to(b"1", raddr).unwrap();
        w.send_to(b"2", raddr).unwrap();
        let got = recvmmsg(face, fd, 4, libc::MSG_DONTWAIT, None);
        assert_eq!(got, Ok(vec![b"1".to_vec(), b"2".to_vec()]), "{face:?}");
        assert_eq!(
            recvmmsg(face, fd, 4, libc::MSG_DONTWAIT, None),
            Err(libc::EAGAIN)
        );
        assert_eq!(recvmmsg(face, BAD_FD, 4, 0, None), Err(libc::EBADF));
    }
    let (inside, _) = in_coroutine(|| recvmmsg(Face::Hooked, BAD_FD, 4, 0, None));
    assert_eq!(inside, Err(libc::EBADF));
    // Connected in a coroutine (we made it non-blocking): a plain thread's
    // recvmmsg still waits for a datagram instead of failing with EAGAIN.
    let (got, _) = in_coroutine(move || connect(Face::Hooked, fd, waddr));
    assert_eq!(got, Ok(0));
    let peer = after(50, move || {
        w.send_to(b"late", raddr).unwrap();
    });
    assert_eq!(
        recvmmsg(Face::Hooked, fd, 1, 0, None),
        Ok(vec![b"late".to_vec()])
    );
    peer.join().unwrap();
}

#[test]
fn sendmmsg_sends_every_datagram() {
    let (r, raddr) = udp();
    let (w, _) = udp();
    let wfd = w.as_raw_fd();
    w.connect(raddr).unwrap();
    let (got, _) = in_coroutine(move || sendmmsg(Face::Hooked, wfd, &["x", "yy", "zzz"]));
    assert_eq!(got, (Ok(3), vec![1, 2, 3]));
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(
            sendmmsg(face, wfd, &["p", "q"]),
            (Ok(2), vec![1, 1]),
            "{face:?}"
        );
        assert_eq!(sendmmsg(face, BAD_FD, &["p"]).0, Err(libc::EBADF));
    }
    let got = recvmmsg(Face::Hooked, r.as_raw_fd(), 8, libc::MSG_DONTWAIT, None).unwrap();
    let want: Vec<&[u8]> = vec![b"x", b"yy", b"zzz", b"p", b"q", b"p", b"q"];
    assert_eq!(
        got,
        want.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
    );
}

/// On a stream socket a blocking sendmmsg sends each message whole.
#[test]
fn sendmmsg_on_a_stream_sends_each_message_whole() {
    const PART: usize = 4 << 20;
    let (r, w) = unix_pair(false);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match recv(Face::Raw, r, &mut buf).unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let (got, ticks) = in_coroutine(move || {
        let (a, b) = (pattern(PART), pattern(PART + 1));
        sendmmsg(Face::Hooked, w, &[&a[..], &b[1..]])
    });
    close(w);
    assert_eq!(got, (Ok(2), vec![PART, PART]));
    assert!(ticks > 0);
    let bytes = reader.join().unwrap();
    assert_eq!(bytes.len(), 2 * PART);
    assert!(bytes[..PART] == pattern(PART)[..] && bytes[PART..] == pattern(PART + 1)[1..]);
    close(r);
}

// ---- socket, socketpair ----

#[test]
fn socket_and_socketpair_outside_are_the_kernels() {
    let flags = |fd: i32| {
        // SAFETY: reading the fd flags by raw system call.
        (raw_getfl(fd), unsafe {
            libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD)
        })
    };
    for ty in [
        libc::SOCK_STREAM,
        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ] {
        let a = socket(Face::Hooked, libc::AF_INET, ty).unwrap() as i32;
        let b = socket(Face::Raw, libc::AF_INET, ty).unwrap() as i32;
        assert_eq!(flags(a), flags(b));
        close(a);
        close(b);
        let (a0, a1) = socketpair(Face::Hooked, libc::AF_UNIX, ty).unwrap();
        let (b0, b1) = socketpair(Face::Raw, libc::AF_UNIX, ty).unwrap();
        assert_eq!((flags(a0), flags(a1)), (flags(b0), flags(b1)));
        [a0, a1, b0, b1].into_iter().for_each(close);
    }
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(
            socket(face, 9999, libc::SOCK_STREAM),
            Err(libc::EAFNOSUPPORT),
            "{face:?}"
        );
        assert_eq!(
            socket(face, libc::AF_INET, 9999),
            Err(libc::EINVAL),
            "{face:?}"
        );
        assert_eq!(
            socketpair(face, libc::AF_INET, libc::SOCK_STREAM),
            Err(libc::EOPNOTSUPP)
        );
    }
}

/// A socket made inside a coroutine keeps the user's SOCK_NONBLOCK (EAGAIN) or
/// blocking wish (parks).
#[test]
fn sockets_made_inside_keep_the_users_wish() {
    let ((), _) = in_coroutine(|| {
        let (a, b) = socketpair(
            Face::Hooked,
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
        )
        .unwrap();
        assert_eq!(recv(Face::Hooked, a, &mut [0u8; 1]), Err(libc::EAGAIN));
        let fd = socket(
            Face::Hooked,
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
        )
        .unwrap() as i32;
        let sa = sin(localhost());
        // SAFETY: binding and listening on our own socket.
        unsafe {
            assert_eq!(libc::bind(fd, (&raw const sa).cast(), SIN_LEN), 0);
            assert_eq!(libc::listen(fd, 8), 0);
        }
        assert_eq!(accept(Face::Hooked, fd, None).0, Err(libc::EAGAIN));
        [a, b, fd].into_iter().for_each(close);
    });
    let (a, b) =
        in_coroutine(|| socketpair(Face::Hooked, libc::AF_UNIX, libc::SOCK_STREAM).unwrap()).0;
    let peer = after(30, move || raw_write_all(b, b"!"));
    let (got, ticks) = in_coroutine(move || recv(Face::Hooked, a, &mut [0u8; 1]));
    peer.join().unwrap();
    assert_eq!(got, Ok(1));
    assert!(ticks > 0);
    close(a);
    close(b);
}

// ---- accept, accept4 ----

#[test]
fn accept_parks_until_a_client_connects() {
    for flags in [None, Some(libc::SOCK_CLOEXEC)] {
        let (l, addr) = tcp_listener(8);
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let c = TcpStream::connect(addr).unwrap();
            let std::net::SocketAddr::V4(me) = c.local_addr().unwrap() else {
                unreachable!()
            };
            (c, me)
        });
        let ((got, from), ticks) = in_coroutine(move || accept(Face::Hooked, l, flags));
        let (c, me) = client.join().unwrap();
        let fd = got.unwrap() as i32;
        assert_eq!(from, Some(me));
        assert!(ticks > 0, "{flags:?}: the thread blocked in accept");
        // Linux does not pass the listener's O_NONBLOCK (ours) to the new socket.
        assert_eq!(raw_getfl(fd) & libc::O_NONBLOCK, 0);
        // The accepted socket is cooperative in its turn.
        let mut c = c;
        let peer = after(30, move || c.write_all(b"hi").unwrap());
        let (got, ticks) = in_coroutine(move || recv(Face::Hooked, fd, &mut [0u8; 4]));
        peer.join().unwrap();
        assert_eq!(got, Ok(2));
        assert!(ticks > 0);
        close(fd);
        close(l);
    }
}

#[test]
fn accept4_sock_nonblock_is_the_users_wish() {
    let (l, addr) = tcp_listener(8);
    let _c = TcpStream::connect(addr).unwrap();
    let (got, _) = in_coroutine(move || {
        let fd = accept(
            Face::Hooked,
            l,
            Some(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC),
        )
        .0
        .unwrap() as i32;
        (fd, recv(Face::Hooked, fd, &mut [0u8; 1]))
    });
    let (fd, recv_result) = got;
    assert_eq!(recv_result, Err(libc::EAGAIN));
    assert_ne!(
        // SAFETY: fcntl through the hook: the user's own O_NONBLOCK shows.
        unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK,
        0
    );
    assert_eq!(
        // SAFETY: reading the fd flags by raw system call.
        unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) },
        libc::FD_CLOEXEC as i64
    );
    close(fd);
    close(l);
}

#[test]
fn accept_outside_is_the_kernels() {
    let (l, addr) = tcp_listener(8);
    for face in [Face::Hooked, Face::Raw] {
        for flags in [None, Some(libc::SOCK_NONBLOCK)] {
            let c = TcpStream::connect(addr).unwrap();
            let (got, from) = accept(face, l, flags);
            assert_eq!(
                from,
                Some(match c.local_addr().unwrap() {
                    std::net::SocketAddr::V4(a) => a,
                    _ => unreachable!(),
                })
            );
            let fd = got.unwrap() as i32;
            assert_eq!(
                raw_getfl(fd) & libc::O_NONBLOCK != 0,
                flags.is_some(),
                "{face:?}"
            );
            close(fd);
        }
        assert_eq!(accept(face, BAD_FD, None).0, Err(libc::EBADF), "{face:?}");
        let (plain, other) = unix_pair(false);
        assert_eq!(
            accept(face, plain, Some(0)).0,
            Err(libc::EINVAL),
            "{face:?}"
        );
        [plain, other].into_iter().for_each(close);
        let (p, q) = common_pipe();
        assert_eq!(accept(face, p, None).0, Err(libc::ENOTSOCK), "{face:?}");
        close(p);
        close(q);
    }
    assert_eq!(
        // The user's non-blocking listener: EAGAIN from both faces and inside.
        // SAFETY: ioctl through the hook: the user asks for non-blocking mode.
        unsafe { libc::ioctl(l, libc::FIONBIO, &1 as *const c_int) },
        0
    );
    assert_eq!(accept(Face::Hooked, l, None).0, Err(libc::EAGAIN));
    assert_eq!(accept(Face::Raw, l, None).0, Err(libc::EAGAIN));
    assert_eq!(
        in_coroutine(move || accept(Face::Hooked, l, None).0).0,
        Err(libc::EAGAIN)
    );
    close(l);
}

fn common_pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// A listener a coroutine accepted on (we made it non-blocking): a plain
/// thread's accept4 waits for a client instead of failing with EAGAIN.
#[test]
fn accept4_from_a_plain_thread_on_our_nonblocking_listener_waits() {
    let (l, addr) = tcp_listener(8);
    let peer = after(10, move || drop(TcpStream::connect(addr).unwrap()));
    let (got, _) = in_coroutine(move || accept(Face::Hooked, l, None).0);
    peer.join().unwrap();
    close(got.unwrap() as i32);
    assert_ne!(
        raw_getfl(l) & libc::O_NONBLOCK,
        0,
        "we made it non-blocking"
    );
    let t = Instant::now();
    let peer = after(50, move || drop(TcpStream::connect(addr).unwrap()));
    let (got, _) = accept(Face::Hooked, l, Some(libc::SOCK_CLOEXEC));
    assert!(t.elapsed() >= Duration::from_millis(40));
    close(got.unwrap() as i32);
    peer.join().unwrap();
    close(l);
}

// ---- connect ----

#[test]
fn connect_inside_succeeds_or_is_refused() {
    let (l, addr) = tcp_listener(8);
    let refused = closed_port();
    let (got, _) = in_coroutine(move || {
        let ok = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        let bad = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        let got = (
            connect(Face::Hooked, ok, addr),
            connect(Face::Hooked, bad, refused),
        );
        // SAFETY: an all-zero sockaddr_in is valid; getpeername fills it.
        let mut sa: sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = SIN_LEN;
        assert_eq!(
            // SAFETY: as above.
            unsafe { libc::getpeername(ok, (&raw mut sa).cast(), &mut len) },
            0
        );
        assert_eq!(from_sin(&sa), addr);
        [ok, bad].into_iter().for_each(close);
        got
    });
    assert_eq!(got, (Ok(0), Err(libc::ECONNREFUSED)));
    close(l);
}

#[test]
fn connect_outside_is_the_kernels() {
    let (l, addr) = tcp_listener(8);
    let refused = closed_port();
    for face in [Face::Hooked, Face::Raw] {
        let fd = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        assert_eq!(connect(face, fd, addr), Ok(0), "{face:?}");
        assert_eq!(connect(face, fd, addr), Err(libc::EISCONN), "{face:?}");
        close(fd);
        let fd = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        assert_eq!(
            connect(face, fd, refused),
            Err(libc::ECONNREFUSED),
            "{face:?}"
        );
        close(fd);
        assert_eq!(connect(face, BAD_FD, addr), Err(libc::EBADF), "{face:?}");
        let (p, q) = common_pipe();
        assert_eq!(connect(face, p, addr), Err(libc::ENOTSOCK), "{face:?}");
        close(p);
        close(q);
    }
    close(l);
}

/// The user's non-blocking socket gets EINPROGRESS at once, inside as outside.
#[test]
fn nonblocking_connect_gives_einprogress() {
    let (l, addr) = tcp_listener(8);
    let attempt = move |face: Face| {
        let fd = socket(
            Face::Hooked,
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
        )
        .unwrap() as i32;
        let got = connect(face, fd, addr);
        close(fd);
        got
    };
    assert_eq!(
        in_coroutine(move || attempt(Face::Hooked)).0,
        Err(libc::EINPROGRESS)
    );
    assert_eq!(attempt(Face::Hooked), Err(libc::EINPROGRESS));
    assert_eq!(attempt(Face::Raw), Err(libc::EINPROGRESS));
    close(l);
}

/// A listener whose accept queue is full drops SYNs: a blocking connect waits,
/// and SO_SNDTIMEO ends the wait with EINPROGRESS (Linux's answer).
#[test]
fn connect_parks_on_a_full_listener_until_so_sndtimeo() {
    let (l, addr) = tcp_listener(0);
    let first = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let attempt = move |face: Face| {
        let fd = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        assert_eq!(
            set_timeout(Face::Hooked, fd, libc::SO_SNDTIMEO, 0, 150_000),
            Ok(0)
        );
        let t = Instant::now();
        let got = connect(face, fd, addr);
        close(fd);
        (got, t.elapsed())
    };
    let ((got, took), ticks) = in_coroutine(move || attempt(Face::Hooked));
    assert_eq!(got, Err(libc::EINPROGRESS));
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(ticks > 0, "the thread blocked in connect");
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(attempt(face).0, Err(libc::EINPROGRESS), "{face:?}");
    }
    drop(first);
    close(l);
}

/// A socket the hooks never saw created (inherited): connect must not change
/// its shared flags, and still answers as the kernel.
#[test]
fn connect_on_an_inherited_socket() {
    let (l, addr) = tcp_listener(8);
    let refused = closed_port();
    let ((ok, bad, flags), _) = in_coroutine(move || {
        let a = socket(Face::Raw, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        let b = socket(Face::Raw, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        let got = (
            connect(Face::Hooked, a, addr),
            connect(Face::Hooked, b, refused),
            raw_getfl(a),
        );
        [a, b].into_iter().for_each(close);
        got
    });
    assert_eq!((ok, bad), (Ok(0), Err(libc::ECONNREFUSED)));
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "an inherited socket's flags were changed"
    );
    close(l);
}

/// An AF_UNIX listener (abstract name `tag`) with backlog 0 and one client
/// pending, so that the next connect finds the backlog full; and a dialer that
/// connects a new socket to it.
fn full_unix_listener(tag: &str) -> (i32, i32, impl Fn() -> (i32, Outcome) + Send + 'static) {
    // SAFETY: an all-zero sockaddr_un is valid; an abstract name follows a NUL.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("patchall-test-{}-{tag}", std::process::id());
    for (dst, src) in sun.sun_path[1..].iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let sun_len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as socklen_t;
    let l = socket(Face::Hooked, libc::AF_UNIX, libc::SOCK_STREAM).unwrap() as i32;
    // SAFETY: binding and listening on our own socket, the address a live local.
    unsafe {
        assert_eq!(libc::bind(l, (&raw const sun).cast(), sun_len), 0);
        assert_eq!(libc::listen(l, 0), 0);
    }
    let dial = move || {
        let fd = socket(Face::Hooked, libc::AF_UNIX, libc::SOCK_STREAM).unwrap() as i32;
        // SAFETY: the address is a live copy of the listener's.
        let r = unsafe { libc::connect(fd, (&raw const sun).cast(), sun_len) };
        (fd, outcome(r as isize))
    };
    let (first, got) = dial();
    assert_eq!(got, Ok(0));
    (l, first, dial)
}

/// A blocking connect to a full AF_UNIX backlog waits until the listener
/// accepts (the kernel gives EAGAIN only to non-blocking callers).
#[test]
fn unix_connect_parks_while_the_backlog_is_full() {
    let (l, first, dial) = full_unix_listener("accept");
    let acceptor = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(50));
        accept(Face::Hooked, l, None).0
    })
    .unwrap();
    let ((second, got), ticks) = in_coroutine(dial);
    assert_eq!(got, Ok(0));
    assert!(ticks > 0, "the thread blocked in connect");
    let accepted = acceptor.join().unwrap().unwrap() as i32;
    [first, second, accepted, l].into_iter().for_each(close);
}

extern "C" fn on_signal(_: c_int) {}

/// A handler without SA_RESTART interrupts that wait with EINTR (signal(7)).
#[test]
fn unix_connect_on_a_full_backlog_is_interrupted_by_a_signal() {
    let sig = libc::SIGRTMIN() + 5;
    // SAFETY: a zeroed sigaction with an empty mask, our no-op handler, no flags.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, null_mut()), 0);
    }
    let (l, first, dial) = full_unix_listener("signal");
    let signaller = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(30));
        // SAFETY: a signal to this thread, whose handler is installed.
        unsafe { libc::pthread_kill(libc::pthread_self(), sig) }
    })
    .unwrap();
    // A late accept turns a missed interruption into a wrong answer, not a hang.
    let acceptor = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(1000));
        accept(Face::Hooked, l, None).0
    })
    .unwrap();
    let ((second, got), ticks) = in_coroutine(dial);
    assert_eq!(signaller.join().unwrap(), 0);
    assert_eq!(got, Err(libc::EINTR));
    assert!(ticks > 0);
    let accepted = acceptor.join().unwrap().unwrap() as i32;
    [first, second, accepted, l].into_iter().for_each(close);
}

/// A socket a coroutine touched (we made it non-blocking) then connected from a
/// plain thread: the blocking connect's answers, never EINPROGRESS.
#[test]
fn plain_thread_connect_on_our_nonblocking_socket_blocks() {
    let (l, addr) = tcp_listener(8);
    let refused = closed_port();
    for (to, want) in [(addr, Ok(0)), (refused, Err(libc::ECONNREFUSED))] {
        let fd = socket(Face::Hooked, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        // accept on a socket that does not listen: EINVAL, after we made it ours.
        let (got, _) = in_coroutine(move || accept(Face::Hooked, fd, None).0);
        assert_eq!(got, Err(libc::EINVAL));
        assert_ne!(raw_getfl(fd) & libc::O_NONBLOCK, 0);
        assert_eq!(connect(Face::Hooked, fd, to), want);
        close(fd);
    }
    close(l);
}

/// Makes the socket a connect scenario connects: (domain, type) to fd.
type MakeSocket = fn(c_int, c_int) -> i32;

fn fresh_socket(domain: c_int, ty: c_int) -> i32 {
    socket(Face::Hooked, domain, ty).unwrap() as i32
}

/// A socket a coroutine touched first (an accept on it, which fails), so that
/// we made it non-blocking: a plain thread's connect on it must still block.
fn our_socket(domain: c_int, ty: c_int) -> i32 {
    let fd = fresh_socket(domain, ty);
    let _ = in_coroutine(move || accept(Face::Hooked, fd, None).0);
    assert_ne!(raw_getfl(fd) & libc::O_NONBLOCK, 0);
    fd
}

/// Runs a connect scenario natively (raw system calls on a plain thread), then
/// through the hook: on a plain thread, on a plain thread with sockets we made
/// non-blocking, and in a coroutine; each answers `want`. In the coroutine the
/// scenario's waits must let the others run when `parks`.
fn same_connect_answers(
    scenario: fn(Face, MakeSocket) -> Vec<Outcome>,
    want: &[Outcome],
    parks: bool,
) {
    assert_eq!(scenario(Face::Raw, fresh_socket), want, "natively");
    assert_eq!(
        scenario(Face::Hooked, fresh_socket),
        want,
        "hooked, on a plain thread"
    );
    assert_eq!(
        scenario(Face::Hooked, our_socket),
        want,
        "hooked, on a plain thread, sockets we made non-blocking"
    );
    let (got, ticks) = in_coroutine(move || scenario(Face::Hooked, fresh_socket));
    assert_eq!(got, want, "hooked, in a coroutine");
    if parks {
        assert!(ticks > 0, "the thread blocked in connect");
    }
}

/// A refused connect leaves the socket unconnected: refused again, then it
/// connects once a listener is up, then EISCONN (issue 13: ECONNABORTED, 0).
#[test]
fn connect_refused_then_retried_answers_as_natively() {
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let to = closed_port();
        let fd = socket(libc::AF_INET, libc::SOCK_STREAM);
        let mut got = vec![connect(face, fd, to), connect(face, fd, to)];
        let (l, _) = tcp_listener_at(to, 8);
        got.extend([connect(face, fd, to), connect(face, fd, to)]);
        [fd, l].into_iter().for_each(close);
        got
    }
    let refused = Err(libc::ECONNREFUSED);
    same_connect_answers(
        scenario,
        &[refused, refused, Ok(0), Err(libc::EISCONN)],
        false,
    );
}

/// The user's non-blocking socket: EINPROGRESS, then once writable the result,
/// then EISCONN after success or a fresh EINPROGRESS after a refusal.
#[test]
fn nonblocking_connect_sequence_answers_as_natively() {
    fn writable(fd: i32) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1);
    }
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let (l, addr) = tcp_listener(8);
        let mut got = vec![];
        for to in [addr, closed_port()] {
            let fd = socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK);
            got.push(connect(face, fd, to));
            writable(fd);
            got.extend([connect(face, fd, to), connect(face, fd, to)]);
            close(fd);
        }
        close(l);
        got
    }
    let (pending, isconn) = (Err(libc::EINPROGRESS), Err(libc::EISCONN));
    let refused = Err(libc::ECONNREFUSED);
    same_connect_answers(
        scenario,
        &[pending, Ok(0), isconn, pending, refused, pending],
        false,
    );
}

/// SO_SNDTIMEO ends a connect to a full listener with EINPROGRESS; the next
/// blocking connect waits again and gives EALREADY; once the listener accepts,
/// the retransmitted SYN gets through: 0, then EISCONN.
#[test]
fn connect_after_so_sndtimeo_answers_as_natively() {
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let (l, addr) = tcp_listener(0);
        let first = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let fd = socket(libc::AF_INET, libc::SOCK_STREAM);
        assert_eq!(
            set_timeout(Face::Hooked, fd, libc::SO_SNDTIMEO, 0, 150_000),
            Ok(0)
        );
        let mut got = vec![connect(face, fd, addr)];
        let t = Instant::now();
        got.push(connect(face, fd, addr));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(140) && took < Duration::from_secs(3),
            "{face:?} {took:?}"
        );
        let (queued, _) = accept(Face::Hooked, l, None);
        // The SYN is retransmitted after about 1 s (then 3 s): bounded retries.
        let t = Instant::now();
        let mut last = connect(face, fd, addr);
        while last == Err(libc::EALREADY) && t.elapsed() < Duration::from_secs(10) {
            last = connect(face, fd, addr);
        }
        got.extend([last, connect(face, fd, addr)]);
        drop(first);
        [fd, l, queued.unwrap() as i32].into_iter().for_each(close);
        got
    }
    let want = [
        Err(libc::EINPROGRESS),
        Err(libc::EALREADY),
        Ok(0),
        Err(libc::EISCONN),
    ];
    same_connect_answers(scenario, &want, true);
}

/// The user's non-blocking socket and a listener that drops SYNs: EINPROGRESS,
/// then EALREADY while the handshake is pending, at once each time.
#[test]
fn nonblocking_connect_while_pending_gives_ealready() {
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let (l, addr) = tcp_listener(0);
        let first = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let fd = socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK);
        let got = vec![connect(face, fd, addr), connect(face, fd, addr)];
        drop(first);
        [fd, l].into_iter().for_each(close);
        got
    }
    let want = [Err(libc::EINPROGRESS), Err(libc::EALREADY)];
    same_connect_answers(scenario, &want, false);
}

/// UDP connect only sets the peer: 0 each time, even where nobody listens.
#[test]
fn udp_connect_answers_as_natively() {
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM);
        let to = closed_port();
        let got = vec![connect(face, fd, to), connect(face, fd, to)];
        close(fd);
        got
    }
    same_connect_answers(scenario, &[Ok(0), Ok(0)], false);
}

/// AF_UNIX by path: ENOENT, ECONNREFUSED for a bound socket that does not
/// listen, then 0 and EISCONN once it listens.
#[test]
fn unix_connect_sequence_answers_as_natively() {
    fn scenario(face: Face, socket: MakeSocket) -> Vec<Outcome> {
        let path =
            std::env::temp_dir().join(format!("patchall-connect-{}-{face:?}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // SAFETY: an all-zero sockaddr_un is valid; the path fits and ends in NUL.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in sun.sun_path.iter_mut().zip(path.to_str().unwrap().bytes()) {
            *dst = src as libc::c_char;
        }
        let (sa, len) = (
            (&raw const sun).cast::<sockaddr>(),
            std::mem::size_of::<libc::sockaddr_un>() as socklen_t,
        );
        let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM);
        let dial = || {
            outcome(match face {
                // SAFETY: the address is a live local of the given length.
                Face::Hooked => unsafe { libc::connect(fd, sa, len) as isize },
                // SAFETY: as above.
                Face::Raw => unsafe { libc::syscall(libc::SYS_connect, fd, sa, len) as isize },
            })
        };
        let mut got = vec![dial()];
        let l = fresh_socket(libc::AF_UNIX, libc::SOCK_STREAM);
        // SAFETY: binding our own socket to the live address.
        assert_eq!(unsafe { libc::bind(l, sa, len) }, 0);
        got.push(dial());
        // SAFETY: listening on our own bound socket.
        assert_eq!(unsafe { libc::listen(l, 8) }, 0);
        got.extend([dial(), dial()]);
        [fd, l].into_iter().for_each(close);
        let _ = std::fs::remove_file(&path);
        got
    }
    let want = [
        Err(libc::ENOENT),
        Err(libc::ECONNREFUSED),
        Ok(0),
        Err(libc::EISCONN),
    ];
    same_connect_answers(scenario, &want, false);
}

// ---- setsockopt: SO_RCVTIMEO, SO_SNDTIMEO ----

#[test]
fn so_rcvtimeo_expires_with_wouldblock_while_others_run() {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let ((got, took), ticks) = in_coroutine(move || {
        let mut a = a;
        let t = Instant::now();
        let got = a.read(&mut [0u8; 4]).map_err(|e| e.kind());
        (got, t.elapsed())
    });
    assert_eq!(got, Err(ErrorKind::WouldBlock));
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(ticks > 0);
    drop(b);
    // Outside: the kernel's own timeout, through the hook and raw.
    let (c, d) = unix_pair(false);
    assert_eq!(
        set_timeout(Face::Hooked, c, libc::SO_RCVTIMEO, 0, 50_000),
        Ok(0)
    );
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(recv(face, c, &mut [0u8; 4]), Err(libc::EAGAIN), "{face:?}");
    }
    [c, d].into_iter().for_each(close);
}

#[test]
fn so_sndtimeo_expires_with_eagain_while_others_run() {
    let (a, b) = unix_pair(false);
    assert_eq!(
        set_timeout(Face::Hooked, a, libc::SO_SNDTIMEO, 0, 100_000),
        Ok(0)
    );
    fill_dontwait(a);
    let ((got, took), ticks) = in_coroutine(move || {
        let t = Instant::now();
        (send(Face::Hooked, a, b"x"), t.elapsed())
    });
    assert_eq!(got, Err(libc::EAGAIN));
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(ticks > 0);
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(send(face, a, b"x"), Err(libc::EAGAIN), "{face:?}");
    }
    [a, b].into_iter().for_each(close);
}

#[test]
fn so_rcvtimeo_applies_to_accept() {
    let (l, _) = tcp_listener(8);
    assert_eq!(
        set_timeout(Face::Hooked, l, libc::SO_RCVTIMEO, 0, 80_000),
        Ok(0)
    );
    let ((got, took), ticks) = in_coroutine(move || {
        let t = Instant::now();
        (accept(Face::Hooked, l, None).0, t.elapsed())
    });
    assert_eq!(got, Err(libc::EAGAIN));
    assert!(took >= Duration::from_millis(70), "{took:?}");
    assert!(ticks > 0);
    assert_eq!(accept(Face::Raw, l, None).0, Err(libc::EAGAIN));
    close(l);
}

/// Linux copies the listener's timeouts to an accepted socket; so must we.
#[test]
fn an_accepted_socket_inherits_the_listeners_timeouts() {
    let (l, addr) = tcp_listener(8);
    assert_eq!(
        set_timeout(Face::Hooked, l, libc::SO_RCVTIMEO, 0, 100_000),
        Ok(0)
    );
    let mut c = TcpStream::connect(addr).unwrap();
    let (fd, _) = in_coroutine(move || accept(Face::Hooked, l, None).0.unwrap() as i32);
    assert_eq!(
        raw_timeout(fd, libc::SO_RCVTIMEO),
        Duration::from_millis(100),
        "the kernel's copy"
    );
    // A late byte turns a missed timeout into a wrong answer rather than a hang.
    let peer = after(1500, move || c.write_all(b"late").unwrap());
    let ((got, took), _) = in_coroutine(move || {
        let t = Instant::now();
        (recv(Face::Hooked, fd, &mut [0u8; 4]), t.elapsed())
    });
    assert_eq!(got, Err(libc::EAGAIN));
    assert!(took < Duration::from_millis(1000), "{took:?}");
    peer.join().unwrap();
    [fd, l].into_iter().for_each(close);
}

/// A negative timeout makes Linux treat the socket as non-blocking for that
/// direction (timeout zero): EAGAIN at once, not an endless wait.
#[test]
fn a_negative_so_rcvtimeo_means_do_not_wait() {
    let (a, b) = unix_pair(false);
    let (c, d) = unix_pair(false);
    assert_eq!(
        set_timeout(Face::Hooked, a, libc::SO_RCVTIMEO, -1, 0),
        Ok(0)
    );
    assert_eq!(set_timeout(Face::Raw, c, libc::SO_RCVTIMEO, -1, 0), Ok(0));
    assert_eq!(
        recv(Face::Raw, c, &mut [0u8; 1]),
        Err(libc::EAGAIN),
        "the kernel's answer"
    );
    assert_eq!(recv(Face::Hooked, a, &mut [0u8; 1]), Err(libc::EAGAIN));
    let peer = after(1500, move || raw_write_all(b, b"late"));
    let ((got, took), _) = in_coroutine(move || {
        let t = Instant::now();
        (recv(Face::Hooked, a, &mut [0u8; 1]), t.elapsed())
    });
    assert_eq!(got, Err(libc::EAGAIN));
    assert!(took < Duration::from_millis(1000), "{took:?}");
    peer.join().unwrap();
    [a, b, c, d].into_iter().for_each(close);
}

/// An inherited socket with a huge timeout set before we saw it: reading it
/// must not overflow (a panic in a hook aborts), and data still arrives.
#[test]
fn a_huge_inherited_timeout_is_no_overflow() {
    let (a, b) = socketpair(Face::Raw, libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
    assert_eq!(
        set_timeout(Face::Raw, a, libc::SO_RCVTIMEO, 1_000_000_000_000_000, 0),
        Ok(0)
    );
    assert_eq!(
        set_timeout(Face::Hooked, b, libc::SO_RCVTIMEO, i64::MAX, 0),
        Ok(0)
    );
    let peer = after(30, move || {
        raw_write_all(a, b"to b");
        raw_write_all(b, b"to a");
    });
    let (got, _) = in_coroutine(move || {
        (
            recv(Face::Hooked, a, &mut [0u8; 8]),
            recv(Face::Hooked, b, &mut [0u8; 8]),
        )
    });
    peer.join().unwrap();
    assert_eq!(got, (Ok(4), Ok(4)));
    [a, b].into_iter().for_each(close);
}

#[test]
fn setsockopt_errors_are_the_kernels() {
    let (a, b) = unix_pair(false);
    let (p, q) = common_pipe();
    for face in [Face::Hooked, Face::Raw] {
        assert_eq!(
            set_timeout(face, BAD_FD, libc::SO_RCVTIMEO, 1, 0),
            Err(libc::EBADF)
        );
        assert_eq!(
            set_timeout(face, p, libc::SO_RCVTIMEO, 1, 0),
            Err(libc::ENOTSOCK)
        );
        assert_eq!(
            set_timeout(face, a, libc::SO_SNDTIMEO, 1, 2_000_000),
            Err(libc::EDOM)
        );
        let short = 1u32;
        let (p, n) = ((&raw const short).cast::<c_void>(), 4);
        let r = match face {
            // SAFETY: a 4-byte value where a timeval is due: the kernel says EINVAL.
            Face::Hooked => unsafe {
                libc::setsockopt(a, libc::SOL_SOCKET, libc::SO_RCVTIMEO, p, n) as isize
            },
            // SAFETY: as above.
            Face::Raw => unsafe {
                libc::syscall(
                    libc::SYS_setsockopt,
                    a,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    p,
                    n,
                ) as isize
            },
        };
        assert_eq!(outcome(r), Err(libc::EINVAL), "{face:?}");
    }
    // The rejected values left no timeout behind: a read still waits for data.
    let peer = after(200, move || raw_write_all(b, b"ok"));
    let (got, _) = in_coroutine(move || recv(Face::Hooked, a, &mut [0u8; 2]));
    assert_eq!(got, Ok(2));
    peer.join().unwrap();
    [a, b, p, q].into_iter().for_each(close);
}

// ---- shutdown: the kernel raises no event, the waiters retry ----

fn shutdown(face: Face, fd: i32, how: c_int) -> Outcome {
    outcome(match face {
        // SAFETY: no pointers involved.
        Face::Hooked => unsafe { libc::shutdown(fd, how) as isize },
        // SAFETY: as above.
        Face::Raw => unsafe { libc::syscall(libc::SYS_shutdown, fd, how) as isize },
    })
}

/// A unix stream listener on an abstract address unique to this process and `tag`.
fn unix_listener(tag: &str) -> i32 {
    let fd = socket(Face::Hooked, libc::AF_UNIX, libc::SOCK_STREAM).unwrap() as i32;
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("patchall-test-{}-{tag}", std::process::id());
    for (d, s) in sa.sun_path[1..].iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as socklen_t;
    // SAFETY: a live sockaddr_un and a length within it.
    let r = unsafe { libc::bind(fd, (&raw const sa).cast(), len) };
    assert_eq!(r, 0, "bind: {}", errno());
    // SAFETY: no pointers involved.
    assert_eq!(unsafe { libc::listen(fd, 4) }, 0);
    fd
}

/// shutdown(SHUT_WR) of a full unix socket fails the blocked send with EPIPE,
/// though epoll reports nothing: the parked send wakes, whether the shutdown
/// comes from a plain thread or from a coroutine of the waiter's own thread.
#[test]
fn shutdown_wakes_a_send_parked_on_a_full_unix_socket() {
    // SAFETY: ignoring SIGPIPE, as Rust programs do, so EPIPE is reported.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (a, b) = unix_pair(false);
    fill_dontwait(a);
    let other = after(30, move || {
        assert_eq!(shutdown(Face::Hooked, a, libc::SHUT_WR), Ok(0))
    });
    let (got, ticks) = in_coroutine(move || send(Face::Hooked, a, b"x"));
    other.join().unwrap();
    assert_eq!(got, Err(libc::EPIPE));
    assert!(ticks > 0, "the send blocked the thread");
    [a, b].into_iter().for_each(close);

    let (a, b) = unix_pair(false);
    fill_dontwait(a);
    let (got, ticks) = in_coroutine(move || {
        let shut = patchall::spawn(move || {
            patchall::sleep(Duration::from_millis(30));
            shutdown(Face::Hooked, a, libc::SHUT_WR)
        })
        .unwrap();
        (send(Face::Hooked, a, b"x"), shut.join().unwrap())
    });
    assert_eq!(got, (Err(libc::EPIPE), Ok(0)));
    assert!(ticks > 0, "the send blocked the thread");
    [a, b].into_iter().for_each(close);
}

/// shutdown of a unix listener fails the blocked accept with EINVAL (a
/// non-blocking one gets EAGAIN): the parked accept reports EINVAL at once,
/// not at its SO_RCVTIMEO, and so does a plain thread's on the listener we
/// made non-blocking.
#[test]
fn shutdown_of_a_unix_listener_fails_a_parked_accept() {
    let l = unix_listener("shut");
    assert_eq!(set_timeout(Face::Hooked, l, libc::SO_RCVTIMEO, 5, 0), Ok(0));
    let other = after(30, move || {
        assert_eq!(shutdown(Face::Hooked, l, libc::SHUT_RDWR), Ok(0))
    });
    let started = Instant::now();
    let ((got, _), ticks) = in_coroutine(move || accept(Face::Hooked, l, None));
    other.join().unwrap();
    assert_eq!(got, Err(libc::EINVAL));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "woke at SO_RCVTIMEO"
    );
    assert!(ticks > 0, "the accept blocked the thread");
    assert!(
        raw_getfl(l) & libc::O_NONBLOCK != 0,
        "we made it non-blocking"
    );
    assert_eq!(accept(Face::Hooked, l, Some(0)).0, Err(libc::EINVAL));
    close(l);
    // Outside, the blocking listener: as the system call.
    for face in [Face::Hooked, Face::Raw] {
        let l = unix_listener("shut-outside");
        assert_eq!(shutdown(face, l, libc::SHUT_RD), Ok(0));
        assert_eq!(accept(face, l, None).0, Err(libc::EINVAL), "{face:?}");
        close(l);
    }
}

/// The peer closes with data unread: the kernel's blocked send reports
/// ECONNRESET (the socket's error) and leaves none; so does the parked send,
/// though a fresh send would say EPIPE.
#[test]
fn send_parked_when_the_peer_closes_reports_econnreset() {
    // SAFETY: ignoring SIGPIPE, as Rust programs do, so EPIPE is reported.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (a, b) = unix_pair(false);
    fill_dontwait(a);
    let peer = after(30, move || close(b));
    let ((got, then), ticks) = in_coroutine(move || {
        let got = send(Face::Hooked, a, b"x");
        (got, recv(Face::Hooked, a, &mut [0u8; 1]))
    });
    peer.join().unwrap();
    assert_eq!((got, then), (Err(libc::ECONNRESET), Ok(0)));
    assert!(ticks > 0, "the send blocked the thread");
    close(a);
    // The same, natively blocked.
    let (a, b) = unix_pair(false);
    fill_dontwait(a);
    let peer = after(30, move || close(b));
    assert_eq!(send(Face::Raw, a, b"x"), Err(libc::ECONNRESET));
    assert_eq!(recv(Face::Raw, a, &mut [0u8; 1]), Ok(0));
    peer.join().unwrap();
    close(a);
}

/// Outside a coroutine shutdown is the system call: result and errno.
#[test]
fn shutdown_outside_is_the_system_call() {
    let (p, q) = {
        let mut fds = [-1; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    for face in [Face::Hooked, Face::Raw] {
        let lone = socket(Face::Raw, libc::AF_INET, libc::SOCK_STREAM).unwrap() as i32;
        let (a, b) = unix_pair(false);
        assert_eq!(
            shutdown(face, lone, libc::SHUT_RDWR),
            Err(libc::ENOTCONN),
            "{face:?}"
        );
        assert_eq!(
            shutdown(face, BAD_FD, libc::SHUT_RD),
            Err(libc::EBADF),
            "{face:?}"
        );
        assert_eq!(
            shutdown(face, p, libc::SHUT_RD),
            Err(libc::ENOTSOCK),
            "{face:?}"
        );
        assert_eq!(shutdown(face, a, 7), Err(libc::EINVAL), "{face:?}");
        assert_eq!(shutdown(face, a, libc::SHUT_WR), Ok(0), "{face:?}");
        assert_eq!(recv(Face::Raw, b, &mut [0u8; 1]), Ok(0), "{face:?}");
        [lone, a, b].into_iter().for_each(close);
    }
    [p, q].into_iter().for_each(close);
}
