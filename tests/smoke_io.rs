use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

#[test]
fn read_parks_and_others_progress() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let reader = patchall::spawn(move || {
        let mut buf = [0u8; 5];
        // UnixStream::read -> read(2)
        a.read_exact(&mut buf).unwrap();
        (buf, t.load(SeqCst))
    })
    .unwrap();
    let t2 = ticks.clone();
    let ticker = patchall::spawn(move || {
        for _ in 0..5 {
            t2.fetch_add(1, SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            patchall::yield_now();
        }
        b.write_all(b"hello").unwrap();
    })
    .unwrap();
    let (buf, seen) = reader.join().unwrap();
    ticker.join().unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(seen, 5);
}
