//! Name resolution in coroutines runs on the offload pool: 50 lookups through a
//! deliberately slow resolver finish in about one delay while an unrelated
//! coroutine keeps ticking, each coroutine gets its own answer (also from the
//! non-reentrant gethostby* calls), and h_errno/EAI_* errors are those of the
//! call made outside a coroutine.
//!
//! The slow resolver exists only for the test: a tiny DNS server on a
//! 127.x.y.z address answering after `DELAY`, and a child process in a mount
//! namespace of its own where a temporary resolv.conf is bind-mounted over
//! /etc/resolv.conf. The child runs the scenario (`scenario_in_namespace`).
//! Where mount namespaces are unavailable the test says so and skips, unless
//! `PATCHALL_TEST_REQUIRE_NAMESPACES=1` (CI) makes that a failure.

mod common;

use std::ffi::{CStr, CString};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{TempDir, assert_passed, ignored_test, run};

/// How long the server waits before each answer.
const DELAY: Duration = Duration::from_millis(200);
const LOOKUPS: usize = 50;
const DOMAIN: &str = "patchall.test";

/// `host-N.patchall.test` resolves to 10.0.N/256.N%256.
fn address_of(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (n / 256) as u8, (n % 256) as u8)
}

fn host(n: usize) -> String {
    format!("host-{n}.{DOMAIN}")
}

// ---- the slow DNS server (runs in the test process) -----------------------

/// The labels of the name at `at`, and the offset after it (no compression:
/// queries carry none).
fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<String>, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels, at));
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The answer to one query: A for host-N, PTR for N's reverse name,
/// NXDOMAIN for anything else in the domain, an empty answer otherwise.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let (labels, end) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes(query.get(end..end + 2)?.try_into().ok()?);
    let question = query.get(12..end + 4)?;
    let name = labels.join(".");
    let number = |s: &str| s.parse::<usize>().ok();
    let mut rr = Vec::new();
    let mut rcode = 0u16;
    if let Some(n) = name
        .strip_suffix(&format!(".{DOMAIN}"))
        .and_then(|h| h.strip_prefix("host-"))
        .and_then(number)
    {
        if qtype == 1 {
            rr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            rr.extend_from_slice(&address_of(n).octets());
        }
    } else if let Some(rest) = name.strip_suffix(".0.10.in-addr.arpa") {
        let mut parts = rest.split('.');
        let (Some(low), Some(high)) =
            (parts.next().and_then(number), parts.next().and_then(number))
        else {
            return None;
        };
        if qtype == 12 {
            let mut target = Vec::new();
            write_name(&mut target, &host(high * 256 + low));
            rr.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
            rr.extend_from_slice(&(target.len() as u16).to_be_bytes());
            rr.extend_from_slice(&target);
        }
    } else if name.ends_with(DOMAIN) {
        rcode = 3;
    }
    let mut msg = Vec::with_capacity(512);
    msg.extend_from_slice(&query[..2]);
    msg.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
    msg.extend_from_slice(&[0, 1, 0, u8::from(!rr.is_empty()), 0, 0, 0, 0]);
    msg.extend_from_slice(question);
    msg.extend_from_slice(&rr);
    Some(msg)
}

/// Answers every query `DELAY` after it arrived, until `stop`.
fn serve(sock: UdpSocket, stop: Arc<AtomicBool>, queries: Arc<AtomicUsize>) {
    let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
    let mut buf = [0u8; 1500];
    while !stop.load(SeqCst) {
        let now = Instant::now();
        pending.retain(|(at, reply, to)| {
            if *at > now {
                return true;
            }
            let _ = sock.send_to(reply, to);
            false
        });
        let wait = pending
            .iter()
            .map(|p| p.0.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(20))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            queries.fetch_add(1, SeqCst);
            if let Some(reply) = answer(&buf[..n]) {
                pending.push((Instant::now() + DELAY, reply, from));
            }
        }
    }
}

/// Binds port 53 on a loopback address of its own (resolv.conf has no port).
fn bind_server() -> (UdpSocket, Ipv4Addr) {
    let base = std::process::id() as usize;
    for i in 0..200 {
        let ip = Ipv4Addr::new(127, 83, ((base + i) % 250 + 1) as u8, 53);
        if let Ok(sock) = UdpSocket::bind((ip, 53)) {
            return (sock, ip);
        }
    }
    panic!("cannot bind a loopback address on port 53 (the tests run as root)");
}

