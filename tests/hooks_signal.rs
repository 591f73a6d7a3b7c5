//! EINTR as the kernel gives it: a handler without SA_RESTART interrupts a parked
//! call; with SA_RESTART the call goes on; a socket with a timeout is never
//! restarted (signal(7)). And sigaction shows the user's own handler.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

static HANDLED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

extern "C" fn count(sig: libc::c_int) {
    let i = (sig - libc::SIGRTMIN()) as usize;
    HANDLED[i].fetch_add(1, SeqCst);
}

/// Installs `count` for SIGRTMIN+`n` (each test its own signal).
fn install(n: i32, flags: libc::c_int) -> libc::c_int {
    let sig = libc::SIGRTMIN() + n;
    // SAFETY: a zeroed sigaction with an empty mask and our handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count as *const () as libc::sighandler_t;
        act.sa_flags = flags;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
    sig
}

fn raw_pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    assert_eq!(
        // SAFETY: pipe2 writes two fds.
        unsafe { libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), 0) },
        0
    );
    (fds[0], fds[1])
}

fn read_one(fd: i32) -> (isize, Option<i32>, u8) {
    let mut b = [0u8; 1];
    // SAFETY: reading into a local buffer.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    (
        n,
        (n < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap()),
        b[0],
    )
}

fn signal_this_thread(sig: i32) {
    // SAFETY: sending a signal to our own thread, whose handler is installed.
    assert_eq!(unsafe { libc::pthread_kill(libc::pthread_self(), sig) }, 0);
}

#[test]
fn a_handler_without_sa_restart_interrupts_a_parked_read() {
    let sig = install(0, 0);
    let (r, w) = raw_pipe();
    let reader = patchall::spawn(move || read_one(r)).unwrap();
    let ticks = patchall::spawn(move || {
        for _ in 0..3 {
            patchall::sleep(Duration::from_millis(2));
        }
        signal_this_thread(sig);
        3
    })
    .unwrap();
    assert_eq!(ticks.join().unwrap(), 3);
    assert_eq!(reader.join().unwrap(), (-1, Some(libc::EINTR), 0));
    assert!(HANDLED[0].load(SeqCst) >= 1);
    // SAFETY: closing our pipe.
    unsafe { (libc::close(r), libc::close(w)) };
}

#[test]
fn a_handler_with_sa_restart_lets_the_read_go_on() {
    let sig = install(1, libc::SA_RESTART);
    let (r, w) = raw_pipe();
    let reader = patchall::spawn(move || read_one(r)).unwrap();
    patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(5));
        signal_this_thread(sig);
        patchall::sleep(Duration::from_millis(5));
        // SAFETY: writing one byte from a static.
        unsafe { libc::write(w, b"z".as_ptr().cast(), 1) };
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(reader.join().unwrap(), (1, None, b'z'));
    assert!(HANDLED[1].load(SeqCst) >= 1);
    // SAFETY: closing our pipe.
    unsafe { (libc::close(r), libc::close(w)) };
}

#[test]
fn a_socket_with_a_timeout_is_never_restarted() {
    let sig = install(2, libc::SA_RESTART);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let reader = patchall::spawn(move || {
        use std::io::Read;
        let mut a = a;
        a.read(&mut [0u8; 1]).map_err(|e| e.kind())
    })
    .unwrap();
    patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(5));
        signal_this_thread(sig);
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(reader.join().unwrap(), Err(std::io::ErrorKind::Interrupted));
}

#[test]
fn outside_coroutines_eintr_is_the_kernels() {
    let sig = install(3, 0);
    let (r, w) = raw_pipe();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        read_one(r)
    });
    let thread = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: the thread is alive (blocked in read) until it returns below.
    assert_eq!(unsafe { libc::pthread_kill(thread, sig) }, 0);
    assert_eq!(t.join().unwrap(), (-1, Some(libc::EINTR), 0));
    // SAFETY: closing our pipe.
    unsafe { (libc::close(r), libc::close(w)) };
}

#[test]
fn sigaction_reports_the_users_handler_and_flags() {
    let sig = libc::SIGRTMIN() + 4;
    // SAFETY: installing and reading back handlers for a real-time signal.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        assert_eq!(old.sa_sigaction, act.sa_sigaction);
        assert_eq!(
            old.sa_flags & (libc::SA_RESTART | libc::SA_SIGINFO),
            libc::SA_RESTART
        );
        // signal() hands back the previous user handler, and installs BSD semantics.
        let prev = libc::signal(sig, libc::SIG_IGN);
        assert_eq!(prev, act.sa_sigaction);
        assert_eq!(libc::signal(sig, libc::SIG_DFL), libc::SIG_IGN);
        // Bad signal numbers fail as they would.
        assert_eq!(libc::signal(0, libc::SIG_IGN), libc::SIG_ERR);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
