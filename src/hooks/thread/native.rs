//! Start routines that must stay native threads under green threads.
//!
//! Rust's `std::thread::spawn` cannot run as a coroutine: its start routine
//! (`std::sys::thread::unix::Thread::new::thread_start` on Rust 1.95; the
//! module path moves between releases, the name does not) records the new
//! thread's identity in thread-locals that the coroutines of one OS thread
//! share, and aborts when it finds one already there. The function is local to
//! its object (in `.symtab`, not `.dynsym`), so `dladdr` cannot name it: the
//! object's ELF file is read once and the addresses of matching symbols are
//! cached. An object without `.symtab` (stripped) that links Rust's std — it
//! contains the string `RUST_MIN_STACK`, which std's spawn reads — keeps every
//! thread it starts native.
//!
//! bind9's libisc (9.18: `dig`, `named`, `delv`…) starts every thread through
//! its exported `isc__trampoline_run`, which stores the thread's id in the
//! thread-local `isc_tid_v`; each network-manager thread then keeps its
//! worker id in another (`isc_nm_tid()`) and asserts on it in every libuv
//! callback (`REQUIRE(worker->id == isc_nm_tid())`): as coroutines of one OS
//! thread the workers overwrite each other's id and `dig` aborts. Its threads
//! are a fixed pool of event loops, not one per connection, so native threads
//! cost nothing that green ones would save.
//!
//! node's `worker_threads` (`node::worker::Worker::StartThread`'s thread
//! lambda) stay native for the same reason: V8 keeps the entered isolate and
//! its per-thread data in thread-locals and, on `Isolate::Exit`, restores the
//! one entered before — on a shared OS thread, another worker's isolate, maybe
//! disposed already (SIGSEGV in `Isolate::Exit` on one worker, every time).
//!
//! With `PATCHALL_GREEN_TLS=own` (and own TLS available) each green thread has
//! its own thread-locals, and std's threads are green threads too.
//!
//! `PATCHALL_NATIVE_THREADS` adds comma-separated patterns: a start routine
//! stays native if its symbol name (`.symtab` or `.dynsym`) or the path of its
//! object contains one.

use std::ffi::{CStr, c_void};
use std::sync::Mutex;

use crate::config::config;
use crate::hooks::real::Guard;
use crate::runtime::symbolize::{Mapped, SHT_SYMTAB, symbols};

/// glibc's `RTLD_DL_LINKMAP` for `dladdr1`.
const RTLD_DL_LINKMAP: libc::c_int = 2;

/// Parts of the symbol names of start routines whose threads keep their
/// identity in thread-locals (see the module comment): libisc's exported
/// trampoline, node's local `Worker::StartThread` lambda.
const KEEP_STATE_IN_TLS: [&[u8]; 2] = [b"isc__trampoline_run", b"4node6worker6Worker11StartThread"];

/// The public head of glibc's `struct link_map`.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const libc::c_char,
}

/// What we learnt about one loaded object.
struct Object {
    /// The object's `link_map`, its identity while loaded.
    map: usize,
    /// Every start routine in it stays native.
    all: bool,
    /// Offsets (from the load bias) of routines that stay native.
    routines: Vec<usize>,
}

static OBJECTS: Mutex<Vec<Object>> = Mutex::new(Vec::new());

/// True if a thread starting at `start` must be a native thread.
pub(super) fn stays_native(start: usize) -> bool {
    // Our own file reads below must go straight to libc.
    let _guard = Guard::enter();
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut map: *mut c_void = std::ptr::null_mut();
    // SAFETY: dladdr1 fills `info` and `map` for an address in a loaded object.
    let found = unsafe {
        libc::dladdr1(
            start as *const c_void,
            info.as_mut_ptr(),
            &mut map,
            RTLD_DL_LINKMAP,
        )
    };
    if found == 0 || map.is_null() {
        return false;
    }
    // SAFETY: dladdr1 succeeded, so `info` is filled.
    let info = unsafe { info.assume_init() };
    let patterns = &config().native_threads;
    // SAFETY: dladdr's symbol name is a NUL-terminated string in the object.
    let exported = (info.dli_saddr as usize == start && !info.dli_sname.is_null())
        .then(|| unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes());
    if exported.is_some_and(|name| keeps_state_in_tls(name) || matches_any(name, patterns)) {
        return true;
    }
    // SAFETY: RTLD_DL_LINKMAP gives the object's live link_map, whose name is
    // null or a NUL-terminated string.
    let (bias, name) = unsafe {
        let m = &*map.cast::<LinkMap>();
        let name = if m.l_name.is_null() {
            &[][..]
        } else {
            CStr::from_ptr(m.l_name).to_bytes()
        };
        (m.l_addr, name)
    };
    let mut objects = OBJECTS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match objects.iter().position(|o| o.map == map as usize) {
        Some(i) => i,
        None => {
            objects.push(scan(map as usize, name, patterns));
            objects.len() - 1
        }
    };
    let object = &objects[i];
    object.all || object.routines.contains(&start.wrapping_sub(bias))
}