/// `cmd`, run in a mount namespace of its own where `conf` is /etc/resolv.conf.
fn in_namespace(mut cmd: Command, conf: CString) -> Command {
    // SAFETY: only system calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let fail = |what: &str| {
                let e = std::io::Error::last_os_error();
                Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
            };
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail("unshare(CLONE_NEWNS)");
            }
            // Our mounts must not propagate back to the host's namespace.
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let null = std::ptr::null();
            if libc::mount(null, c"/".as_ptr(), null, private, null.cast()) != 0 {
                return fail("mount(/, MS_REC|MS_PRIVATE)");
            }
            let target = c"/etc/resolv.conf".as_ptr();
            if libc::mount(conf.as_ptr(), target, null, libc::MS_BIND, null.cast()) != 0 {
                return fail("bind-mount over /etc/resolv.conf");
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn slow_lookups_from_coroutines_overlap_in_a_mount_namespace() {
    let (sock, ip) = bind_server();
    let dir = TempDir::new("resolv");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(
        &conf,
        format!("nameserver {ip}\noptions timeout:5 attempts:2\n"),
    )
    .unwrap();
    let conf = CString::new(conf.to_str().unwrap()).unwrap();

    // Can this machine make the namespace at all?
    let probe = in_namespace(Command::new("true"), conf.clone()).status();
    if let Err(e) = probe {
        let required = std::env::var("PATCHALL_TEST_REQUIRE_NAMESPACES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "BLOCKED: cannot make a mount namespace with its own resolv.conf: {e}"
        );
        eprintln!(
            "SKIPPED slow_lookups_from_coroutines_overlap_in_a_mount_namespace: cannot make a \
             mount namespace with its own resolv.conf ({e}); it needs CAP_SYS_ADMIN"
        );
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let server = {
        let (stop, queries) = (stop.clone(), queries.clone());
        std::thread::spawn(move || serve(sock, stop, queries))
    };
    let name = "scenario_in_namespace";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_TEST_IN_DNS_NAMESPACE", "1");
    let out = run(in_namespace(cmd, conf));
    stop.store(true, SeqCst);
    server.join().unwrap();
    println!("{}", out.stdout);
    assert_passed(name, &out);
    assert!(
        queries.load(SeqCst) >= LOOKUPS,
        "the server saw {} queries: the lookups did not reach it",
        queries.load(SeqCst)
    );
}

// ---- the scenario (runs in the namespace) ----------------------------------

/// Resolves `name` with std (getaddrinfo, AF_UNSPEC) to its IPv4 addresses.
fn resolve_v4(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let addrs = (name, 80).to_socket_addrs().map_err(|e| e.to_string())?;
    Ok(addrs
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(*v4.ip()),
            SocketAddr::V6(_) => None,
        })
        .collect())
}

unsafe extern "C" {
    fn __h_errno_location() -> *mut libc::c_int;
}

fn h_errno() -> libc::c_int {
    // SAFETY: always valid for this thread.
    unsafe { *__h_errno_location() }
}

/// (official name, first IPv4 address) of a hostent, or None for null.
fn read_hostent(h: *const libc::hostent) -> Option<(String, Ipv4Addr)> {
    // SAFETY: a hostent the resolver returned: its name and first address are
    // valid while the storage is (until the caller's next call).
    unsafe {
        let h = h.as_ref()?;
        let name = CStr::from_ptr(h.h_name).to_string_lossy().into_owned();
        let first = *h.h_addr_list;
        let octets = std::slice::from_raw_parts(first.cast::<u8>(), 4);
        Some((
            name,
            Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
        ))
    }
}

/// A coroutine that counts 5 ms ticks until `stop`.
fn ticker() -> (Arc<AtomicUsize>, Arc<AtomicBool>, patchall::JoinHandle<()>) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (ticks.clone(), stop.clone());
    let h = patchall::spawn(move || {
        while !s.load(SeqCst) {
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(5));
        }
    })
    .unwrap();
    (ticks, stop, h)
}

