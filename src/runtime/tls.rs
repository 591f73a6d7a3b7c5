//! A thread-local storage block and thread descriptor of its own per coroutine
//! (`PATCHALL_GREEN_TLS=own`, `Builder::own_tls`).
//!
//! A block is what glibc gives a thread: `_dl_allocate_tls` (ld.so's, reached
//! with `dlvsym`) makes the descriptor, its DTV and the static TLS images; the
//! fields `start_thread` would set are set here by hand, from the carrier's
//! (the OS thread that runs the coroutine, which never changes). Switching is a
//! `wrfsbase` on resume and suspend: `__thread` variables, errno, glibc's
//! per-thread state and Rust's `thread_local!` then belong to the coroutine.
//!
//! glibc's internals this relies on are checked once against the layout
//! descriptions glibc exports for debuggers (`_thread_db_*`); on any mismatch,
//! or without user-space FSGSBASE, one line says so and coroutines share their
//! carrier's storage, as with `shared`.
//!
//! What glibc does for its own threads and not for these, and what replaces it:
//! - malloc: a block uses its carrier's arena (no arena per coroutine), and its
//!   tcache is emptied into the carrier's at the end (glibc's
//!   `__libc_thread_freeres`, which does that, is not exported). Where the two
//!   words live in libc's TLS is found at startup by a probe (`Probe`).
//! - initial-exec TLS of a library `dlopen`ed later: glibc initialises it only
//!   in the threads on its lists; `after_dlopen` copies it into every live block.
//! - `fork` and the setuid family walk glibc's thread lists and must run on a
//!   descriptor that is on them: `on_carrier`.
//!
//! patchall's own thread-locals are then the coroutine's too. Those that mean
//! "this OS thread" (what a signal handler notes for the scheduler; any
//! address registered with the kernel per thread) are `tp_local`s reached
//! with `TpLocal::per_os_thread`, which finds them in the carrier's block.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::config;
use crate::sys::diag;
use crate::sys::sigaction::{KernelSigaction, rt_sigaction};

// glibc 2.36's `struct pthread` (x86_64): the offsets `start_thread` and
// `allocate_stack` write. The first four are checked against `_thread_db_*`;
// the others lie between fields so checked, in a layout unchanged from 2.35 to
// 2.38.
const SIZEOF_PTHREAD: usize = 2368;
/// The end of `tcbhead_t` (the `list` field after it is checked).
const TCB_HEADER: usize = 704;
const TID: usize = 720;
const SPECIFIC: usize = 1296;
const GSCOPE_FLAG: usize = 28;
/// In `tcbhead_t`'s trailing `__padding[8]`, which glibc never touches: a
/// block's carrier's thread pointer (0 in glibc's own descriptors).
const CARRIER_SLOT: usize = 640;
/// glibc's SIGSETXID.
const SIGSETXID: c_int = 33;
const ROBUST_HEAD: usize = 736;
const SPECIFIC_1STBLOCK: usize = 784;
const SPECIFIC_USED: usize = SPECIFIC + 32 * 8;
const STACKBLOCK: usize = 1680;
const STACKBLOCK_SIZE: usize = 1688;
const RES: usize = 1720;
/// PTHREAD_KEY_2NDLEVEL_SIZE, PTHREAD_KEY_1STLEVEL_SIZE, DESTRUCTOR_ITERATIONS.
const KEY_BLOCK: usize = 32;
const KEY_BLOCKS: usize = 32;
const KEY_ROUNDS: usize = 4;
/// AT_HWCAP2's bit for user-space {rd,wr}{fs,gs}base.
const HWCAP2_FSGSBASE: u64 = 1 << 1;
/// Kept blocks beyond this are freed.
const POOL_MAX: usize = 1024;

unsafe extern "C" {
    fn __res_state() -> *mut c_void;
    fn __tls_get_addr(index: *const usize) -> *mut c_void;
}

type Allocate = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type Deallocate = unsafe extern "C" fn(*mut c_void, bool);
type Plain = unsafe extern "C" fn();

