//! read, write, readv, writev on sockets, pipes we created and inherited pipes:
//! inside a coroutine they park while others run; outside they are the kernel's.

mod data_calls;

use data_calls::{
    BAD_FD, Face, Outcome, check_reader, check_writer, close, in_coroutine, outcome, raw_getfl,
    read,
};
use libc::{c_int, c_void, iovec};

/// `buf` as two iovecs, the first of at most 3 bytes.
fn readv(face: Face, fd: i32, buf: &mut [u8]) -> Outcome {
    let (a, b) = buf.split_at_mut(buf.len().min(3));
    let iov = [
        iovec {
            iov_base: a.as_mut_ptr().cast(),
            iov_len: a.len(),
        },
        iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        },
    ];
    outcome(match face {
        // SAFETY: both iovecs describe live, writable parts of `buf`.
        Face::Hooked => unsafe { libc::readv(fd, iov.as_ptr(), 2) },
        // SAFETY: as above, by the raw system call.
        Face::Raw => unsafe { libc::syscall(libc::SYS_readv, fd, iov.as_ptr(), 2) as isize },
    })
}

fn write(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    outcome(match face {
        // SAFETY: the buffer is live for its length.
        Face::Hooked => unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
        // SAFETY: as above, by the raw system call.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) as isize
        },
    })
}

/// `buf` as three uneven iovecs, so partial writes end inside and between them.
fn writev(face: Face, fd: i32, buf: &[u8]) -> Outcome {
    let (a, rest) = buf.split_at(buf.len().min(1));
    let (b, c) = rest.split_at(rest.len() / 3);
    let iov = [a, b, c].map(|p| iovec {
        iov_base: p.as_ptr() as *mut c_void,
        iov_len: p.len(),
    });
    outcome(match face {
        // SAFETY: the iovecs describe live parts of `buf`; writev only reads them.
        Face::Hooked => unsafe { libc::writev(fd, iov.as_ptr(), 3) },
        // SAFETY: as above, by the raw system call.
        Face::Raw => unsafe { libc::syscall(libc::SYS_writev, fd, iov.as_ptr(), 3) as isize },
    })
}

fn socket_pair(nonblocking: bool) -> (i32, i32) {
    let mut fds = [0; 2];
    let ty = libc::SOCK_STREAM | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    assert_eq!(
        // SAFETY: socketpair writes two fds into the array.
        unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) },
        0
    );
    (fds[0], fds[1])
}

/// A pipe made through our hook: ours, so we may make it non-blocking.
fn pipe(nonblocking: bool) -> (i32, i32) {
    let mut fds = [0; 2];
    let r = if nonblocking {
        // SAFETY: pipe2 writes two fds into the array.
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }
    } else {
        // SAFETY: as above.
        unsafe { libc::pipe(fds.as_mut_ptr()) }
    };
    assert_eq!(r, 0);
    (fds[0], fds[1])
}

/// A pipe the hooks never saw created, as if inherited from a parent process:
/// its flags are shared, so it is waited on, never made non-blocking.
fn inherited_pipe(nonblocking: bool) -> (i32, i32) {
    let mut fds = [0; 2];
    let flags = if nonblocking { libc::O_NONBLOCK } else { 0 };
    assert_eq!(
        // SAFETY: the raw pipe2 system call writes two fds into the array.
        unsafe { libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), flags) },
        0
    );
    (fds[0], fds[1])
}

#[test]
fn read_on_a_socket() {
    check_reader("read/socket", read, socket_pair);
}

#[test]
fn read_on_our_pipe() {
    check_reader("read/pipe", read, pipe);
}

#[test]
fn read_on_an_inherited_pipe() {
    check_reader("read/inherited pipe", read, inherited_pipe);
}

#[test]
fn readv_on_a_socket() {
    check_reader("readv/socket", readv, socket_pair);
}

#[test]
fn readv_on_our_pipe() {
    check_reader("readv/pipe", readv, pipe);
}

#[test]
fn readv_on_an_inherited_pipe() {
    check_reader("readv/inherited pipe", readv, inherited_pipe);
}

#[test]
fn write_on_a_socket() {
    check_writer("write/socket", write, socket_pair);
}

