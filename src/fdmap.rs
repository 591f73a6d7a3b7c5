//! A table indexed by file descriptor that grows without moving or locking.
//!
//! Hooks look an fd up on every call and may run before any constructor, inside
//! `malloc`, or on a thread whose thread-locals are gone; so pages come straight
//! from `mmap` (zeroed), are published with a CAS, and are never freed. Entries
//! are therefore types for which all-zero bytes is a valid value (atomics).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

const PAGE_ENTRIES: usize = 4096;
const PAGES: usize = 1024;
/// The largest fd the table can describe, plus one (4,194,304).
pub(crate) const MAX_FDS: usize = PAGE_ENTRIES * PAGES;

/// Marker for types whose all-zero bit pattern is a valid, default value.
///
/// # Safety
/// Implementors must be valid when zeroed and `Sync`.
pub(crate) unsafe trait Zeroable: Sync {}

pub(crate) struct FdMap<T: Zeroable> {
    pages: [AtomicPtr<T>; PAGES],
    _marker: PhantomData<T>,
}

impl<T: Zeroable> FdMap<T> {
    pub(crate) const fn new() -> Self {
        FdMap {
            pages: [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES],
            _marker: PhantomData,
        }
    }

    fn split(fd: i32) -> Option<(usize, usize)> {
        let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FDS)?;
        Some((fd / PAGE_ENTRIES, fd % PAGE_ENTRIES))
    }

    /// The entry for `fd` if its page exists (never allocates).
    #[inline]
    pub(crate) fn get(&self, fd: i32) -> Option<&T> {
        let (page, slot) = Self::split(fd)?;
        let ptr = self.pages[page].load(Ordering::Acquire);
        // SAFETY: a non-null page pointer came from `get_or_create`, which mapped
        // PAGE_ENTRIES zeroed (hence valid) entries that are never unmapped.
        (!ptr.is_null()).then(|| unsafe { &*ptr.add(slot) })
    }

    /// The entry for `fd`, mapping its page on first use. None for a negative or
    /// huge fd, or when memory cannot be had.
    pub(crate) fn get_or_create(&self, fd: i32) -> Option<&T> {
        if let Some(entry) = self.get(fd) {
            return Some(entry);
        }
        let (page, slot) = Self::split(fd)?;
        let bytes = PAGE_ENTRIES * std::mem::size_of::<T>();
        // SAFETY: a fresh private anonymous mapping, zero-filled by the kernel.
        let fresh = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if fresh == libc::MAP_FAILED {
            return None;
        }
        let fresh = fresh.cast::<T>();
        let ptr = match self.pages[page].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never published; nobody else can see it.
                unsafe { libc::munmap(fresh.cast(), bytes) };
                winner
            }
        };
        // SAFETY: as in `get`: the page holds PAGE_ENTRIES valid entries forever.
        Some(unsafe { &*ptr.add(slot) })
    }

    /// Calls `f` with every entry whose page exists (never allocates).
    pub(crate) fn for_each(&self, mut f: impl FnMut(i32, &T)) {
        for (page, slot) in self.pages.iter().enumerate() {
            let ptr = slot.load(Ordering::Acquire);
            if ptr.is_null() {
                continue;
            }
            for i in 0..PAGE_ENTRIES {
                // SAFETY: as in `get`.
                f((page * PAGE_ENTRIES + i) as i32, unsafe { &*ptr.add(i) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct E(AtomicU32);
    // SAFETY: an AtomicU32 of zero is valid; atomics are Sync.
    unsafe impl Zeroable for E {}

    #[test]
    fn grows_to_large_fds_without_moving() {
        static MAP: FdMap<E> = FdMap::new();
        assert!(MAP.get(200_000).is_none());
        let a = MAP.get_or_create(3).unwrap() as *const E;
        MAP.get_or_create(200_000)
            .unwrap()
            .0
            .store(7, Ordering::Relaxed);
        assert_eq!(MAP.get(200_000).unwrap().0.load(Ordering::Relaxed), 7);
        assert_eq!(MAP.get(3).unwrap() as *const E, a);
        assert!(MAP.get_or_create(-1).is_none());
        assert!(MAP.get_or_create(MAX_FDS as i32).is_none());
    }
}