/// glibc's `struct pthread_key_struct`.
#[repr(C)]
struct KeyStruct {
    seq: usize,
    destr: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// glibc's `struct pthread_key_data`.
#[repr(C)]
struct KeyData {
    seq: usize,
    data: *mut c_void,
}

/// What was found in glibc at startup.
struct Glibc {
    allocate: Allocate,
    deallocate: Deallocate,
    call_tls_dtors: Plain,
    ctype_init: Plain,
    keys: *const KeyStruct,
    /// Offset of `rseq_area.cpu_id` from the thread pointer.
    rseq_cpu: Option<usize>,
    /// Where libc's static TLS block lies below the thread pointer, and its size.
    libc_tls: (usize, usize),
    probe: Probe,
}

// SAFETY: `keys` points to glibc's global key table, read only.
unsafe impl Send for Glibc {}
// SAFETY: as above.
unsafe impl Sync for Glibc {}

/// Offsets (below the thread pointer) of libc's own thread-locals, found by
/// watching what a first `malloc`, `free` and `__res_state` do in a fresh block.
#[derive(Default, Clone, Copy)]
struct Probe {
    /// `__resp`: the resolver state, `&pd->res` in glibc's threads.
    resp: Option<usize>,
    /// malloc's `tcache`.
    tcache: Option<usize>,
    /// malloc's `thread_arena`.
    arena: Option<usize>,
}

static GLIBC: OnceLock<Option<Glibc>> = OnceLock::new();
/// Blocks of ended coroutines, ready for reuse (thread pointers).
static POOL: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Blocks handed out and not yet given back, for `after_dlopen`; true for a
/// block at the top of a stack (`take_at`), which is not pooled nor freed.
static LIVE: Mutex<BTreeMap<usize, bool>> = Mutex::new(BTreeMap::new());

/// True when a coroutine gets its own block unless told otherwise, and the
/// check passed: `PATCHALL_GREEN_TLS` if set, else own for a green thread
/// (it stands for a thread: `__thread`, `pthread_self` and glibc's per-thread
/// state must be its own, as the differential suite checks) and shared for a
/// coroutine of the Rust or C API (gevent's model: a coroutine is not a
/// thread, and a switch costs less without `wrfsbase`).
pub(crate) fn wanted(green_thread: bool) -> bool {
    config().own_tls.unwrap_or(green_thread) && available()
}

/// True if blocks can be made here; the first call checks (and says once why not).
pub(crate) fn available() -> bool {
    glibc().is_some()
}

fn glibc() -> Option<&'static Glibc> {
    GLIBC
        .get_or_init(|| {
            let found = check();
            if let Err(why) = &found {
                diag(&[
                    b"patchall: green threads share their OS thread's TLS (",
                    why.as_bytes(),
                    b")\n",
                ]);
            }
            found.ok()
        })
        .as_ref()
}

/// `dlvsym(RTLD_DEFAULT, name, version)`, or None.
fn lookup(name: &CStr, version: &CStr) -> Option<usize> {
    // SAFETY: both strings are NUL-terminated; dlvsym has no other preconditions.
    let a = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, name.as_ptr(), version.as_ptr()) };
    (!a.is_null()).then_some(a as usize)
}

/// A `_thread_db_*` field description: (bits, count, offset).
fn db_field(name: &CStr) -> Option<[u32; 3]> {
    let a = lookup(name, c"GLIBC_PRIVATE")?;
    // SAFETY: glibc defines these as `const uint32_t[3]`.
    Some(unsafe { *(a as *const [u32; 3]) })
}

/// True if glibc's descriptions of its thread descriptor (its size, then
/// `tid`, `specific` and `list` as (bits, count, offset)) are those of the
/// layout the offsets here are for.
fn layout_known(
    sizeof: Option<usize>,
    tid: Option<[u32; 3]>,
    specific: Option<[u32; 3]>,
    list: Option<[u32; 3]>,
) -> bool {
    sizeof == Some(SIZEOF_PTHREAD)
        && tid == Some([32, 1, TID as u32])
        && specific == Some([64 * 32, 1, SPECIFIC as u32])
        && list == Some([128, 1, TCB_HEADER as u32])
}

