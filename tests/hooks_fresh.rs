//! The data hooks outside coroutines in both states of a process: before any
//! coroutine ran (the hooks forward without looking at the thread or the fd),
//! and after (they check both). In each, a call gives what the system call
//! gives, errno included, and a blocking call blocks the thread; after a
//! coroutine waited on an fd (and we made it non-blocking), a plain thread's
//! call on it still blocks. One test only: any other test in this binary could
//! spawn first and leave no fresh state to test.

mod data_calls;

use data_calls::{
    BAD_FD, Face, Outcome, after, close, errno, in_coroutine, outcome, raw_getfl, raw_write_all,
    read, recv,
};

fn send(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    outcome(match face {
        // SAFETY: the buffer is live for its length.
        Face::Hooked => unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) },
        // SAFETY: as above, by the raw system call.
        Face::Raw => unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf.as_ptr(),
                buf.len(),
                0,
                std::ptr::null::<libc::sockaddr>(),
                0,
            ) as isize
        },
    })
}

/// A connected stream socket pair made through the hooks (so ours).
fn socket_pair(nonblocking: bool) -> (i32, i32) {
    let mut sv = [0; 2];
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: `sv` has room for the two fds.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | flags, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", errno());
    (sv[0], sv[1])
}

fn set_errno(e: i32) {
    // SAFETY: errno is this thread's own int.
    unsafe { *libc::__errno_location() = e };
}

/// What every reading call must do outside a coroutine, in either state.
fn check_reader(state: &str, name: &str, call: fn(Face, i32, &mut [u8]) -> Outcome) {
    let what = format!("{name}, {state}");

    // Data ready: the same bytes as the system call, errno left alone.
    let (r, w) = socket_pair(false);
    raw_write_all(w, b"abcdefgh");
    let mut hooked = [0u8; 5];
    let mut raw = [0u8; 5];
    set_errno(12345);
    assert_eq!(call(Face::Hooked, r, &mut hooked), Ok(5), "{what}: data");
    assert_eq!(errno(), 12345, "{what}: errno after a success");
    assert_eq!(call(Face::Raw, r, &mut raw), Ok(3), "{what}: raw rest");
    assert_eq!(
        (&hooked, &raw[..3]),
        (b"abcde", &b"fgh"[..]),
        "{what}: bytes"
    );

    // Nothing there on a blocking socket: the thread blocks until data comes.
    let peer = after(30, move || raw_write_all(w, b"late"));
    let mut buf = [0u8; 8];
    assert_eq!(call(Face::Hooked, r, &mut buf), Ok(4), "{what}: blocking");
    assert_eq!(&buf[..4], b"late", "{what}: late bytes");
    peer.join().unwrap();

    // End of file, as the system call.
    close(w);
    assert_eq!(
        call(Face::Hooked, r, &mut [0u8; 4]),
        call(Face::Raw, r, &mut [0u8; 4]),
        "{what}: EOF"
    );
    close(r);

    // The user's non-blocking socket, and a bad fd: the same error.
    let (r, w) = socket_pair(true);
    assert_eq!(
        call(Face::Hooked, r, &mut [0u8; 4]),
        Err(libc::EAGAIN),
        "{what}: EAGAIN"
    );
    assert_eq!(call(Face::Raw, r, &mut [0u8; 4]), Err(libc::EAGAIN));
    close(r);
    close(w);
    assert_eq!(
        call(Face::Hooked, BAD_FD, &mut [0u8; 4]),
        Err(libc::EBADF),
        "{what}: EBADF"
    );
    assert_eq!(call(Face::Raw, BAD_FD, &mut [0u8; 4]), Err(libc::EBADF));
}

fn check_sender(state: &str) {
    // SAFETY: ignoring SIGPIPE, as Rust programs do, so EPIPE is reported.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (r, w) = socket_pair(false);
    set_errno(12345);
    assert_eq!(send(Face::Hooked, w, b"xyz"), Ok(3), "send, {state}");
    assert_eq!(errno(), 12345, "send, {state}: errno after a success");
    assert_eq!(read(Face::Raw, r, &mut [0u8; 8]), Ok(3));
    close(r);
    assert_eq!(
        send(Face::Hooked, w, b"x"),
        Err(libc::EPIPE),
        "send, {state}: EPIPE"
    );
    assert_eq!(send(Face::Raw, w, b"x"), Err(libc::EPIPE));
    close(w);
}

fn check_outside(state: &str) {
    assert!(!patchall::in_coroutine());
    check_reader(state, "read", read);
    check_reader(state, "recv", recv);
    check_sender(state);
}

#[test]
fn data_calls_outside_coroutines_before_and_after_the_first_one() {
    check_outside("before any coroutine");

    // A coroutine waits on a blocking pipe we created: we make it non-blocking
    // (a socket would get MSG_DONTWAIT instead), and the process now has a
    // coroutine stack.
    let mut fds = [0; 2];
    assert_eq!(
        // SAFETY: `fds` has room for the two fds.
        unsafe { libc::pipe(fds.as_mut_ptr()) },
        0,
        "pipe: {}",
        errno()
    );
    let [r, w] = fds;
    let (got, ticks) = in_coroutine(move || {
        let peer = after(20, move || raw_write_all(w, b"in"));
        let got = read(Face::Hooked, r, &mut [0u8; 4]);
        peer.join().unwrap();
        got
    });
    assert_eq!(got, Ok(2));
    assert!(ticks > 0, "the coroutine blocked its thread");

    check_outside("after a coroutine");
    // That pipe is non-blocking in the kernel now; a plain thread's read still
    // waits for data, as the blocking call.
    assert_ne!(
        raw_getfl(r) & libc::O_NONBLOCK,
        0,
        "we made it non-blocking"
    );
    let peer = after(30, move || raw_write_all(w, b"late"));
    assert_eq!(
        read(Face::Hooked, r, &mut [0u8; 8]),
        Ok(4),
        "plain thread after"
    );
    peer.join().unwrap();
    close(r);
    close(w);
}
