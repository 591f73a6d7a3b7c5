//! pthread keys with a value per green thread.
//!
//! Key numbers come from glibc (`pthread_key_create` is forwarded), so a key
//! also works in native threads. We keep each key's destructor and a sequence
//! number: 0 if the key was never created through us (its values stay glibc's,
//! per OS thread), odd while it exists, even once deleted. A value stored under
//! an older sequence reads as NULL, as glibc does for a deleted and reused key.
//! Values live in the green thread's record, laid out as glibc's: 32 inline
//! slots, further blocks of 32 allocated on first use.

use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use libc::{c_int, c_void, pthread_key_t};

use super::current;

/// PTHREAD_KEYS_MAX.
const KEYS_MAX: usize = 1024;
const BLOCK: usize = 32;
/// PTHREAD_DESTRUCTOR_ITERATIONS.
const ROUNDS: usize = 4;

static SEQ: [AtomicUsize; KEYS_MAX] = [const { AtomicUsize::new(0) }; KEYS_MAX];
static DTOR: [AtomicUsize; KEYS_MAX] = [const { AtomicUsize::new(0) }; KEYS_MAX];

type Destructor = unsafe extern "C" fn(*mut c_void);

#[derive(Clone, Copy)]
struct Slot {
    seq: usize,
    value: *mut c_void,
}

const EMPTY: Slot = Slot {
    seq: 0,
    value: ptr::null_mut(),
};

/// One green thread's key values. Only that thread touches them.
pub(super) struct Slots {
    first: UnsafeCell<[Slot; BLOCK]>,
    more: UnsafeCell<[*mut [Slot; BLOCK]; KEYS_MAX / BLOCK - 1]>,
}

impl Slots {
    pub(super) fn new() -> Slots {
        Slots {
            first: UnsafeCell::new([EMPTY; BLOCK]),
            more: UnsafeCell::new([ptr::null_mut(); KEYS_MAX / BLOCK - 1]),
        }
    }

    /// The slot of `key` (< KEYS_MAX); with `grow`, allocates its block if
    /// needed (None if that fails), else None for a block never allocated.
    fn slot(&self, key: usize, grow: bool) -> Option<*mut Slot> {
        let (block, i) = (key / BLOCK, key % BLOCK);
        if block == 0 {
            // SAFETY: in bounds; only the owning thread touches the slots.
            return Some(unsafe { (*self.first.get()).as_mut_ptr().add(i) });
        }
        // SAFETY: `block - 1` is in bounds (key < KEYS_MAX); owner-only access.
        let entry = unsafe { &mut (*self.more.get())[block - 1] };
        if entry.is_null() {
            if !grow {
                return None;
            }
            // calloc: zeroed slots, and a failure is ENOMEM, not an abort.
            // SAFETY: plain allocation; zeroed memory is a block of EMPTY slots.
            let fresh = unsafe { libc::calloc(1, std::mem::size_of::<[Slot; BLOCK]>()) };
            if fresh.is_null() {
                return None;
            }
            *entry = fresh.cast();
        }
        // SAFETY: a live block of BLOCK slots; `i < BLOCK`.
        Some(unsafe { (**entry).as_mut_ptr().add(i) })
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        for block in self.more.get_mut().iter() {
            // SAFETY: null or a block from calloc, freed once.
            unsafe { libc::free(block.cast()) };
        }
    }
}

/// The calling green thread's slots and `key`'s live sequence, or None when
/// the value is glibc's business (no green thread, `main`, a key we never saw).
fn own(key: pthread_key_t) -> Option<(&'static Slots, usize, usize)> {
    let slots = current()?.keys.as_ref()?;
    let k = key as usize;
    let seq = SEQ.get(k)?.load(Acquire);
    (seq != 0).then_some((slots, k, seq))
}

hook! {
    /// `pthread_key_create(3)`: glibc's key, with its destructor noted for
    /// green threads.
    fn pthread_key_create(key: *mut pthread_key_t, dtor: Option<Destructor>) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(key, dtor) };
        // SAFETY: on success glibc wrote the new key.
        if let Some(k) = (r == 0).then(|| unsafe { *key } as usize).filter(|&k| k < KEYS_MAX) {
            DTOR[k].store(dtor.map_or(0, |d| d as usize), Release);
            // Odd from even; from an odd value (a create we never saw deleted) to the next odd.
            let _ = SEQ[k].fetch_update(AcqRel, Acquire, |s| Some(if s % 2 == 0 { s + 1 } else { s + 2 }));
        }
        r
    }
}