fn check() -> Result<Glibc, &'static str> {
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_HWCAP2) } & HWCAP2_FSGSBASE == 0 {
        return Err("no user-space FSGSBASE");
    }
    let sizeof = lookup(c"_thread_db_sizeof_pthread", c"GLIBC_PRIVATE")
        // SAFETY: glibc defines it as a `const uint32_t`.
        .map(|a| unsafe { *(a as *const u32) } as usize);
    let layout = layout_known(
        sizeof,
        db_field(c"_thread_db_pthread_tid"),
        db_field(c"_thread_db_pthread_specific"),
        db_field(c"_thread_db_pthread_list"),
    );
    if !layout {
        return Err("glibc's thread descriptor is not the layout patchall knows");
    }
    let private = |name: &CStr| lookup(name, c"GLIBC_PRIVATE");
    let (Some(allocate), Some(deallocate), Some(dtors), Some(ctype), Some(keys)) = (
        private(c"_dl_allocate_tls"),
        private(c"_dl_deallocate_tls"),
        private(c"__call_tls_dtors"),
        private(c"__ctype_init"),
        private(c"__pthread_keys"),
    ) else {
        return Err("glibc lacks a private function patchall needs");
    };
    let libc_tls = libc_tls().ok_or("libc's TLS block was not found")?;
    let (static_size, align) = static_tls_info().ok_or("ld.so does not say its static TLS size")?;
    STATIC_SIZE.store(static_size, Ordering::Relaxed);
    STATIC_ALIGN.store(align.max(64), Ordering::Relaxed);
    let rseq_cpu = lookup(c"__rseq_size", c"GLIBC_2.35")
        .zip(lookup(c"__rseq_offset", c"GLIBC_2.35"))
        // SAFETY: glibc defines them as `const unsigned int` and `const ptrdiff_t`.
        .and_then(|(size, off)| unsafe {
            let (size, off) = (*(size as *const u32), *(off as *const isize));
            // cpu_id: the second u32 of `struct rseq`, inside the descriptor.
            (size >= 8 && off > 0 && (off as usize) + 8 <= SIZEOF_PTHREAD).then(|| off as usize + 4)
        });
    // SAFETY: the addresses are glibc's definitions of these functions, whose
    // C signatures these are (glibc 2.36: sysdeps/generic/ldsodefs.h,
    // stdlib/cxa_thread_atexit_impl.c, ctype/ctype-info.c).
    let mut g = unsafe {
        Glibc {
            allocate: std::mem::transmute::<usize, Allocate>(allocate),
            deallocate: std::mem::transmute::<usize, Deallocate>(deallocate),
            call_tls_dtors: std::mem::transmute::<usize, Plain>(dtors),
            ctype_init: std::mem::transmute::<usize, Plain>(ctype),
            keys: keys as *const KeyStruct,
            rseq_cpu,
            libc_tls,
            probe: Probe::default(),
        }
    };
    g.probe = probe(&g);
    *KNOWN.lock().unwrap_or_else(|e| e.into_inner()) =
        tls_modules().into_iter().map(|m| m.0).collect();
    Ok(g)
}

/// The size of the static TLS area with the descriptor, and its alignment
/// (ld.so's `_dl_get_tls_static_info`).
fn static_tls_info() -> Option<(usize, usize)> {
    let f = lookup(c"_dl_get_tls_static_info", c"GLIBC_PRIVATE")?;
    let (mut size, mut align) = (0usize, 0usize);
    // SAFETY: ld.so's `void _dl_get_tls_static_info(size_t *, size_t *)`.
    unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(*mut usize, *mut usize)>(f)(
            &mut size, &mut align,
        )
    };
    (size != 0 && align.is_power_of_two()).then_some((size, align))
}

/// libc's PT_TLS block: (distance below the thread pointer, size).
fn libc_tls() -> Option<(usize, usize)> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _: usize,
        out: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid record; `out` is ours.
        let (info, out) = unsafe { (&*info, &mut *(out as *mut Option<(usize, usize)>)) };
        if info.dlpi_name.is_null() || info.dlpi_tls_data.is_null() {
            return 0;
        }
        // SAFETY: a NUL-terminated path.
        let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
        if !name.ends_with(b"/libc.so.6") {
            return 0;
        }
        // SAFETY: `dlpi_phnum` headers at `dlpi_phdr`.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        if let Some(tls) = phdrs.iter().find(|p| p.p_type == libc::PT_TLS) {
            let below = thread_pointer().wrapping_sub(info.dlpi_tls_data as usize);
            *out = Some((below, tls.p_memsz as usize));
        }
        1
    }
    let mut out: Option<(usize, usize)> = None;
    // SAFETY: the callback matches dl_iterate_phdr's contract and only
    // writes `out`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut out).cast()) };
    out.filter(|&(below, size)| below >= size && below < (1 << 20))
}

/// The running thread's thread pointer (`fs:0` holds it, glibc's `header.self`).
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86_64 glibc `fs:0` is the TCB's pointer to itself.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// Points `fs` at `tp`: every thread-local from here on is that block's.
#[inline(always)]
pub(crate) fn switch_to(tp: usize) {
    // SAFETY: `tp` is a live thread descriptor (a block of ours or a
    // carrier's); the check in `available` made sure wrfsbase is allowed.
    // Not `nomem`: loads and stores of thread-locals must not move across it.
    unsafe { std::arch::asm!("wrfsbase {}", in(reg) tp, options(nostack, preserves_flags)) };
}

