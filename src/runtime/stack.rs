//! Coroutine stacks: carved from large mappings, pooled, never `Coroutine::new`.
//!
//! Guarded stacks sit in chunks laid out `[gap][stack][gap][stack]…` where every gap
//! is unmapped after the chunk is mapped: the gap costs no memory mapping, so each
//! stack is exactly one entry against `vm.max_map_count`. An unmapped hole is only a
//! guard while nothing else is mapped into it, and the kernel's top-down allocator
//! puts new mappings in the *highest* hole that fits; so chunks are placed at a hint
//! far below the normal mmap area, where every other mapping finds room first.
//!
//! Dense stacks sit side by side with no gap; a canary word at the bottom of each is
//! checked whenever the coroutine switches out. Below the lowest stack of a dense
//! chunk lies one inaccessible guard: an overflow that runs down through the
//! stacks below faults there, and is reported as the overflow of the running
//! coroutine's stack.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::{self, StackMode};
use crate::sys::page_size;

/// Width of the unmapped gap below each guarded stack. Debian's gcc does not emit
/// stack-clash probes, so a large C frame can jump a narrow guard: keep it wide.
pub(crate) const GUARD_GAP: usize = 64 * 1024;
/// How much address space one chunk maps (rounded to whole stacks).
const CHUNK_BYTES: usize = 32 << 20;
const CANARY: u64 = 0x7061_7463_6861_6c6c; // "patchall"
/// Memory mappings guarded stacks leave to the rest of the process. A process at
/// `vm.max_map_count` cannot grow its heap: the next malloc would abort it.
const MAP_RESERVE: usize = 2048;

/// One coroutine stack: usable memory is `[bottom, top)`; a fault in
/// `[floor, bottom)` is its overflow (its guard gap; for a dense stack, the
/// stacks below it in its chunk and the chunk's guard).
#[derive(Debug)]
pub(crate) struct Stack {
    top: usize,
    /// Bytes at the top given to the coroutine's TLS block (`reserve_top`).
    reserved: usize,
    bottom: usize,
    floor: usize,
    mode: StackMode,
}

impl Stack {
    pub(crate) fn size(&self) -> usize {
        self.top - self.bottom
    }

    /// The addresses whose faulting access means this stack overflowed: only
    /// guards fault there, and a dense stack's overflow runs over its
    /// neighbours before it reaches its chunk's guard.
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.floor, self.bottom)
    }

    /// Where a dense stack keeps its canary word; None for guarded stacks.
    pub(crate) fn canary(&self) -> Option<Canary> {
        (self.mode == StackMode::Dense).then_some(Canary(self.bottom))
    }

    fn class(&self) -> (usize, StackMode) {
        (self.size(), self.mode)
    }

    /// Gives the top `len` bytes to something else than frames (the
    /// coroutine's TLS block, as glibc places a thread's); returns the top.
    /// None if the stack is too small to spare them (a quarter at most,
    /// stricter than glibc, which leaves a thread 2 KiB of frames): the
    /// coroutine then takes its block from the heap.
    pub(crate) fn reserve_top(&mut self, len: usize) -> Option<usize> {
        if self.reserved != 0 || len == 0 || len > self.size() / 4 || len % 16 != 0 {
            return None;
        }
        self.reserved = len;
        Some(self.top)
    }

    /// Frames get the whole stack again (it goes back to a pool).
    pub(crate) fn unreserve(&mut self) {
        self.reserved = 0;
    }
}

// SAFETY: `base` and `limit` describe memory this `Stack` owns exclusively for its
// whole life, 16-byte aligned (page aligned). Guarded stacks have an unmapped guard
// below `limit`'s usable part. Dense stacks have none, which the trait asks for; that
// trade is the documented point of dense mode, mitigated by the canary check.
unsafe impl corosensei::stack::Stack for Stack {
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.top - self.reserved)
            .expect("stack top is non-null")
    }

    fn limit(&self) -> corosensei::stack::StackPointer {
        // Its own guard gap included; a dense stack has none of its own.
        let limit = match self.mode {
            StackMode::Guarded => self.floor,
            StackMode::Dense => self.bottom,
        };
        corosensei::stack::StackPointer::new(limit).expect("stack limit is non-null")
    }
}

