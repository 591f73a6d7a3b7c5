//! The producer/consumer walk-through with a channel: a producer makes five
//! baozi, consumers c1 and c2 eat them as they come (gevent's `Queue` example).
//!
//! `cargo run --example producer_consumer_channel` prints, always in this order:
//!
//! ```text
//! producer made baozi 1
//! c1 ate baozi 1
//! producer made baozi 2
//! c2 ate baozi 2
//! ...
//! producer made baozi 5
//! c1 ate baozi 5
//! c1 ate 3, c2 ate 2
//! ```
//!
//! The channel has no buffer (`bounded(0)`): each baozi goes from the
//! producer's hand into a waiting consumer's, and waiting consumers are served
//! in turn, so c1 and c2 alternate.

use std::time::Duration;

use patchall::sync::{Mutex, bounded};

/// Stdout's buffer sits in a `RefCell`: if one coroutine's `println!` parks in
/// `write` and another prints meanwhile, the second panics ("already
/// borrowed"). Taking turns through a patchall Mutex parks it instead.
static STDOUT: Mutex<()> = Mutex::new(());

fn say(line: String) {
    let _turn = STDOUT.lock().unwrap();
    println!("{line}");
}

fn main() {
    let (tx, rx) = bounded(0);
    let producer = patchall::spawn(move || {
        for i in 1..=5 {
            patchall::sleep(Duration::from_millis(10)); // making a baozi takes time
            say(format!("producer made baozi {i}"));
            tx.send(i).unwrap();
        }
        // `tx` is dropped here: the channel disconnects and the consumers stop.
    })
    .unwrap();
    let consumers: Vec<_> = ["c1", "c2"]
        .into_iter()
        .map(|name| {
            let rx = rx.clone();
            let eater = patchall::spawn(move || {
                let mut eaten = 0;
                for baozi in &rx {
                    say(format!("{name} ate baozi {baozi}"));
                    eaten += 1;
                }
                eaten
            })
            .unwrap();
            (name, eater)
        })
        .collect();
    drop(rx);
    producer.join().unwrap();
    let totals: Vec<String> = consumers
        .into_iter()
        .map(|(name, eater)| format!("{name} ate {}", eater.join().unwrap()))
        .collect();
    println!("{}", totals.join(", "));
}
