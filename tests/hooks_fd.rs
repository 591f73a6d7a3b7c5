//! close, dup family, fcntl and ioctl(FIONBIO): both faces.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

fn raw_getfl(fd: i32) -> i32 {
    // SAFETY: raw fcntl system call, bypassing the hooks; reads the fd's flags.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

/// A pipe made by the raw system call: the hooks never saw it created, as if it
/// were inherited from a parent process.
fn inherited_pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    assert_eq!(
        // SAFETY: pipe2 writes two fds into the array.
        unsafe { libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), 0) },
        0
    );
    (fds[0], fds[1])
}

fn ticker(count: Arc<AtomicUsize>, rounds: usize) -> patchall::JoinHandle<()> {
    patchall::spawn(move || {
        for _ in 0..rounds {
            count.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(1));
        }
    })
    .unwrap()
}

/// A coroutine reading one byte from `fd`: the read's result and errno.
fn read_one_byte(fd: i32) -> patchall::JoinHandle<(isize, Option<i32>)> {
    patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        (n, std::io::Error::last_os_error().raw_os_error())
    })
    .unwrap()
}

#[test]
fn close_wakes_a_waiter_with_ebadf() {
    let (r, w) = inherited_pipe();
    let reader = read_one_byte(r);
    let closer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        // SAFETY: closing the read end the other coroutine waits on.
        unsafe { libc::close(r) }
    })
    .unwrap();
    assert_eq!(closer.join().unwrap(), 0);
    assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
    // SAFETY: closing our write end.
    unsafe { libc::close(w) };
}

#[test]
fn a_reused_fd_number_gets_no_stale_wakeup() {
    // A number no other test in this process uses: the tests run in parallel, so
    // a number freed by `close` could otherwise be taken by another test.
    const NUMBER: i32 = 977;
    let (r0, w) = inherited_pipe();
    // SAFETY: moving our read end onto a number nobody else uses.
    assert_eq!(unsafe { libc::dup2(r0, NUMBER) }, NUMBER);
    // SAFETY: the duplicate stays open as NUMBER.
    unsafe { libc::close(r0) };
    let waiter = patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer.
        unsafe { libc::read(NUMBER, b.as_mut_ptr().cast(), 1) }
    })
    .unwrap();
    patchall::spawn(move || {
        // SAFETY: closing the fd another coroutine waits on.
        unsafe { libc::close(NUMBER) };
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(waiter.join().unwrap(), -1);
    // The number comes back for a new pipe; its reader must wait for real data.
    let (r2, w2) = inherited_pipe();
    // SAFETY: move the new read end onto the old number.
    assert_eq!(unsafe { libc::dup2(r2, NUMBER) }, NUMBER);
    // SAFETY: the duplicate stays open as NUMBER.
    unsafe { libc::close(r2) };
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let reader = patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(NUMBER, b.as_mut_ptr().cast(), 1) };
        g.store(1, SeqCst);
        (n, b[0])
    })
    .unwrap();
    // Writing to the old pipe's write end must not wake the new reader.
    // SAFETY: writing one byte from a local.
    unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
    patchall::sleep(Duration::from_millis(30));
    assert_eq!(got.load(SeqCst), 0, "reader woke without data");
    // SAFETY: writing one byte to the new pipe.
    unsafe { libc::write(w2, b"y".as_ptr().cast(), 1) };
    assert_eq!(reader.join().unwrap(), (1, b'y'));
    for fd in [NUMBER, w2, w] {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn dup2_over_a_waited_fd_wakes_it_with_ebadf() {
    let (r, w) = inherited_pipe();
    let (r2, w2) = inherited_pipe();
    let reader = read_one_byte(r);
    patchall::spawn(move || {
        patchall::yield_now();
        // SAFETY: replacing `r` with a copy of `r2`.
        assert_eq!(unsafe { libc::dup2(r2, r) }, r);
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
    for fd in [r, w, r2, w2] {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn close_range_over_a_waited_fd_wakes_it_with_ebadf() {
    let (r, w) = inherited_pipe();
    let reader = read_one_byte(r);
    let closer = patchall::spawn(move || {
        patchall::yield_now();
        // SAFETY: closes only `r`, which the other coroutine waits on.
        unsafe { libc::close_range(r as u32, r as u32, 0) }
    })
    .unwrap();
    assert_eq!(closer.join().unwrap(), 0);
    assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
    // SAFETY: closing our write end.
    unsafe { libc::close(w) };
}

#[test]
fn dup2_with_a_bad_source_leaves_the_target_alone() {
    let (r, w) = inherited_pipe();
    // SAFETY: dup2 from a closed fd: must fail with EBADF and touch nothing.
    let r2 = unsafe { libc::dup2(1_000_000 - 1, r) };
    assert_eq!(r2, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EBADF)
    );
    assert!(raw_getfl(r) >= 0);
    for fd in [r, w] {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn close_from_another_thread_wakes_the_waiter() {
    let (r, w) = inherited_pipe();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let h = patchall::spawn(move || {
            tx.send(()).unwrap();
            let mut b = [0u8; 1];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
            (n, std::io::Error::last_os_error().raw_os_error())
        })
        .unwrap();
        h.join().unwrap()
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: closing, from this thread, the fd a coroutine on `t` waits on.
    assert_eq!(unsafe { libc::close(r) }, 0);
    assert_eq!(t.join().unwrap(), (-1, Some(libc::EBADF)));
    // SAFETY: closing our write end.
    unsafe { libc::close(w) };
}

#[test]
fn getfl_hides_our_nonblock_and_plain_threads_still_block() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let count = Arc::new(AtomicUsize::new(0));
    let tick = ticker(count.clone(), 10_000);
    let acceptor = patchall::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        drop(s);
        listener
    })
    .unwrap();
    let client = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        TcpStream::connect(addr).unwrap()
    })
    .unwrap();
    let listener = acceptor.join().unwrap();
    drop(client.join().unwrap());
    assert!(count.load(SeqCst) > 0, "the ticker ran while accept waited");
    drop(tick);
    // We set O_NONBLOCK for the coroutine; the user never asked for it.
    assert_ne!(raw_getfl(fd) & libc::O_NONBLOCK, 0);
    // SAFETY: fcntl through the hook.
    let shown = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert_eq!(shown & libc::O_NONBLOCK, 0);
    // A plain thread's accept blocks until a client comes, as the user expects.
    let t = std::thread::spawn(move || listener.accept().map(|_| ()).map_err(|e| e.kind()));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "accept returned early: {:?}", t.join());
    let _c = TcpStream::connect(addr).unwrap();
    assert_eq!(t.join().unwrap(), Ok(()));
}

