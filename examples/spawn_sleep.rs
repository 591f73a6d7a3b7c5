//! gevent's introductory example, on patchall: two coroutines sleep, 2 s and 1 s,
//! on one thread; both sleeps overlap, so the whole takes about 2 s, not 3.
//!
//! ```text
//! cargo run --example spawn_sleep
//! ```
//!
//! Prints:
//!
//! ```text
//! Running in foo
//! Explicit context to bar
//! Implicit context switch back to bar
//! Explicit context switch to foo again
//! elapsed 2.00 s (the sleeps took 3 s in all)
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn foo() {
    say("Running in foo");
    patchall::sleep(Duration::from_secs(2));
    say("Explicit context switch to foo again");
}

fn bar() {
    say("Explicit context to bar");
    patchall::sleep(Duration::from_secs(1));
    say("Implicit context switch back to bar");
}

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    for result in patchall::join_all([patchall::spawn(foo)?, patchall::spawn(bar)?]) {
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
    println!(
        "elapsed {:.2} s (the sleeps took 3 s in all)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes one line to stdout with a single `write(2)`. Not `println!`: it holds
/// std's stdout lock while its write may park the coroutine (a full pipe), and a
/// second coroutine that prints meanwhile panics ("RefCell already borrowed").
/// A `&File` has no lock.
fn say(line: &str) {
    static STDOUT: OnceLock<File> = OnceLock::new();
    let mut out = STDOUT.get_or_init(|| {
        let fd = std::io::stdout().as_fd().try_clone_to_owned();
        File::from(fd.expect("duplicate stdout"))
    });
    out.write_all(format!("{line}\n").as_bytes())
        .expect("write to stdout");
}
