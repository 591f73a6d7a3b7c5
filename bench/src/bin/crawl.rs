//! The crawler benchmark's client: N fetches of `URL/i` with minreq (an
//! unmodified blocking HTTP client), one after another, a std thread per
//! fetch, or a patchall coroutine per fetch on this one thread. Prints one JSON
//! object: wall time, fetches that failed, OS threads while they were in
//! flight, this process's peak RSS.
//!
//! ```text
//! crawl --url http://127.0.0.1:PORT --mode sequential|threads|patchall [--fetches 1000]
//! ```

use std::time::Instant;

use patchall_bench::{Args, Json, status_field};

const USAGE: &str = "crawl --url URL --mode sequential|threads|patchall [--fetches 1000]";

/// One fetch: did a 200 with the 1,000-byte body come back?
fn fetch(url: &str) -> bool {
    match minreq::get(url).send() {
        Ok(r) => r.status_code == 200 && r.as_bytes().len() == 1000,
        Err(e) => {
            eprintln!("crawl: {url}: {e}");
            false
        }
    }
}

fn main() {
    let args = Args::parse(USAGE);
    let base = args.required("url");
    let mode = args.required("mode");
    let fetches: usize = args.get("fetches", 1000);
    let urls: Vec<String> = (0..fetches).map(|i| format!("{base}/page/{i}")).collect();
    let start = Instant::now();
    let (ok, threads) = match mode.as_str() {
        "sequential" => {
            let threads = status_field(0, "Threads");
            (urls.iter().filter(|u| fetch(u)).count(), threads)
        }
        "threads" => {
            let handles: Vec<_> = urls
                .into_iter()
                .map(|u| std::thread::spawn(move || fetch(&u)))
                .collect();
            let threads = status_field(0, "Threads");
            let ok = handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|&fetched| fetched)
                .count();
            (ok, threads)
        }
        "patchall" => {
            let handles: Vec<_> = urls
                .into_iter()
                .map(|u| patchall::spawn(move || fetch(&u)).expect("a coroutine per fetch"))
                .collect();
            let threads = status_field(0, "Threads");
            let ok = patchall::join_all(handles)
                .into_iter()
                .filter(|r| matches!(r, Ok(true)))
                .count();
            (ok, threads)
        }
        _ => {
            eprintln!("usage: {USAGE}");
            std::process::exit(2);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let report = Json::default()
        .str("mode", &mode)
        .num("fetches", Some(fetches as u32))
        .num("ok", Some(ok as u32))
        .num("secs", Some(secs))
        .num("threads", threads.map(|t| t as f64))
        .num("hwm_kib", status_field(0, "VmHWM").map(|v| v as f64));
    println!("{report}");
}