/// Word `at` bytes above `tp` (or below, wrapping).
///
/// # Safety
/// The address must be inside a live block.
unsafe fn word(tp: usize, at: usize) -> *mut usize {
    tp.wrapping_add(at) as *mut usize
}

/// Finds where libc keeps `__resp`, `tcache` and `thread_arena`, with a block
/// used once on this (the carrier's) OS thread.
fn probe(g: &Glibc) -> Probe {
    let mut found = Probe::default();
    // SAFETY: a fresh block; NULL asks ld.so to allocate it.
    let tp = unsafe { (g.allocate)(ptr::null_mut()) } as usize;
    if tp == 0 {
        return found;
    }
    let carrier = thread_pointer();
    // SAFETY: both are live descriptors of SIZEOF_PTHREAD bytes.
    unsafe { set_up(g, tp, carrier, (0, 0)) };
    let (below, size) = g.libc_tls;
    let words = size / 8;
    let base = tp - below;
    let at = |i: usize| (base + i * 8).wrapping_sub(tp);
    // SAFETY: libc's block lies inside the fresh block's static TLS.
    let before: Vec<usize> = (0..words).map(|i| unsafe { *word(tp, at(i)) }).collect();
    switch_to(tp);
    // SAFETY: plain libc calls, on a block set up as glibc's threads are.
    let (res, chunk) = unsafe {
        let res = __res_state() as usize;
        let chunk = libc::malloc(40);
        libc::free(chunk);
        (res, chunk as usize)
    };
    switch_to(carrier);
    // SAFETY: as above.
    let after: Vec<usize> = (0..words).map(|i| unsafe { *word(tp, at(i)) }).collect();
    found.resp = (0..words)
        .filter(|&i| before[i] == res && res != 0)
        .map(at)
        .collect::<Vec<_>>()
        .pop();
    let changed: Vec<usize> = (0..words)
        .filter(|&i| before[i] == 0 && after[i] != 0 && after[i] % 8 == 0)
        .collect();
    // A 40-byte request is a 48-byte chunk: tcache bin 1 (u16 counts[64],
    // then the entries).
    let is_tcache = |t: usize| {
        // SAFETY: the only words of libc's block a first malloc and free set
        // from 0 are malloc's own pointers (its cache and its arena), both to
        // live structures larger than the 144 bytes read.
        chunk != 0
            && unsafe { *((t + 2) as *const u16) == 1 && *((t + 128 + 8) as *const usize) == chunk }
    };
    let tcache: Vec<usize> = changed
        .iter()
        .copied()
        .filter(|&i| is_tcache(after[i]))
        .collect();
    if let [t] = tcache[..] {
        found.tcache = Some(at(t));
        let rest: Vec<usize> = changed.iter().copied().filter(|&i| i != t).collect();
        if let [a] = rest[..] {
            found.arena = Some(at(a));
        }
    }
    // A thread's exit steps, on the block: the malloc above may have set up
    // per-thread state that outlives the block unless its destructors run
    // (jemalloc links each thread's cache into its arena's list; with the
    // block freed, redis-server's first statistics read followed the link
    // into reused memory and crashed).
    switch_to(tp);
    // SAFETY: glibc's own exit steps for the running descriptor, ours.
    unsafe {
        (g.call_tls_dtors)();
        run_key_destructors(g, tp);
    }
    switch_to(carrier);
    // SAFETY: the block ran nothing that is still going; given back as at the
    // end of a coroutine.
    unsafe {
        release_tcache(&found, tp);
        (g.deallocate)(tp as *mut c_void, true);
    }
    found
}