fn matches_any(text: &[u8], patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|p| text.windows(p.len()).any(|w| w == p.as_bytes()))
}

/// Rust std's thread entry point, legacy (`_ZN3std…12thread_start17h…E`) or v0
/// (`_RNv…3std…12thread_start`) mangling.
fn is_rust_thread_start(name: &[u8]) -> bool {
    let has = |p: &[u8]| name.windows(p.len()).any(|w| w == p);
    has(b"3std") && has(b"12thread_start")
}

/// A start routine whose threads must stay native: `KEEP_STATE_IN_TLS`.
fn keeps_state_in_tls(name: &[u8]) -> bool {
    KEEP_STATE_IN_TLS
        .iter()
        .any(|p| name.windows(p.len()).any(|w| w == *p))
}

fn scan(map: usize, name: &[u8], patterns: &[String]) -> Object {
    // The main program's link_map has an empty name.
    let path = if name.is_empty() {
        std::fs::read_link("/proc/self/exe").map_or_else(
            |_| "/proc/self/exe".into(),
            |p| p.to_string_lossy().into_owned(),
        )
    } else {
        String::from_utf8_lossy(name).into_owned()
    };
    // With TLS of their own, std's threads keep their identity per green
    // thread, as natively.
    let rust = !crate::runtime::tls::wanted(true);
    let mut object = Object {
        map,
        all: matches_any(path.as_bytes(), patterns),
        routines: Vec::new(),
    };
    let Some(file) = Mapped::open(&path) else {
        return object;
    };
    let bytes = file.bytes();
    match symbols(bytes, SHT_SYMTAB) {
        Some(symbols) => {
            for (value, _, sym) in symbols {
                if (rust && is_rust_thread_start(sym))
                    || keeps_state_in_tls(sym)
                    || matches_any(sym, patterns)
                {
                    object.routines.push(value);
                }
            }
        }
        None => object.all |= rust && matches_any(bytes, &["RUST_MIN_STACK".into()]),
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_thread_start_is_recognised_in_both_manglings() {
        assert!(is_rust_thread_start(
            b"_RNvNvMs0_NtNtNtCsjrHSEGnQ3l9_3std3sys6thread4unixNtB7_6Thread3new12thread_start"
        ));
        assert!(is_rust_thread_start(
            b"_ZN3std3sys4unix6thread6Thread3new12thread_start17h0123456789abcdefE"
        ));
        assert!(!is_rust_thread_start(b"thread_start"));
        assert!(!is_rust_thread_start(b"start_thread"));
    }

    #[test]
    fn node_worker_start_is_recognised() {
        assert!(keeps_state_in_tls(
            b"_ZZN4node6worker6Worker11StartThreadERKN2v820FunctionCallbackInfoINS2_5ValueEEEENUlPvE_4_FUNES8_"
        ));
        assert!(!keeps_state_in_tls(b"_ZN4node6worker6Worker3RunEv"));
    }

    #[test]
    fn this_test_binary_names_its_own_std_thread_start() {
        let file = Mapped::open("/proc/self/exe").unwrap();
        let symbols = symbols(file.bytes(), SHT_SYMTAB).expect("test binaries keep .symtab");
        assert!(symbols.iter().any(|(_, _, n)| is_rust_thread_start(n)));
    }
}
