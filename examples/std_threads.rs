//! A plain Rust program with `std::thread` workers, for running under the
//! preload with green threads on (`patchall run --green-threads`): Rust's std
//! threads cannot be coroutines, so they must stay native threads, each on an
//! OS thread of its own, and the program must behave as without the preload.

use std::thread;
use std::time::Duration;

fn main() {
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    thread::sleep(Duration::from_millis(10 * i));
                    let name = thread::current().name().map(String::from);
                    (i * i, name, thread::current().id())
                })
                .expect("spawn a std thread")
        })
        .collect();
    let main_id = thread::current().id();
    for worker in workers {
        let (square, name, id) = worker.join().expect("worker panicked");
        println!(
            "{} returned {square} on a thread of its own: {}",
            name.unwrap_or_default(),
            id != main_id
        );
    }
    let scoped: u64 = thread::scope(|s| {
        let parts: Vec<_> = (1..=3u64).map(|i| s.spawn(move || i * 10)).collect();
        parts.into_iter().map(|p| p.join().unwrap()).sum()
    });
    println!("scoped threads summed {scoped}");
}
