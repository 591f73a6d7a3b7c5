//! SO_RCVTIMEO with a negative `tv_sec`: Linux accepts it and then never waits.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn set_rcvtimeo(s: &UnixStream, tv: libc::timeval) {
    // SAFETY: a valid socket and a timeval of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// A read on a fresh pair with the timeout set: its errno and how long it took.
fn read_with_negative_timeout() -> (Option<i32>, Duration) {
    let (mut a, _b) = UnixStream::pair().unwrap();
    set_rcvtimeo(
        &a,
        libc::timeval {
            tv_sec: -1,
            tv_usec: 0,
        },
    );
    let start = Instant::now();
    let err = a.read(&mut [0u8; 8]).unwrap_err();
    (err.raw_os_error(), start.elapsed())
}

#[test]
fn negative_rcvtimeo_does_not_wait_inside_or_outside_a_coroutine() {
    let (errno, took) = read_with_negative_timeout();
    assert_eq!(errno, Some(libc::EAGAIN), "the kernel's answer");
    assert!(took < Duration::from_secs(2), "waited {took:?}");

    // Before the fix the hook recorded ~584,000 years and parked forever.
    let (errno, took) = patchall::spawn(read_with_negative_timeout)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(errno, Some(libc::EAGAIN));
    assert!(took < Duration::from_secs(2), "waited {took:?}");
}
