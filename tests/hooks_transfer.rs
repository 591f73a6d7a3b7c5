//! sendfile, splice, tee, and O_NONBLOCK shared by dups, as the Rust crate sees
//! them: in a coroutine the others run while a side waits; outside, libc's
//! results and errnos, and blocking as the kernel's call on an fd we made
//! non-blocking.

mod waits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use waits::{clear_errno, errno, real, ticker};

type SpliceFn = unsafe extern "C" fn(
    i32,
    *mut libc::loff_t,
    i32,
    *mut libc::loff_t,
    usize,
    libc::c_uint,
) -> isize;

fn pipe() -> [i32; 2] {
    let mut p = [0; 2];
    // SAFETY: room for two fds.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    p
}

fn write_all(fd: i32, data: &[u8]) {
    assert_eq!(
        // SAFETY: a live buffer of that length.
        unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
        data.len() as isize
    );
}

fn close(fds: &[i32]) {
    for &fd in fds {
        // SAFETY: fds this test opened.
        unsafe { libc::close(fd) };
    }
}

fn flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL reads the flags.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

#[test]
fn splice_and_tee_park_only_their_coroutine() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker(ticks.clone(), stop.clone());
    let (a, b) = (pipe(), pipe());
    let t = ticks.clone();
    let splicer = patchall::spawn(move || {
        let start = t.load(SeqCst);
        // SAFETY: two pipes of this test.
        let teed = unsafe { libc::tee(a[0], b[1], 64, 0) };
        let ticked = t.load(SeqCst) - start;
        // SAFETY: as above.
        let spliced = unsafe {
            libc::splice(
                b[0],
                std::ptr::null_mut(),
                a[1],
                std::ptr::null_mut(),
                64,
                0,
            )
        };
        (teed, spliced, ticked)
    })
    .unwrap();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(40));
        write_all(a[1], b"abc");
    })
    .unwrap();
    writer.join().unwrap();
    let (teed, spliced, ticked) = splicer.join().unwrap();
    stop.store(true, SeqCst);
    tick.join().unwrap();
    assert_eq!((teed, spliced), (3, 3));
    assert!(ticked >= 1, "the ticker did not run while tee waited");
    // a[0] holds "abc" (tee copied) and "abc" (spliced back).
    let mut buf = [0u8; 8];
    // SAFETY: a live buffer.
    assert_eq!(unsafe { libc::read(a[0], buf.as_mut_ptr().cast(), 8) }, 6);
    assert_eq!(&buf[..6], b"abcabc");
    close(&[a[0], a[1], b[0], b[1]]);
}

#[test]
fn sendfile_into_a_socket_a_coroutine_drains() {
    let size = 1 << 20;
    let mut file = tempfile_with(size);
    let mut sv = [0; 2];
    assert_eq!(
        // SAFETY: room for two fds.
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        0
    );
    let reader = patchall::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: a live buffer.
            let n = unsafe { libc::read(sv[1], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return got;
            }
            got += n as usize;
        }
    })
    .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let sender = patchall::spawn(move || {
        let mut off: libc::off_t = 0;
        // SAFETY: the caller's fds and a live offset.
        let n = unsafe { libc::sendfile(sv[0], fd, &mut off, size) };
        // SAFETY: shutting the socket this test made.
        unsafe { libc::shutdown(sv[0], libc::SHUT_WR) };
        (n, off)
    })
    .unwrap();
    // One call moves everything, as the blocking call would.
    assert_eq!(sender.join().unwrap(), (size as isize, size as libc::off_t));
    assert_eq!(reader.join().unwrap(), size);
    close(&sv);
    let _ = std::io::Write::flush(&mut file);
}

