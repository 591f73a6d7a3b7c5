//! The tutorial's first coroutine: a consumer written as a generator, fed by a
//! producer with `send` (here `resume`). Python's version:
//!
//! ```python
//! def consumer(name):
//!     print("--->starting eating baozi...")
//!     while True:
//!         new_baozi = yield
//!         print("[%s] is eating baozi %s" % (name, new_baozi))
//! ```

use patchall::{Generator, GeneratorState};

fn consumer(name: &'static str) -> Generator<u32, (), ()> {
    Generator::new(move |co, _first| {
        println!("--->starting eating baozi...");
        loop {
            let baozi = co.suspend(());
            println!("[{name}] is eating baozi {baozi}");
        }
    })
    .expect("a stack for the consumer")
}

fn main() {
    let mut c1 = consumer("c1");
    let mut c2 = consumer("c2");
    // Python's `con.__next__()`: run each consumer up to its first `yield`.
    assert_eq!(c1.resume(0), GeneratorState::Yielded(()));
    assert_eq!(c2.resume(0), GeneratorState::Yielded(()));
    for n in 1..=5 {
        c1.resume(n);
        c2.resume(n);
        println!("[producer] is making baozi {n}");
    }
}
