//! `patchall::stats()` against workloads whose counts are known. One test in
//! this binary: the counters are the process's, and another test's
//! coroutines would change them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn counters_match_known_workloads() {
    let before = patchall::stats();
    assert_eq!(before.coroutines_created, 0);
    assert_eq!(before.switches, 0);

    // 50 sleepers alive at once, each parked once in sleep: two runs each.
    let sleepers: Vec<_> = (0..50)
        .map(|_| patchall::spawn(|| patchall::sleep(Duration::from_millis(20))).unwrap())
        .collect();
    patchall::join_all(sleepers);
    let s = patchall::stats();
    assert_eq!(s.coroutines_created, 50);
    assert_eq!(s.peak_live, 50);
    assert_eq!(s.switches, 100);
    assert_eq!(s.parks_in("sleep"), 50);
    assert_eq!(s.total_parks(), 50);
    assert_eq!(s.timeslice_yields, 0);
    assert_eq!(s.monitor_reports, 0);
    // Timed since the first stats() call.
    let hold = s.longest_hold.expect("runs timed");
    assert!(hold < Duration::from_secs(5), "{hold:?}");

    // A reader parks in recv until a writer's bytes come: net parks.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let reader = patchall::spawn(move || {
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        buf
    })
    .unwrap();
    patchall::sleep(Duration::from_millis(20));
    client.write_all(b"ping").unwrap();
    assert_eq!(&reader.join().unwrap(), b"ping");
    let t = patchall::stats();
    assert_eq!(t.coroutines_created, 51);
    assert_eq!(t.peak_live, 50);
    assert!(t.parks_in("net") >= 1, "{t}");
    assert_eq!(t.parks_in("sleep"), 50, "{t}");

    // A coroutine whose calls keep completing at once yields at the end of
    // each time slice (5 ms by default): 30 ms of them yield a few times.
    let spinner = patchall::spawn(|| {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            let mut byte = 0u8;
            // SAFETY: one byte into a live local; EAGAIN at once.
            unsafe { libc::recv(fd, (&raw mut byte).cast(), 1, libc::MSG_DONTWAIT) };
        }
    })
    .unwrap();
    spinner.join().unwrap();
    let u = patchall::stats();
    assert!(u.timeslice_yields >= 1, "{u}");
    assert_eq!(u.coroutines_created, 52);

    // A name lookup from a coroutine runs on the offload pool while it parks.
    let before = u.offloaded_calls;
    patchall::spawn(|| {
        use std::net::ToSocketAddrs;
        ("localhost", 80)
            .to_socket_addrs()
            .map(|a| a.count())
            .unwrap_or(0)
    })
    .unwrap()
    .join()
    .unwrap();
    let v = patchall::stats();
    assert_eq!(v.offloaded_calls, before + 1, "{v}");
    assert_eq!(v.parks_in("offload"), u.parks_in("offload") + 1, "{v}");

    // The text form names every counter.
    let text = v.to_string();
    for field in [
        "coroutines created  53",
        "peak live           50",
        "parks ",
        "offloaded calls",
        "time-slice yields   ",
        "monitor reports     0",
        "longest hold",
    ] {
        assert!(text.contains(field), "{field:?} missing:\n{text}");
    }
}
