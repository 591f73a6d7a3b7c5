//! `pthread_barrier_wait` and `_destroy`; process-shared barriers stay
//! glibc's, and so do `_init` (it writes the count we read).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU32};

use libc::{EBUSY, c_int, pthread_barrier_t};

use super::overlay;
use super::wait::{WAITER_COUNT, WAITER_NATIVE, WaitBy, let_others_run};
use crate::runtime::{Family, Label, parking};
use crate::sys::futex;

/// Arrivals are counted in `arrived`; the last one resets it and moves `round`,
/// which the others wait on. Everyone counts in `inside` from entry to exit:
/// destroy waits for it to drain.
#[repr(C)]
struct Barrier {
    /// Arrivals this round, plus WAITER_NATIVE if a futex waiter is among them.
    arrived: AtomicU32,
    round: AtomicU32,
    count: AtomicU32,
    shared: AtomicI32,
    inside: AtomicU32,
    _pad: [u32; 3],
}

impl Barrier {
    fn ours<'a>(b: *mut pthread_barrier_t) -> Option<&'a Barrier> {
        overlay(b, |x: &Barrier| x.shared.load(Relaxed) == 0)
    }

    /// A barrier glibc's code used (before green threads were on) is left with
    /// its arrivals (`in`, our `arrived`) and departures (`out`, our `inside`)
    /// equal, a multiple of the count: our `arrived` never reaches the count,
    /// so one that has is glibc's, and both go back to zero.
    fn adopt_from_glibc(&self, count: u32) {
        let a = self.arrived.load(SeqCst);
        if a & WAITER_COUNT >= count && self.arrived.compare_exchange(a, 0, SeqCst, SeqCst).is_ok()
        {
            self.inside.fetch_sub(a, SeqCst);
        }
    }

    fn wait(&self) -> c_int {
        let count = self.count.load(Relaxed);
        self.adopt_from_glibc(count);
        self.inside.fetch_add(1, SeqCst);
        let round = self.round.load(SeqCst);
        let waiter = WaitBy::new(&const { Label::new("barrier", Family::Lock) });
        let native = if waiter.native() { WAITER_NATIVE } else { 0 };
        let mut a = self.arrived.load(SeqCst);
        loop {
            if (a & WAITER_COUNT) + 1 >= count {
                match self.arrived.compare_exchange(a, 0, SeqCst, SeqCst) {
                    Ok(_) => {
                        self.round.fetch_add(1, SeqCst);
                        let addr = self.round.as_ptr() as usize;
                        parking::unpark_all(addr);
                        if a & WAITER_NATIVE != 0 {
                            futex::wake(addr, i32::MAX);
                        }
                        self.inside.fetch_sub(1, SeqCst);
                        return libc::PTHREAD_BARRIER_SERIAL_THREAD;
                    }
                    Err(x) => a = x,
                }
            } else {
                match self
                    .arrived
                    .compare_exchange(a, (a + 1) | native, SeqCst, SeqCst)
                {
                    Ok(_) => break,
                    Err(x) => a = x,
                }
            }
        }
        while self.round.load(SeqCst) == round {
            let _ = waiter.wait_word(&self.round, round, None);
        }
        drop(waiter);
        self.inside.fetch_sub(1, SeqCst);
        0
    }
}

hook! {
    /// `pthread_barrier_wait(3)`: PTHREAD_BARRIER_SERIAL_THREAD for the last to
    /// arrive, 0 for the others.
    fn pthread_barrier_wait(b: *mut pthread_barrier_t) -> c_int as real {
        match Barrier::ours(b) {
            Some(br) => br.wait(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(b) },
        }
    }
}

hook! {
    /// `pthread_barrier_destroy(3)`: EBUSY while a round is under way; waits for
    /// the last round's waiters to leave.
    fn pthread_barrier_destroy(b: *mut pthread_barrier_t) -> c_int as real {
        match Barrier::ours(b) {
            Some(br) => {
                br.adopt_from_glibc(br.count.load(Relaxed));
                if br.arrived.load(SeqCst) & WAITER_COUNT != 0 {
                    return EBUSY;
                }
                while br.inside.load(SeqCst) != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(b) },
        }
    }
}