#[test]
fn the_users_nonblocking_wish_gives_eagain() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap(); // ioctl(FIONBIO)
    let got = patchall::spawn(move || listener.accept().map(|_| ()).map_err(|e| e.kind()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(got, Err(ErrorKind::WouldBlock));

    let (r, w) = inherited_pipe();
    assert_eq!(
        // SAFETY: fcntl through the hook: the user asks for O_NONBLOCK.
        unsafe { libc::fcntl(r, libc::F_SETFL, libc::O_NONBLOCK) },
        0
    );
    let got = patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
        (n, std::io::Error::last_os_error().raw_os_error())
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(got, (-1, Some(libc::EAGAIN)));
    for fd in [r, w] {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn clearing_fionbio_on_our_socket_keeps_it_cooperative() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = patchall::spawn(move || {
        // First accept: we set O_NONBLOCK; then the user toggles FIONBIO on and off.
        let c = std::thread::spawn(move || TcpStream::connect(addr).unwrap());
        listener.accept().unwrap();
        c.join().unwrap();
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        listener.set_nonblocking(false).unwrap();
        listener
    })
    .unwrap()
    .join()
    .unwrap();
    assert_ne!(
        raw_getfl(listener.as_raw_fd()) & libc::O_NONBLOCK,
        0,
        "still ours"
    );
    assert_eq!(
        // SAFETY: fcntl through the hook.
        unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFL) } & libc::O_NONBLOCK,
        0
    );
}

#[test]
fn inherited_fds_keep_their_shared_flags() {
    let (r, w) = inherited_pipe();
    let before = raw_getfl(r);
    let count = Arc::new(AtomicUsize::new(0));
    let tick = ticker(count.clone(), 10_000);
    let reader = patchall::spawn(move || {
        // SAFETY: `r` is an open pipe end; ownership is given back below.
        let mut f = unsafe { std::fs::File::from_raw_fd(r) };
        let mut buf = [0u8; 5];
        f.read_exact(&mut buf).unwrap();
        let _ = f.into_raw_fd();
        buf
    })
    .unwrap();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        // SAFETY: writing five bytes from a static.
        unsafe { libc::write(w, b"hello".as_ptr().cast(), 5) }
    })
    .unwrap();
    assert_eq!(writer.join().unwrap(), 5);
    assert_eq!(&reader.join().unwrap(), b"hello");
    assert!(count.load(SeqCst) > 0);
    drop(tick);
    assert_eq!(
        raw_getfl(r),
        before,
        "the shared file status flags were changed"
    );
    for fd in [r, w] {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
}

/// The fd table grows with the fd number. fd 200,000 is proven on the table
/// itself (`fdmap` unit test): this sandbox caps RLIMIT_NOFILE at 20,000 without
/// CAP_SYS_RESOURCE, so here the highest fd the limit allows is used end to end.
#[test]
fn the_highest_allowed_fd_works() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading, then raising the soft limit to the hard one.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(1 << 20);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let high = (lim.rlim_cur - 1) as i32;
    assert!(
        high >= 4096 * 4,
        "limit too low to leave the table's first page"
    );
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: duplicating our socket onto a high, free number.
    assert_eq!(unsafe { libc::dup2(a.as_raw_fd(), high) }, high);
    let reader = patchall::spawn(move || {
        let mut buf = [0u8; 3];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(high, buf.as_mut_ptr().cast(), 3) };
        (n, buf)
    })
    .unwrap();
    let mut b2 = b;
    patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(10));
        b2.write_all(b"abc").unwrap();
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(reader.join().unwrap(), (3, *b"abc"));
    // SAFETY: closing our duplicate.
    unsafe { libc::close(high) };
}