hook! {
    /// `pthread_key_delete(3)`: values stored under the key become unreachable
    /// without their destructor running, as in glibc.
    fn pthread_key_delete(key: pthread_key_t) -> c_int as real {
        // SAFETY: forwarding the caller's argument.
        let r = unsafe { real(key) };
        if let (0, Some(seq)) = (r, SEQ.get(key as usize)) {
            let _ = seq.fetch_update(AcqRel, Acquire, |s| (s % 2 == 1).then_some(s + 1));
            DTOR[key as usize].store(0, Release);
        }
        r
    }
}

hook! {
    /// `pthread_getspecific(3)`: a green thread's own value.
    fn pthread_getspecific(key: pthread_key_t) -> *mut c_void as real {
        let Some((slots, k, seq)) = own(key) else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(key) };
        };
        match slots.slot(k, false) {
            // SAFETY: a slot of the calling thread's own record.
            Some(slot) => unsafe { if (*slot).seq == seq { (*slot).value } else { ptr::null_mut() } },
            None => ptr::null_mut(),
        }
    }
}

hook! {
    /// `pthread_setspecific(3)`: a green thread's own value.
    fn pthread_setspecific(key: pthread_key_t, value: *const c_void) -> c_int as real {
        let Some((slots, k, seq)) = own(key) else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(key, value) };
        };
        if seq % 2 == 0 {
            return libc::EINVAL;
        }
        let Some(slot) = slots.slot(k, true) else {
            return libc::ENOMEM;
        };
        // SAFETY: a slot of the calling thread's own record.
        unsafe { *slot = Slot { seq, value: value.cast_mut() } };
        0
    }
}

/// Runs the destructors of a finishing green thread's values, as glibc does at
/// thread exit: each non-NULL value of a live key with a destructor is cleared,
/// then passed to it; repeated while destructors set new values, at most
/// PTHREAD_DESTRUCTOR_ITERATIONS rounds.
pub(super) fn run_destructors(slots: &Slots) {
    for _ in 0..ROUNDS {
        let mut ran = false;
        for k in 0..KEYS_MAX {
            let Some(slot) = slots.slot(k, false) else {
                continue;
            };
            // SAFETY: a slot of the calling thread's own record; the destructor
            // may store into slots, but we hold no reference across the call.
            let Slot { seq, value } = unsafe { slot.replace(EMPTY) };
            let dtor = DTOR[k].load(Acquire);
            if value.is_null() || dtor == 0 || seq != SEQ[k].load(Acquire) {
                continue;
            }
            ran = true;
            // SAFETY: the destructor the user registered for this key, given its
            // value, as glibc would.
            unsafe { std::mem::transmute::<usize, Destructor>(dtor)(value) };
        }
        if !ran {
            return;
        }
    }
}

/// `main` uses the OS thread's own values; when it ends with `pthread_exit`
/// the process lives on, so its destructors run here as glibc would run them.
pub(super) fn run_os_thread_destructors() {
    let (Some(get), Some(set)) = (
        original!("C" fn pthread_getspecific(pthread_key_t) -> *mut c_void),
        original!("C" fn pthread_setspecific(pthread_key_t, *const c_void) -> c_int),
    ) else {
        return;
    };
    for _ in 0..ROUNDS {
        let mut ran = false;
        for k in 0..KEYS_MAX {
            let dtor = DTOR[k].load(Acquire);
            if dtor == 0 || SEQ[k].load(Acquire) % 2 == 0 {
                continue;
            }
            // SAFETY: a key that exists; glibc's own accessors.
            let value = unsafe { get(k as pthread_key_t) };
            if value.is_null() {
                continue;
            }
            ran = true;
            // SAFETY: as above; then the user's destructor with its value.
            unsafe {
                set(k as pthread_key_t, ptr::null());
                std::mem::transmute::<usize, Destructor>(dtor)(value);
            }
        }
        if !ran {
            return;
        }
    }
}