fn tempfile_with(size: usize) -> std::fs::File {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("patchall-transfer-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(&vec![7u8; size]).unwrap();
    f
}

#[test]
fn outside_a_coroutine_results_and_errnos_are_libcs() {
    let real_splice: SpliceFn = real(c"splice");
    let p = pipe();
    let null = std::ptr::null_mut();
    for (what, call) in [
        ("bad fd", (-1, p[1], 0)),
        (
            "two pipe ends of one pipe, NONBLOCK",
            (p[0], p[1], libc::SPLICE_F_NONBLOCK),
        ),
        (
            "empty pipe, NONBLOCK",
            (p[0], p[1] + 1000, libc::SPLICE_F_NONBLOCK),
        ),
    ] {
        clear_errno();
        // SAFETY: fds (some bad on purpose), null offsets.
        let ours = unsafe { libc::splice(call.0, null, call.1, null, 8, call.2) };
        let ours_errno = errno();
        clear_errno();
        // SAFETY: as above.
        let theirs = unsafe { real_splice(call.0, null, call.1, null, 8, call.2) };
        assert_eq!((ours, ours_errno), (theirs, errno()), "{what}");
    }
    clear_errno();
    let q = pipe();
    assert_eq!(
        // SAFETY: an empty pipe, non-blocking tee into another; tee takes no pointers.
        unsafe { libc::tee(p[0], q[1], 8, libc::SPLICE_F_NONBLOCK) },
        -1
    );
    assert_eq!(errno(), libc::EAGAIN);
    close(&[p[0], p[1], q[0], q[1]]);
}

#[test]
fn a_dup_sees_the_nonblock_we_set_and_a_plain_thread_still_waits_on_it() {
    let p = pipe();
    // SAFETY: dup of a pipe end of this test.
    let d = unsafe { libc::dup(p[0]) };
    assert!(d >= 0);
    // A coroutine's read makes the pipe non-blocking behind the user's back:
    // through the dup made before, F_GETFL must still hide it...
    let w = p[1];
    let reader = patchall::spawn(move || {
        let mut c = 0u8;
        // SAFETY: one byte into a live buffer.
        unsafe { libc::read(p[0], (&raw mut c).cast(), 1) }
    })
    .unwrap();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        write_all(w, b"x");
    })
    .unwrap();
    assert_eq!(reader.join().unwrap(), 1);
    writer.join().unwrap();
    assert_eq!(
        flags(d) & libc::O_NONBLOCK,
        0,
        "our O_NONBLOCK shows through the dup"
    );
    // ...and a plain thread's read of the dup waits for data, as a blocking read.
    let t = std::thread::spawn(move || {
        let mut c = 0u8;
        // SAFETY: one byte into a live buffer.
        let n = unsafe { libc::read(d, (&raw mut c).cast(), 1) };
        (n, c)
    });
    std::thread::sleep(Duration::from_millis(30));
    write_all(p[1], b"y");
    assert_eq!(t.join().unwrap(), (1, b'y'));
    assert_eq!(
        // The user's O_NONBLOCK through the dup: the original says EAGAIN.
        // SAFETY: setting the flags of this test's fd.
        unsafe { libc::fcntl(d, libc::F_SETFL, libc::O_NONBLOCK) },
        0
    );
    assert_ne!(flags(p[0]) & libc::O_NONBLOCK, 0);
    let mut c = 0u8;
    clear_errno();
    // SAFETY: one byte into a live buffer.
    assert_eq!(unsafe { libc::read(p[0], (&raw mut c).cast(), 1) }, -1);
    assert_eq!(errno(), libc::EAGAIN);
    close(&[p[0], p[1], d]);
}

#[test]
fn outside_on_a_pipe_we_made_nonblocking_splice_waits_unless_told_not_to() {
    let (p, q) = (pipe(), pipe());
    // A coroutine's read makes p[0] non-blocking behind the user's back.
    let w = p[1];
    let reader = patchall::spawn(move || {
        let mut c = 0u8;
        // SAFETY: one byte into a live buffer.
        unsafe { libc::read(p[0], (&raw mut c).cast(), 1) }
    })
    .unwrap();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(10));
        write_all(w, b"x");
    })
    .unwrap();
    assert_eq!(reader.join().unwrap(), 1);
    writer.join().unwrap();
    let null = std::ptr::null_mut();
    // The user's SPLICE_F_NONBLOCK on the empty pipe: EAGAIN at once.
    clear_errno();
    // SAFETY: two pipes of this test.
    let r = unsafe { libc::splice(p[0], null, q[1], null, 8, libc::SPLICE_F_NONBLOCK) };
    assert_eq!((r, errno()), (-1, libc::EAGAIN));
    // SAFETY: as above.
    let r = unsafe { libc::tee(p[0], q[1], 8, libc::SPLICE_F_NONBLOCK) };
    assert_eq!((r, errno()), (-1, libc::EAGAIN));
    // Without it, a plain thread's splice waits for data, as the blocking call.
    let t = std::thread::spawn(move || {
        // SAFETY: as above.
        unsafe { libc::splice(p[0], std::ptr::null_mut(), q[1], std::ptr::null_mut(), 8, 0) }
    });
    std::thread::sleep(Duration::from_millis(30));
    write_all(p[1], b"yz");
    assert_eq!(t.join().unwrap(), 2);
    close(&[p[0], p[1], q[0], q[1]]);
}