#[test]
fn write_on_our_pipe() {
    check_writer("write/pipe", write, pipe);
}

#[test]
fn write_on_an_inherited_pipe() {
    check_writer("write/inherited pipe", write, inherited_pipe);
}

#[test]
fn writev_on_a_socket() {
    check_writer("writev/socket", writev, socket_pair);
}

#[test]
fn writev_on_our_pipe() {
    check_writer("writev/pipe", writev, pipe);
}

#[test]
fn writev_on_an_inherited_pipe() {
    check_writer("writev/inherited pipe", writev, inherited_pipe);
}

/// A blocking write that fits in the pipe returns at once; the coroutine must
/// not wait for a reader that only comes after it (no readiness edge will).
#[test]
fn a_write_that_fits_an_inherited_pipe_needs_no_reader() {
    for make in [pipe, inherited_pipe] {
        let (r, w) = make(false);
        let data = data_calls::pattern(20_000);
        let expected = data.clone();
        let (n, _) = in_coroutine(move || {
            let n = write(Face::Hooked, w, &data);
            let m = writev(Face::Hooked, w, &data);
            (n, m)
        });
        assert_eq!(n, (Ok(20_000), Ok(20_000)));
        let mut got = vec![0u8; 40_000];
        assert_eq!(read(Face::Raw, r, &mut got[..20_000]), Ok(20_000));
        assert_eq!(read(Face::Raw, r, &mut got[20_000..]), Ok(20_000));
        assert!(got[..20_000] == expected[..] && got[20_000..] == expected[..]);
        close(r);
        close(w);
    }
}

#[test]
fn our_nonblock_is_hidden_and_inherited_flags_are_untouched() {
    for (make, ours) in [
        (pipe as fn(bool) -> (i32, i32), true),
        (inherited_pipe, false),
    ] {
        let (r, w) = make(false);
        let peer = data_calls::after(10, move || data_calls::raw_write_all(w, b"z"));
        let (got, _) = in_coroutine(move || read(Face::Hooked, r, &mut [0u8; 1]));
        peer.join().unwrap();
        assert_eq!(got, Ok(1));
        assert_eq!(
            raw_getfl(r) & libc::O_NONBLOCK != 0,
            ours,
            "O_NONBLOCK set on ours only"
        );
        // SAFETY: fcntl through the hook.
        let shown = unsafe { libc::fcntl(r, libc::F_GETFL) };
        assert_eq!(
            shown & libc::O_NONBLOCK,
            0,
            "the user never asked for O_NONBLOCK"
        );
        close(r);
        close(w);
    }
}

unsafe extern "C" {
    fn __read_chk(fd: c_int, buf: *mut c_void, count: usize, buflen: usize) -> isize;
    fn __read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn __write(fd: c_int, buf: *const c_void, count: usize) -> isize;
}

#[test]
fn glibc_aliases_park_too() {
    let (r, w) = socket_pair(false);
    let (((a, b), buf, peer), ticks) = in_coroutine(move || {
        // Started here, not before the runtime: a cold first spawn (CI, right
        // after the build) took longer than the peer's delay, the data was
        // there before the read, and nothing parked.
        let peer = data_calls::after(30, move || {
            // SAFETY: writing from a static buffer through glibc's alias.
            assert_eq!(unsafe { __write(w, b"abcdef".as_ptr().cast(), 6) }, 6);
        });
        let mut buf = [0u8; 8];
        // SAFETY: the buffer is live, and `buflen` is its true size.
        let a = unsafe { __read_chk(r, buf.as_mut_ptr().cast(), 3, buf.len()) };
        // SAFETY: as above.
        let b = unsafe { __read(r, buf[3..].as_mut_ptr().cast(), 5) };
        ((a, b), buf, peer)
    });
    peer.join().unwrap();
    assert_eq!((a, b, &buf[..6]), (3, 3, &b"abcdef"[..]));
    assert!(ticks > 0);
    assert_eq!(
        // SAFETY: outside, on a bad fd: the kernel's EBADF.
        unsafe { __read(BAD_FD, [0u8; 1].as_mut_ptr().cast(), 1) },
        -1
    );
    assert_eq!(data_calls::errno(), libc::EBADF);
    close(r);
    close(w);
}