/// The one decision of a new stack's usable size, for every way one is made
/// (`spawn` and `Builder`, `Runtime`, `Generator`, `pa_spawn`, green threads):
/// the size `asked` for (`Builder::stack_size`, `pa_options.stack_size`, a
/// green thread's attribute), else `PATCHALL_STACK_SIZE`, else `default`
/// (256 KiB for coroutines, glibc's thread stack for green threads); rounded
/// up to whole pages, at least `MIN_STACK_SIZE`. None when it cannot be mapped.
pub(crate) fn usable_size(asked: Option<usize>, default: usize) -> Option<usize> {
    decide(asked, config::config(), default)
}

fn decide(asked: Option<usize>, cfg: &config::Config, default: usize) -> Option<usize> {
    let configured = cfg.stack_size_set.then_some(cfg.stack_size);
    round_size(asked.or(configured).unwrap_or(default))
}

/// Rounds a requested size up to whole pages, at least the minimum; None when the
/// size (plus its guard) cannot be described at all.
fn round_size(size: usize) -> Option<usize> {
    let page = page_size();
    let rounded = size
        .max(crate::config::MIN_STACK_SIZE)
        .checked_next_multiple_of(page)?;
    rounded.checked_add(GUARD_GAP).map(|_| rounded)
}

/// Free stacks by (size, mode).
type FreeLists = HashMap<(usize, StackMode), Vec<Stack>>;

/// Stacks returned by any thread.
static FREE: Mutex<Option<FreeLists>> = Mutex::new(None);
static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);
/// Guarded stacks carved so far (each one mapping; never unmapped). Changed only
/// under the `FREE` lock.
static GUARDED_CARVED: AtomicUsize = AtomicUsize::new(0);

/// `vm.max_map_count`, read by system calls: this runs in a spawn, maybe a
/// coroutine's, under the `FREE` lock, where libc's `open` and `read` would
/// reach the hooks (hence `proc_number`).
fn max_map_count() -> Option<usize> {
    crate::sys::proc_number(c"/proc/sys/vm/max_map_count", None)
}

/// How many more guarded stacks may be carved before the process runs short of
/// memory mappings.
fn guarded_room() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    let limit = *LIMIT.get_or_init(|| max_map_count().unwrap_or(65530));
    limit
        .saturating_sub(MAP_RESERVE)
        .saturating_sub(GUARDED_CARVED.load(Ordering::Relaxed))
}

/// Takes a stack of `size` bytes (already rounded) from the global pool, mapping a
/// new chunk when it is empty. Fails with the OS error when memory cannot be had.
pub(crate) fn allocate(size: usize, mode: StackMode) -> io::Result<Stack> {
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    let list = free
        .get_or_insert_with(HashMap::new)
        .entry((size, mode))
        .or_default();
    if let Some(stack) = list.pop() {
        return Ok(stack);
    }
    let mut fresh = map_chunk(size, mode)?;
    let stack = fresh.pop().expect("a chunk holds at least one stack");
    list.append(&mut fresh);
    Ok(stack)
}

/// Gives stacks back to the global pool, releasing their memory to the OS first
/// (they may stay idle a long time); the mapping is kept for reuse.
pub(crate) fn release(stacks: impl IntoIterator<Item = Stack>) {
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    let map = free.get_or_insert_with(HashMap::new);
    for mut stack in stacks {
        stack.unreserve();
        // SAFETY: the range is this stack's own private anonymous memory, which no
        // coroutine uses any more; MADV_DONTNEED only zero-fills it on next touch.
        unsafe {
            libc::madvise(stack.bottom as *mut _, stack.size(), libc::MADV_DONTNEED);
        }
        if stack.mode == StackMode::Dense {
            write_canary(stack.bottom);
        }
        map.entry(stack.class()).or_default().push(stack);
    }
}