fn reverse_lookup(n: usize) -> Result<String, i32> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address_of(n).octets()),
        },
        sin_zero: [0; 8],
    };
    let mut name = [0 as libc::c_char; 256];
    // SAFETY: a valid sockaddr_in and a buffer of the size given.
    let r = unsafe {
        libc::getnameinfo(
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            name.as_mut_ptr(),
            name.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if r != 0 {
        return Err(r);
    }
    // SAFETY: getnameinfo wrote a NUL-terminated name.
    Ok(unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

#[test]
#[ignore = "run by slow_lookups_from_coroutines_overlap_in_a_mount_namespace, in its namespace"]
fn scenario_in_namespace() {
    assert_eq!(
        std::env::var("PATCHALL_TEST_IN_DNS_NAMESPACE").as_deref(),
        Ok("1"),
        "run this through slow_lookups_from_coroutines_overlap_in_a_mount_namespace"
    );

    // Outside a coroutine: the real call, through the slow server.
    let start = Instant::now();
    assert_eq!(resolve_v4(&host(1)), Ok(vec![address_of(1)]));
    let one = start.elapsed();
    assert!(
        one >= DELAY,
        "a lookup took {one:?}: not through the slow server"
    );
    println!("one lookup outside coroutines: {one:?}");

    // 50 coroutines, one lookup each, while a ticker runs.
    let offloaded_before = patchall::offloaded_calls();
    let (ticks, stop, tick) = ticker();
    let start = Instant::now();
    let lookups: Vec<_> = (1..=LOOKUPS)
        .map(|n| patchall::spawn(move || (n, resolve_v4(&host(n)))).unwrap())
        .collect();
    let results: Vec<_> = patchall::join_all(lookups)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let took = start.elapsed();
    let ticked = ticks.load(SeqCst);
    stop.store(true, SeqCst);
    tick.join().unwrap();
    for (n, got) in &results {
        assert_eq!(got, &Ok(vec![address_of(*n)]), "host-{n}");
    }
    println!("{LOOKUPS} lookups in coroutines: {took:?}, {ticked} ticks of 5 ms meanwhile");
    // One after another they would take 50 x 200 ms = 10 s.
    assert!(
        took < DELAY * 4,
        "{LOOKUPS} lookups took {took:?}: they did not overlap"
    );
    assert!(
        ticked >= 10,
        "the ticker stalled: {ticked} ticks in {took:?}"
    );
    assert!(patchall::offloaded_calls() - offloaded_before >= LOOKUPS as u64);

    // Non-reentrant calls: each coroutine finds its own answer in the result
    // even after the others' lookups completed while it slept.
    let (ticks, stop, tick) = ticker();
    let per_coroutine: Vec<_> = (1..=20)
        .map(|n| {
            patchall::spawn(move || {
                let name = CString::new(host(n)).unwrap();
                // SAFETY: a NUL-terminated name.
                let byname = unsafe { gethostbyname(name.as_ptr()) };
                // SAFETY: as above.
                let byname2 = unsafe { gethostbyname2(name.as_ptr(), libc::AF_INET) };
                let addr = address_of(n).octets();
                // SAFETY: four bytes of IPv4 address.
                let byaddr = unsafe { gethostbyaddr(addr.as_ptr().cast(), 4, libc::AF_INET) };
                patchall::sleep(Duration::from_millis(50));
                (
                    n,
                    read_hostent(byname),
                    read_hostent(byname2),
                    read_hostent(byaddr),
                )
            })
            .unwrap()
        })
        .collect();
    for r in patchall::join_all(per_coroutine) {
        let (n, byname, byname2, byaddr) = r.unwrap();
        let want = Some((host(n), address_of(n)));
        assert_eq!(byname, want, "gethostbyname in coroutine {n}");
        assert_eq!(byname2, want, "gethostbyname2 in coroutine {n}");
        assert_eq!(byaddr, want, "gethostbyaddr in coroutine {n}");
    }
    assert!(
        ticks.load(SeqCst) >= 10,
        "the ticker stalled during gethostby*"
    );
    stop.store(true, SeqCst);
    tick.join().unwrap();

    // Reentrant and reverse calls, inside and outside: the same answers.
    let reentrant = |n: usize| {
        let name = CString::new(host(n)).unwrap();
        // SAFETY: zeroed hostent; the buffer outlives the use of the result.
        let mut ent: libc::hostent = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 2048];
        let mut result = std::ptr::null_mut();
        let mut herr = 0;
        // SAFETY: valid name, hostent, buffer, out-pointers.
        let r = unsafe {
            gethostbyname_r(
                name.as_ptr(),
                &mut ent,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
                &mut herr,
            )
        };
        (r, read_hostent(result), reverse_lookup(n))
    };
    let inside = patchall::spawn(move || reentrant(7))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(inside, (0, Some((host(7), address_of(7))), Ok(host(7))));
    assert_eq!(reentrant(7), inside, "outside a coroutine");

    // Errors: h_errno and EAI_* as outside coroutines.
    let missing = || {
        let name = CString::new(format!("missing.{DOMAIN}")).unwrap();
        // SAFETY: a NUL-terminated name.
        let h = unsafe { gethostbyname(name.as_ptr()) };
        (
            h.is_null(),
            h_errno(),
            resolve_v4(&format!("missing.{DOMAIN}")).is_err(),
        )
    };
    let outside = missing();
    assert_eq!(outside, (true, 1, true), "HOST_NOT_FOUND outside");
    let inside = patchall::spawn(missing).unwrap().join().unwrap();
    assert_eq!(inside, outside, "the same failure inside a coroutine");
}

unsafe extern "C" {
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::hostent;
    fn gethostbyname2(name: *const libc::c_char, af: libc::c_int) -> *mut libc::hostent;
    fn gethostbyaddr(
        addr: *const libc::c_void,
        len: libc::socklen_t,
        ty: libc::c_int,
    ) -> *mut libc::hostent;
    fn gethostbyname_r(
        name: *const libc::c_char,
        ret: *mut libc::hostent,
        buf: *mut libc::c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut libc::c_int,
    ) -> libc::c_int;
}