/// Sets the descriptor fields glibc's `allocate_stack` and `start_thread`
/// would, for a coroutine on the OS thread whose descriptor is `carrier`.
///
/// # Safety
/// `tp` is a block fresh from `_dl_allocate_tls`; `carrier` the running OS
/// thread's own descriptor.
unsafe fn set_up(g: &Glibc, tp: usize, carrier: usize, stack: (usize, usize)) {
    // SAFETY: both descriptors are SIZEOF_PTHREAD bytes; the header after
    // tcb, dtv and self (multiple_threads, sysinfo, the stack and pointer
    // guards, feature_1…) is the same in every thread of a process.
    unsafe {
        ptr::copy_nonoverlapping(
            (carrier + 24) as *const u8,
            (tp + 24) as *mut u8,
            TCB_HEADER - 24,
        );
        *word(tp, 0) = tp;
        *word(tp, 16) = tp;
        *word(tp, CARRIER_SLOT) = carrier;
        *((tp + GSCOPE_FLAG) as *mut u32) = 0;
        // The carrier's tid: what the kernel knows this thread as.
        *((tp + TID) as *mut i32) = *((carrier + TID) as *const i32);
        // An empty robust list, with the carrier's futex offset.
        *word(tp, ROBUST_HEAD) = tp + ROBUST_HEAD;
        *word(tp, ROBUST_HEAD + 8) = *word(carrier, ROBUST_HEAD + 8);
        *word(tp, SPECIFIC) = tp + SPECIFIC_1STBLOCK;
        *word(tp, STACKBLOCK) = stack.0;
        *word(tp, STACKBLOCK_SIZE) = stack.1;
        if let Some(cpu) = g.rseq_cpu {
            // Not registered with the kernel: RSEQ_CPU_ID_UNINITIALIZED makes
            // sched_getcpu ask the kernel.
            *((tp + cpu) as *mut i32) = -1;
        }
        if let Some(resp) = g.probe.resp {
            *word(tp, resp) = tp + RES;
        }
        if let Some(arena) = g.probe.arena {
            *word(tp, arena) = *word(carrier, arena);
        }
    }
    let here = thread_pointer();
    switch_to(tp);
    // SAFETY: glibc's per-thread ctype set-up, on the new block.
    unsafe { (g.ctype_init)() };
    switch_to(here);
}

/// A block for a new coroutine (from the pool if one is there), not yet bound
/// to a carrier; None if none can be had or blocks are not available.
pub(crate) fn take() -> Option<usize> {
    let g = glibc()?;
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let tp = match pooled {
        // SAFETY: a pooled block's DTV was freed and its descriptor zeroed;
        // `_dl_allocate_tls` with it gives it a DTV and fresh TLS images.
        Some(tp) => (unsafe { (g.allocate)(tp as *mut c_void) }) as usize,
        // SAFETY: NULL asks ld.so to allocate the block.
        None => unsafe { (g.allocate)(ptr::null_mut()) as usize },
    };
    if tp == 0 {
        return None;
    }
    Some(handed_out(tp, false))
}

/// Bytes a block takes at the top of a stack (`take_at`): the static TLS
/// area and the descriptor above it, with room to align them.
pub(crate) fn room() -> usize {
    let align = STATIC_ALIGN.load(Ordering::Relaxed);
    (STATIC_SIZE.load(Ordering::Relaxed) + align - 1).next_multiple_of(64)
}

/// A block for a new coroutine in the `room()` bytes below `top`, the top of
/// its stack, as glibc places a thread's: nothing is allocated but the DTV,
/// and the coroutine's `__thread` variables lie inside the stack
/// `pthread_getattr_np` reports, as natively. None if none can be had.
pub(crate) fn take_at(top: usize) -> Option<usize> {
    let g = glibc()?;
    let align = STATIC_ALIGN.load(Ordering::Relaxed);
    let tp = (top - SIZEOF_PTHREAD) & !(align - 1);
    // SAFETY: `[top - room(), top)` is stack memory no code uses, given to
    // the block; the descriptor zeroed as `_dl_allocate_tls` expects it, which
    // then installs a DTV and the TLS images below `tp` (ld.so's
    // `allocate_stack` does the same for a thread's cached stack).
    let tp = unsafe {
        ptr::write_bytes(tp as *mut u8, 0, SIZEOF_PTHREAD);
        (g.allocate)(tp as *mut c_void) as usize
    };
    (tp != 0).then(|| handed_out(tp, true))
}

fn handed_out(tp: usize, on_stack: bool) -> usize {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(tp, on_stack);
    wrap_setxid_handler();
    BLOCKS_EXIST.store(true, Ordering::Release);
    tp
}

/// Binds `tp` (from `take`) to the OS thread whose own descriptor is
/// `carrier`, the running one, which will run it. (The code running may be a
/// coroutine with a block of its own: `carrier` is not `thread_pointer()`.)
pub(crate) fn bind(tp: usize, carrier: usize, stack: (usize, usize)) {
    if let Some(g) = glibc() {
        // SAFETY: `tp` came from `take`; `carrier` is this OS thread's.
        unsafe { set_up(g, tp, carrier, stack) };
    }
}

/// Run by a coroutine with its own block, last, on that block: C++ and Rust
/// `thread_local` destructors and glibc's key destructors, as a thread's exit.
pub(crate) fn exiting() {
    let Some(g) = glibc() else { return };
    // SAFETY: glibc's own exit steps for the running (our) descriptor.
    unsafe {
        (g.call_tls_dtors)();
        run_key_destructors(g, thread_pointer());
    }
}