/// The bottom word of a dense stack, overwritten only by an overflow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Canary(usize);

impl Canary {
    pub(crate) fn intact(self) -> bool {
        // SAFETY: a Canary names the first word of a live stack's writable memory;
        // stacks are never unmapped.
        unsafe { (self.0 as *const u64).read_volatile() == CANARY }
    }
}

fn write_canary(bottom: usize) {
    // SAFETY: `bottom` is the first word of a writable stack no coroutine runs on.
    unsafe { (bottom as *mut u64).write_volatile(CANARY) }
}

/// A hint below the normal mmap area: half the address of a probe mapping.
fn chunk_hint(len: usize) -> usize {
    let mut hint = NEXT_HINT.load(Ordering::Relaxed);
    if hint == 0 {
        // SAFETY: a fresh anonymous mapping, unmapped at once; only its address is used.
        let probe = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page_size(),
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                libc::munmap(p, page_size());
            }
            p as usize
        };
        hint = (probe / 2) & !((2 << 20) - 1);
    }
    NEXT_HINT.store(hint + len, Ordering::Relaxed);
    hint
}

fn map_chunk(size: usize, mode: StackMode) -> io::Result<Vec<Stack>> {
    let gap = if mode == StackMode::Guarded {
        GUARD_GAP
    } else {
        0
    };
    let slot = size + gap;
    // A dense chunk keeps one guard below its lowest stack (a guarded one has
    // a gap below each).
    let floor_gap = GUARD_GAP - gap;
    let mut count = (CHUNK_BYTES / slot).max(1);
    if mode == StackMode::Guarded {
        count = count.min(guarded_room());
        if count == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
    }
    // No address space holds more (47-bit user space): refuse before any arithmetic
    // on addresses can overflow.
    let len = count.saturating_mul(slot).saturating_add(floor_gap);
    if len >= 1 << 46 {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    super::engage();
    let hint = chunk_hint(len);
    // SAFETY: a new private anonymous mapping; the kernel picks the address if the
    // hint is taken. MAP_NORESERVE: stacks are address space, committed as touched.
    let base = unsafe {
        libc::mmap(
            hint as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let chunk = base as usize;
    if chunk != hint {
        NEXT_HINT.store(0, Ordering::Relaxed);
    }
    // SAFETY: the lowest `floor_gap` bytes of the mapping we just made; no stack
    // uses them.
    if floor_gap > 0 && unsafe { libc::mprotect(base, floor_gap, libc::PROT_NONE) } != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: our own mapping, which nothing uses yet.
        unsafe { libc::munmap(base, len) };
        return Err(err);
    }
    let base = chunk + floor_gap;
    let mut stacks = Vec::with_capacity(count);
    for i in 0..count {
        let gap_lo = base + i * slot;
        // SAFETY: the gap lies inside the mapping we just made and nothing uses it.
        if gap > 0 && unsafe { libc::munmap(gap_lo as *mut _, gap) } != 0 {
            // At vm.max_map_count the kernel refuses to split the mapping (while
            // a new chunk can still merge with its neighbour): a stack here would
            // have no guard. Give back the rest; trimming a tail needs no split.
            let err = io::Error::last_os_error();
            // SAFETY: `[gap_lo, chunk + len)` is the part of our mapping no stack uses.
            unsafe { libc::munmap(gap_lo as *mut _, chunk + len - gap_lo) };
            if stacks.is_empty() {
                return Err(err);
            }
            break;
        }
        let bottom = gap_lo + gap;
        if mode == StackMode::Dense {
            write_canary(bottom);
        }
        stacks.push(Stack {
            top: bottom + size,
            reserved: 0,
            bottom,
            floor: if gap > 0 { gap_lo } else { chunk },
            mode,
        });
    }
    if mode == StackMode::Guarded {
        GUARDED_CARVED.fetch_add(stacks.len(), Ordering::Relaxed);
    }
    // `pop` takes from the end: high addresses go first, so that the free
    // stacks below a dense one take its overrun before a live one does.
    Ok(stacks)
}

/// A per-scheduler cache in front of the global pool: steady-state spawn takes a
/// stack here without a lock or a system call.
pub(crate) struct StackCache {
    size: usize,
    mode: StackMode,
    stacks: Vec<Stack>,
}

/// Stacks a cache keeps before handing the surplus back to the global pool.
const CACHE_MAX: usize = 256;

impl StackCache {
    pub(crate) fn new(mode: StackMode) -> StackCache {
        StackCache {
            size: usable_size(None, config::DEFAULT_STACK_SIZE)
                .unwrap_or(config::DEFAULT_STACK_SIZE),
            mode,
            stacks: Vec::new(),
        }
    }

    pub(crate) fn get(&mut self, size: Option<usize>) -> io::Result<Stack> {
        let size = match size {
            None => self.size,
            Some(n) => usable_size(Some(n), config::DEFAULT_STACK_SIZE)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?,
        };
        if size == self.size {
            if let Some(stack) = self.stacks.pop() {
                return Ok(stack);
            }
        }
        allocate(size, self.mode)
    }

    pub(crate) fn put(&mut self, mut stack: Stack) {
        stack.unreserve();
        if stack.class() == (self.size, self.mode) && self.stacks.len() < CACHE_MAX {
            self.stacks.push(stack);
        } else {
            release([stack]);
        }
    }
}

impl Drop for StackCache {
    fn drop(&mut self) {
        release(self.stacks.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(addr: usize) -> bool {
        let mut vec = 0u8;
        let page = addr & !(page_size() - 1);
        // SAFETY: mincore only reads page-table state and writes one byte
        // into `vec`; an unmapped page gives ENOMEM.
        unsafe { libc::mincore(page as *mut _, 1, &mut vec) == 0 }
    }

    /// True if the page of `addr` can be read (mincore sees protection only
    /// through the process's own view: ask /proc/self/maps).
    fn readable(addr: usize) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|l| {
            let (range, rest) = l.split_once(' ').unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).unwrap(),
                usize::from_str_radix(hi, 16).unwrap(),
            );
            (lo..hi).contains(&addr) && rest.starts_with('r')
        })
    }

    #[test]
    fn a_reserved_top_is_not_frames_and_comes_back_with_the_stack() {
        use corosensei::stack::Stack as _;
        let mut cache = StackCache::new(StackMode::Guarded);
        let mut stack = cache.get(None).unwrap();
        let size = stack.size();
        let top = stack.base().get();
        assert_eq!(stack.reserve_top(size / 4 + 16), None, "over a quarter");
        assert_eq!(stack.reserve_top(100), None, "not 16-byte aligned");
        assert_eq!(stack.reserve_top(4096), Some(top));
        assert_eq!(stack.base().get(), top - 4096);
        assert_eq!(stack.reserve_top(64), None, "reserved already");
        assert_eq!(stack.size(), size, "its class is unchanged");
        // Back in the cache, the stack is whole again for the next coroutine.
        cache.put(stack);
        let again = cache.get(None).unwrap();
        assert_eq!(again.base().get(), top);
        cache.put(again);
    }

    #[test]
    fn one_decision_sizes_every_stack() {
        let page = page_size();
        let unset = config::Config::from_lookup(|_| None);
        let set = config::Config::from_lookup(|name| {
            (name == "PATCHALL_STACK_SIZE").then(|| "64k".into())
        });
        let glibc = 8 << 20;
        // Asked for (Builder, pa_options, a thread attribute): that, rounded.
        for cfg in [&unset, &set] {
            assert_eq!(
                decide(Some(100_000), cfg, glibc),
                Some(100_000usize.next_multiple_of(page))
            );
            assert_eq!(decide(Some(1), cfg, glibc), Some(config::MIN_STACK_SIZE));
        }
        // Not asked: PATCHALL_STACK_SIZE if given, else the caller's default.
        assert_eq!(decide(None, &unset, glibc), Some(glibc));
        assert_eq!(
            decide(None, &unset, config::DEFAULT_STACK_SIZE),
            Some(config::DEFAULT_STACK_SIZE)
        );
        assert_eq!(decide(None, &set, glibc), Some(64 << 10));
        assert_eq!(
            decide(None, &set, config::DEFAULT_STACK_SIZE),
            Some(64 << 10)
        );
        assert_eq!(decide(Some(usize::MAX), &set, glibc), None);
    }

    /// A coroutine's own stack bounds, checked against one of its locals.
    fn own_stack() -> usize {
        let local = 0u8;
        let (bottom, size) = crate::runtime::control::current_stack().unwrap();
        let at = &local as *const u8 as usize;
        assert!(
            (bottom..bottom + size).contains(&at),
            "{at:#x} outside its stack"
        );
        size
    }

    #[test]
    fn builder_stacks_are_the_size_decided() {
        let run = |b: crate::Builder| b.spawn(own_stack).unwrap().join().unwrap();
        assert_eq!(run(crate::Builder::new().stack_size(64 << 10)), 64 << 10);
        assert_eq!(run(crate::Builder::new().stack_size(1 << 20)), 1 << 20);
        let default = usable_size(None, config::DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(run(crate::Builder::new()), default);
        assert_eq!(crate::spawn(own_stack).unwrap().join().unwrap(), default);
    }

    #[test]
    fn guarded_stacks_have_unmapped_gaps() {
        let s = allocate(round_size(64 * 1024).unwrap(), StackMode::Guarded).unwrap();
        assert_eq!(s.size(), 64 * 1024);
        let (lo, hi) = s.guard_range();
        assert_eq!(hi - lo, GUARD_GAP);
        assert!(mapped(s.bottom) && mapped(s.top - 1));
        assert!(!mapped(lo) && !mapped(hi - 1));
        release([s]);
    }

    #[test]
    fn a_dense_chunk_has_a_guard_below_its_lowest_stack() {
        // A size class no other test uses: one fresh chunk.
        let size = round_size(1 << 20).unwrap();
        let mut chunk: Vec<Stack> = (0..CHUNK_BYTES / size)
            .map(|_| allocate(size, StackMode::Dense).unwrap())
            .collect();
        let first_top = chunk[0].top;
        chunk.sort_by_key(|s| s.bottom);
        let lowest = &chunk[0];
        assert_eq!(
            first_top,
            chunk.last().unwrap().top,
            "the highest stack goes first"
        );
        let (floor, bottom) = lowest.guard_range();
        assert_eq!(bottom, lowest.bottom);
        assert_eq!(floor, lowest.bottom - GUARD_GAP);
        assert!(mapped(floor) && !readable(floor) && !readable(bottom - 1));
        assert!(readable(bottom));
        // Every stack of the chunk shares that floor: an overflow running down
        // through its neighbours faults in the guard.
        assert!(chunk.iter().all(|s| s.guard_range() == (floor, s.bottom)));
        release(chunk);
    }

    #[test]
    fn dense_stacks_carry_a_canary() {
        let s = allocate(round_size(32 * 1024).unwrap(), StackMode::Dense).unwrap();
        let canary = s.canary().unwrap();
        assert!(canary.intact());
        // SAFETY: the stack is ours and unused.
        unsafe { (s.bottom as *mut u64).write(0) };
        assert!(!canary.intact());
        release([s]);
    }

    #[test]
    fn absurd_sizes_fail_with_enomem() {
        let mut cache = StackCache::new(StackMode::Guarded);
        let err = cache.get(Some(usize::MAX)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        let err = cache.get(Some(1 << 62)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
    }

    #[test]
    fn cache_reuses_stacks() {
        let mut cache = StackCache::new(StackMode::Guarded);
        let a = cache.get(None).unwrap();
        let top = a.top;
        cache.put(a);
        assert_eq!(cache.get(None).unwrap().top, top);
    }
}
