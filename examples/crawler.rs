//! The tutorial's crawler: fetch several URLs one after another, then all at once
//! in coroutines, with an unmodified blocking HTTP client (minreq, built on
//! std::net). As `monkey.patch_all()` makes `urlopen` cooperative, patchall's
//! hooks make minreq's `connect`/`read`/`write` park the coroutine.
//!
//! `cargo run --release --example crawler [URL...]`: without URLs it starts a local
//! HTTP server whose every answer takes 200 ms (this machine has no internet).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(200);
const PAGES: usize = 10;

/// A local server: thread per connection, each answer after DELAY; page i has
/// 1000 + 100 i bytes.
fn start_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut path = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if path.is_empty() {
                        path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let page: usize = path
                    .rsplit('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let body = "x".repeat(1000 + 100 * page);
                std::thread::sleep(DELAY);
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

fn fetch(url: &str) -> Result<usize, String> {
    let response = minreq::get(url).send().map_err(|e| format!("{url}: {e}"))?;
    Ok(response.as_bytes().len())
}

fn report(url: &str, got: &Result<usize, String>) {
    match got {
        Ok(n) => println!("{n} bytes received from {url}."),
        Err(e) => println!("failed: {e}"),
    }
}

fn main() {
    let mut urls: Vec<String> = std::env::args().skip(1).collect();
    let local = urls.is_empty();
    if local {
        let base = start_server();
        urls = (0..PAGES).map(|i| format!("{base}/page/{i}")).collect();
    }

    println!("sequential:");
    let start = Instant::now();
    for url in &urls {
        println!("GET: {url}");
        report(url, &fetch(url));
    }
    let sequential = start.elapsed();

    println!("concurrent:");
    let start = Instant::now();
    let handles: Vec<_> = urls
        .iter()
        .cloned()
        .map(|url| {
            patchall::spawn(move || {
                let got = fetch(&url);
                (url, got)
            })
            .expect("a coroutine per URL")
        })
        .collect();
    let mut results: Vec<(String, Result<usize, String>)> = patchall::join_all(handles)
        .into_iter()
        .map(|r| r.expect("no fetch panics"))
        .collect();
    let concurrent = start.elapsed();
    results.sort_by_key(|(url, _)| urls.iter().position(|u| u == url));
    for (url, got) in &results {
        println!("GET: {url}");
        report(url, got);
    }

    println!(
        "{} fetches: sequential {:.2} s, concurrent {:.2} s{}",
        urls.len(),
        sequential.as_secs_f64(),
        concurrent.as_secs_f64(),
        if local {
            format!(" (each answer takes {} ms)", DELAY.as_millis())
        } else {
            String::new()
        }
    );
}