/// glibc's `__nptl_deallocate_tsd` for the descriptor `tp`.
///
/// # Safety
/// `tp` is the running thread's descriptor.
unsafe fn run_key_destructors(g: &Glibc, tp: usize) {
    // SAFETY: the fields of a live descriptor, the layout checked; `keys` is
    // glibc's table of PTHREAD_KEYS_MAX entries.
    unsafe {
        let used = (tp + SPECIFIC_USED) as *mut bool;
        for _ in 0..KEY_ROUNDS {
            if !*used {
                break;
            }
            *used = false;
            for block in 0..KEY_BLOCKS {
                let level2 = *word(tp, SPECIFIC + block * 8) as *mut KeyData;
                if level2.is_null() {
                    continue;
                }
                for i in 0..KEY_BLOCK {
                    let d = &mut *level2.add(i);
                    if d.data.is_null() {
                        continue;
                    }
                    let data = std::mem::replace(&mut d.data, ptr::null_mut());
                    let key = &*g.keys.add(block * KEY_BLOCK + i);
                    if key.seq == d.seq
                        && let Some(f) = key.destr
                    {
                        f(data);
                    }
                }
            }
        }
        for block in 1..KEY_BLOCKS {
            let level2 = word(tp, SPECIFIC + block * 8);
            libc::free(*level2 as *mut c_void);
            *level2 = 0;
        }
    }
}

/// Empties the tcache of block `tp` into the running thread's (glibc's
/// `tcache_thread_shutdown`, which frees the cached chunks and the cache).
///
/// # Safety
/// `tp` is a block no thread runs on.
unsafe fn release_tcache(probe: &Probe, tp: usize) {
    let Some(at) = probe.tcache else { return };
    // SAFETY: `at` is the tcache word of libc's block; the cache it points
    // to is glibc's `tcache_perthread_struct` (u16 counts[64], entries[64]),
    // its lists safe-linked (`PROTECT_PTR`), owned by no running thread.
    unsafe {
        let cache = std::mem::replace(&mut *word(tp, at), 0);
        if cache == 0 {
            return;
        }
        for bin in 0..64 {
            let mut count = *((cache + bin * 2) as *const u16);
            let mut e = *((cache + 128 + bin * 8) as *const usize);
            while e != 0 && count > 0 {
                let next = (e >> 12) ^ *(e as *const usize);
                // The `key` word marks a chunk as in a tcache: clear it, as
                // glibc does when it takes a chunk out.
                *((e + 8) as *mut usize) = 0;
                libc::free(e as *mut c_void);
                e = next;
                count -= 1;
            }
        }
        libc::free(cache as *mut c_void);
    }
}

/// Gives back the block of an ended coroutine (called on its carrier, on the
/// carrier's own block, before its stack is reused: the block may lie on it).
pub(crate) fn give_back(tp: usize) {
    let Some(g) = glibc() else { return };
    let on_stack = LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&tp);
    // SAFETY: the coroutine ended: nothing runs on the block.
    unsafe { release_tcache(&g.probe, tp) };
    if on_stack == Some(true) {
        // SAFETY: frees the DTV and dynamically loaded modules' TLS; the
        // block's memory goes back with its stack.
        unsafe { (g.deallocate)(tp as *mut c_void, false) };
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_MAX {
        // SAFETY: frees the DTV and dynamically loaded modules' TLS, keeps the
        // block; the descriptor is zeroed as `_dl_allocate_tls` expects it.
        unsafe {
            (g.deallocate)(tp as *mut c_void, false);
            ptr::write_bytes(tp as *mut u8, 0, SIZEOF_PTHREAD);
        }
        pool.push(tp);
    } else {
        drop(pool);
        // SAFETY: as above, and the block itself is freed.
        unsafe { (g.deallocate)(tp as *mut c_void, true) };
    }
}

/// The carrier's thread pointer if the running code is on a block of ours.
#[inline(always)]
pub(crate) fn running_carrier() -> usize {
    let carrier: usize;
    // SAFETY: every descriptor has the slot: glibc's hold 0 there.
    unsafe {
        std::arch::asm!("mov {}, fs:[{slot}]", out(reg) carrier, slot = const CARRIER_SLOT,
            options(nostack, readonly, preserves_flags))
    };
    carrier
}

