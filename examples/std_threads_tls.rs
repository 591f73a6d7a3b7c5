//! std threads that keep state in `thread_local!` and talk over channels, for
//! running with green threads that have TLS of their own
//! (`patchall run --green-threads --green-tls own`): each std thread is then a
//! green thread, and the program prints the same as natively.

use std::cell::{Cell, RefCell};
use std::sync::mpsc;
use std::thread;

thread_local! {
    static SENT: Cell<u64> = const { Cell::new(0) };
    static NAME: RefCell<String> = RefCell::new(
        thread::current().name().unwrap_or("unnamed").to_owned(),
    );
}

const PRODUCERS: u64 = 4;
const MESSAGES: u64 = 1000;

fn main() {
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let (back_tx, back_rx) = mpsc::sync_channel::<u64>(1);
    let consumer = thread::Builder::new()
        .name("consumer".into())
        .spawn(move || {
            let mut sums = [0u64; PRODUCERS as usize];
            for (who, value) in rx {
                sums[who as usize] += value;
                SENT.with(|s| s.set(s.get() + 1));
            }
            back_tx.send(SENT.with(Cell::get)).unwrap();
            (sums, NAME.with(|n| n.borrow().clone()))
        })
        .unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|who| {
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("producer-{who}"))
                .spawn(move || {
                    for i in 0..MESSAGES {
                        tx.send((who, i * (who + 1))).unwrap();
                        SENT.with(|s| s.set(s.get() + 1));
                        if i % 100 == 0 {
                            thread::yield_now();
                        }
                    }
                    (SENT.with(Cell::get), NAME.with(|n| n.borrow().clone()))
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    for p in producers {
        let (sent, name) = p.join().unwrap();
        println!("{name} sent {sent}");
    }
    println!("consumer counted {}", back_rx.recv().unwrap());
    let (sums, name) = consumer.join().unwrap();
    println!("{name} summed {sums:?}");
    println!(
        "main sent {} as {}",
        SENT.with(Cell::get),
        NAME.with(|n| n.borrow().clone())
    );
}