/// `_dl_get_tls_static_info`'s size: static TLS lies within this much below
/// the thread pointer (0 until blocks are available).
static STATIC_SIZE: AtomicUsize = AtomicUsize::new(0);
/// Its alignment (at least a cache line).
static STATIC_ALIGN: AtomicUsize = AtomicUsize::new(64);

/// Runs `f` on the carrier's descriptor when the running code is on a block of
/// ours: for calls that walk glibc's thread lists (fork, the setxid family),
/// where the caller must be on them. In the child of a fork the block takes
/// the child's thread id.
pub(crate) fn on_carrier<R>(f: impl FnOnce() -> R) -> R {
    let carrier = running_carrier();
    if carrier == 0 {
        return f();
    }
    let own = thread_pointer();
    switch_to(carrier);
    let r = f();
    switch_to(own);
    // SAFETY: `own` is the running block and `carrier` its OS thread's
    // descriptor: after fork the latter holds the child's tid.
    unsafe { *((own + TID) as *mut i32) = *((carrier + TID) as *const i32) };
    r
}

/// glibc's SIGSETXID handler, which `setxid_handler` calls (0: not wrapped yet).
static SETXID_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// After glibc started a thread: its first installs glibc's SIGSETXID
/// handler, which must be wrapped once blocks may exist.
pub(crate) fn after_thread_created() {
    if GLIBC.get().is_some_and(Option::is_some) {
        wrap_setxid_handler();
    }
}

/// A thread running a block of ours when another thread calls `setuid` is
/// signalled as its carrier (the thread on glibc's list), but glibc's handler
/// marks the running descriptor done: the caller would wait for the carrier
/// forever. Our handler runs glibc's on the carrier's descriptor. Installed
/// with the raw system call: glibc refuses its internal signals to
/// `sigaction`. glibc installs its handler when the process starts its first
/// thread: this is tried again until it finds it (`take`,
/// `after_thread_created`).
fn wrap_setxid_handler() {
    static WRAPPING: Mutex<()> = Mutex::new(());
    if SETXID_HANDLER.load(Ordering::Acquire) != 0 {
        return;
    }
    let _one = WRAPPING.lock().unwrap_or_else(|e| e.into_inner());
    if SETXID_HANDLER.load(Ordering::Acquire) != 0 {
        return;
    }
    let Ok(old) = rt_sigaction(SIGSETXID, None) else {
        return;
    };
    if old.handler <= 1 || old.flags & libc::SA_SIGINFO as u64 == 0 {
        return;
    }
    SETXID_HANDLER.store(old.handler, Ordering::Release);
    let new = KernelSigaction {
        handler: setxid_handler as *const () as usize,
        ..old
    };
    // The same action with our handler, which calls glibc's.
    let _ = rt_sigaction(SIGSETXID, Some(&new));
}

type SigInfoHandler = unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

extern "C" fn setxid_handler(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the address glibc installed, a SA_SIGINFO handler.
    let glibc = unsafe {
        std::mem::transmute::<usize, SigInfoHandler>(SETXID_HANDLER.load(Ordering::Acquire))
    };
    let carrier = running_carrier();
    if carrier == 0 {
        // SAFETY: glibc's handler with the kernel's arguments.
        return unsafe { glibc(sig, info, ctx) };
    }
    let own = thread_pointer();
    switch_to(carrier);
    // SAFETY: as above, on the descriptor glibc signalled.
    unsafe { glibc(sig, info, ctx) };
    switch_to(own);
}

/// Modules with TLS already in every block (their ids), for `after_dlopen`.
static KNOWN: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Set once a block was handed out: `dlopen` then needs `after_dlopen`.
pub(crate) static BLOCKS_EXIST: AtomicBool = AtomicBool::new(false);

/// Loaded modules with TLS: (module id, init image, its size, block size).
fn tls_modules() -> Vec<(usize, usize, usize, usize)> {
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, out: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid record; `out` is ours.
        let (info, out) = unsafe {
            (
                &*info,
                &mut *(out as *mut Vec<(usize, usize, usize, usize)>),
            )
        };
        // SAFETY: `dlpi_phnum` headers at `dlpi_phdr`.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        if let Some(tls) = phdrs.iter().find(|p| p.p_type == libc::PT_TLS) {
            let image = info.dlpi_addr as usize + tls.p_vaddr as usize;
            out.push((
                info.dlpi_tls_modid,
                image,
                tls.p_filesz as usize,
                tls.p_memsz as usize,
            ));
        }
        0
    }
    let mut modules = Vec::new();
    // SAFETY: the callback only pushes to `modules`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut modules).cast()) };
    modules
}

/// After a successful `dlopen`: a library whose TLS went into the static
/// block (initial-exec TLS) had its image copied into the threads on glibc's
/// lists only; copies it into every live block too.
pub(crate) fn after_dlopen() {
    if glibc().is_none() {
        return;
    }
    let fresh: Vec<_> = {
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        let fresh: Vec<_> = tls_modules()
            .into_iter()
            .filter(|m| !known.contains(&m.0))
            .collect();
        known.extend(fresh.iter().map(|m| m.0));
        fresh
    };
    if fresh.is_empty() {
        return;
    }
    let static_size = STATIC_SIZE.load(Ordering::Relaxed);
    // On the carrier, which glibc did initialise, and whose DTV learns of the
    // module (for a static one, where it lies below the thread pointer).
    on_carrier(|| {
        let me = thread_pointer();
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        for (modid, image, filesz, memsz) in fresh {
            let index = [modid, 0];
            // SAFETY: a loaded module's id, as `tls_index` {module, offset}.
            let addr = unsafe { __tls_get_addr(index.as_ptr()) } as usize;
            let below = me.wrapping_sub(addr);
            if addr == 0 || below == 0 || below > static_size || memsz > below {
                continue;
            }
            for &tp in live.keys() {
                // SAFETY: the module's slot in the static TLS of a live block
                // of the same layout, which nothing initialised yet.
                unsafe {
                    let dest = (tp - below) as *mut u8;
                    ptr::copy_nonoverlapping(image as *const u8, dest, filesz);
                    ptr::write_bytes(dest.add(filesz), 0, memsz - filesz);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_known_layout_is_accepted() {
        let (tid, specific, list) = ([32, 1, 720], [2048, 1, 1296], [128, 1, 704]);
        // glibc 2.36's, as it exports them.
        assert!(layout_known(
            Some(2368),
            Some(tid),
            Some(specific),
            Some(list)
        ));
        assert!(!layout_known(
            Some(2432),
            Some(tid),
            Some(specific),
            Some(list)
        ));
        assert!(!layout_known(
            Some(2368),
            Some([32, 1, 736]),
            Some(specific),
            Some(list)
        ));
        assert!(!layout_known(Some(2368), Some(tid), None, Some(list)));
        assert!(!layout_known(None, Some(tid), Some(specific), Some(list)));
    }

    #[test]
    fn blocks_are_reused_and_switching_gives_their_own_errno() {
        if !available() {
            return;
        }
        let a = take().expect("a block");
        bind(a, thread_pointer(), (0, 0));
        give_back(a);
        let b = take().expect("a block");
        assert_eq!(a, b, "the pooled block is reused");
        bind(b, thread_pointer(), (0, 0));
        let carrier = thread_pointer();
        crate::sys::set_errno(5);
        switch_to(b);
        let fresh = errno_here();
        crate::sys::set_errno(7);
        switch_to(carrier);
        assert_eq!((fresh, crate::sys::errno()), (0, 5));
        give_back(b);
    }

    #[test]
    fn a_block_at_a_stack_top_lies_below_it_and_is_not_pooled() {
        if !available() {
            return;
        }
        let mut stack = vec![0u8; room() + 4096];
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !63;
        let tp = take_at(top).expect("a block");
        let low = tp - (STATIC_SIZE.load(Ordering::Relaxed) - SIZEOF_PTHREAD);
        assert!(low >= top - room() && tp + SIZEOF_PTHREAD <= top);
        bind(tp, thread_pointer(), (0, 0));
        let carrier = thread_pointer();
        crate::sys::set_errno(3);
        switch_to(tp);
        let fresh = errno_here();
        crate::sys::set_errno(9);
        switch_to(carrier);
        assert_eq!((fresh, crate::sys::errno()), (0, 3));
        let errno_at = {
            switch_to(tp);
            let at = errno_address();
            switch_to(carrier);
            at
        };
        assert!((low..tp).contains(&errno_at), "errno lies in the block");
        give_back(tp);
        let pooled = POOL.lock().unwrap().contains(&tp);
        assert!(!pooled, "a block on a stack goes back with the stack");
        drop(stack);
    }

    /// errno's address in the running block, from a call of its own.
    #[inline(never)]
    fn errno_address() -> usize {
        // SAFETY: glibc's errno location for the running thread.
        unsafe { libc::__errno_location() as usize }
    }

    /// errno read in a call of its own (see `scheduler::set_running`).
    #[inline(never)]
    fn errno_here() -> i32 {
        crate::sys::errno()
    }
}
