//! The run loop: a coroutine's run (the switch in and out, what a run pays
//! while nothing watches), the rounds of `run_until` between the run queue,
//! mail, signals, timers and the reactor's poll.

use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;

use super::{CURRENT, Mail, POLL_EVERY, PREFETCH_FROM, RUNNING, Scheduler, current_arc};
use crate::runtime::observe;
use crate::runtime::overflow;
use crate::runtime::task::{State, Task, Wake};
use crate::runtime::tls;

impl Scheduler {
    /// Runs `task` until it yields, parks or ends; its run is stamped for the
    /// monitor and timed while something watches (`observe::on`: one flag,
    /// tested as the run starts and again as it ends, when nothing does).
    /// One body for both cases, so that corosensei's switch stays inlined.
    #[inline(always)]
    pub(super) fn resume(&self, task: Arc<Task>) {
        task.state.set(State::Running);
        let tp = task.tls.get();
        let errno_slot = self.errno_slot;
        let mut own_errno = 0;
        if tp == 0 {
            self.back_to_carrier();
            // SAFETY: this thread's own RUNNING (see `running_slot`), on the
            // block it belongs to: the line above went back to it.
            unsafe { (*self.running_slot).set(Arc::as_ptr(&task)) };
            // SAFETY: the scheduler runs only on the thread whose errno this is
            // (see `errno_slot`); nothing else holds a reference to it.
            own_errno = unsafe { errno_slot.replace(task.errno.get()) };
        } else {
            // Its errno is its own: nothing to save.
            self.move_fs(tp);
            set_running(self, Arc::as_ptr(&task));
        }
        // SAFETY: `co` is only touched on this thread; a runnable task always still
        // holds its coroutine, and nothing else borrows it while it runs.
        let co = unsafe { (*task.co.get()).as_mut() }.expect("runnable task has a coroutine");
        let watched = observe::on();
        if watched {
            self.watch_start(&task);
        } else {
            self.remote.hold.bump();
        }
        // The selector is saved and restored around the switch as errno is
        // (where dispatch is off the kernel never reads it: no test here,
        // which cost more than the two stores).
        self.gate.switch_in(task.selector.get());
        let result = co.resume(());
        task.selector.set(self.gate.switch_out());
        if tp != 0 {
            // Its copy must not name it as running while it is not.
            set_running(self, ptr::null());
        }
        if watched {
            self.watch_end(&task);
        }
        if self.orphaned.get() {
            self.back_to_carrier();
            // The coroutine that called `fork` was the child's only thread and
            // has ended: as when a process's last thread ends, it exits.
            // SAFETY: exit has no preconditions.
            unsafe { libc::exit(0) }
        }
        if tp == 0 {
            // SAFETY: as above.
            task.errno.set(unsafe { errno_slot.replace(own_errno) });
            // SAFETY: as above (`running_slot`).
            unsafe { (*self.running_slot).set(ptr::null()) };
        }
        // Checked on return too: a finished coroutine's overrun smashed its
        // neighbour just the same, and the pool rewrites the canary.
        if task.canary.is_some_and(|c| !c.intact()) {
            self.back_to_carrier();
            overflow::report_and_abort(&task);
        }
        match result {
            CoroutineResult::Yield(()) if task.exiting.get() => {
                self.back_to_carrier();
                // SAFETY: `exit_current` promised that no frame on this stack owns
                // anything that needs dropping (it is called from C frames and our
                // own frames hold only plain values), so abandoning them is sound.
                unsafe { co.force_reset() };
                self.finish(&task);
            }
            // `yield_now` left it runnable: requeue this very Arc, sparing the
            // reference-count traffic of a clone per yield.
            CoroutineResult::Yield(()) => match task.state.get() {
                State::Runnable => self.runq.push_back(task),
                State::Parked => Scheduler::hold(task),
                _ => {}
            },
            CoroutineResult::Return(()) => {
                self.back_to_carrier();
                self.finish(&task);
                self.keep_task(task);
            }
        }
    }

    /// Keeps a parked task alive in itself (see `live_head`); a reference
    /// kept from an earlier park goes.
    #[inline]
    pub(super) fn hold(task: Arc<Task>) {
        let me = Arc::as_ptr(&task);
        // SAFETY: `task` keeps the task alive across the call, and then the
        // reference it moved into the task does.
        drop(unsafe { (*me).held.replace(Some(task)) });
    }

    /// Stamps the start of a run that something watches (`resume`).
    #[cold]
    #[inline(never)]
    pub(super) fn watch_start(&self, task: &Task) {
        self.remote.hold.run_started(task.id);
        if observe::timing() {
            self.began.set(Some(Instant::now()));
        }
    }

    /// Marks the end of a run `watch_start` stamped and records how long it
    /// held the thread and, for a run that parked, since when it waits.
    #[cold]
    #[inline(never)]
    pub(super) fn watch_end(&self, task: &Task) {
        self.remote.hold.run_ended();
        if !observe::timing() {
            return;
        }
        let now = Instant::now();
        // None for a run that started before timing did, and for the outer
        // run around nested ones (contract 13), whose start they took.
        if let Some(began) = self.began.take() {
            self.remote
                .counters
                .held(now.saturating_duration_since(began));
        }
        if task.state.get() == State::Parked {
            // SAFETY: a parked task's park wrote its record.
            let mut wait = unsafe { task.wait.get().assume_init() };
            wait.since = Some(now);
            task.wait.set(MaybeUninit::new(wait));
        }
    }

    /// Takes `task` off the list of live tasks.
    #[inline(always)]
    pub(super) fn unlist(&self, task: &Task) {
        let (prev, next) = (
            task.live_prev.replace(ptr::null()),
            task.live_next.replace(ptr::null()),
        );
        // SAFETY: listed tasks are alive (see `live_head`).
        match unsafe { prev.as_ref() } {
            Some(prev) => prev.live_next.set(next),
            None => self.live_head.set(next),
        }
        // SAFETY: as above.
        if let Some(next) = unsafe { next.as_ref() } {
            next.live_prev.set(prev);
        }
        self.live.set(self.live.get() - 1);
    }

    /// Points `fs` at `to` (a coroutine's block or `tp`), unless it is there.
    #[inline]
    pub(super) fn move_fs(&self, to: usize) {
        if self.fs.get() != to {
            move_tls(to);
            self.fs.set(to);
        }
    }

    /// Back on this thread's own block: before the scheduler does anything
    /// but resume the next coroutine with a block of its own.
    #[inline]
    pub(super) fn back_to_carrier(&self) {
        self.move_fs(self.tp);
    }

    /// Recycles a finished coroutine's stack.
    pub(super) fn finish(&self, task: &Task) {
        task.state.set(State::Done);
        self.unlist(task);
        drop(task.held.take());
        // SAFETY: only this thread touches `co`; the coroutine finished (or was
        // reset), so its stack is free.
        let co = unsafe { (*task.co.get()).take() }.expect("a finishing task has its coroutine");
        // Before the stack goes: the block may lie at its top.
        let tp = task.tls.replace(0);
        if tp != 0 {
            tls::give_back(tp);
        }
        self.stacks.borrow_mut().put(co.into_stack());
        if let Some(mask) = task.sigmask.take() {
            self.signals.masks.ended(mask);
        }
    }

    pub(crate) fn cancel_local(&self, task: Arc<Task>) {
        task.cancelled.set(true);
        if task.state.get() == State::Parked {
            let seq = task.park_seq.get();
            self.unpark_local(Some(task), seq, Wake::Cancelled);
        }
    }

    pub(super) fn unpark_local(&self, task: Option<Arc<Task>>, seq: u64, wake: Wake) {
        // A wake for the driving plain thread: `run_until` re-checks its
        // condition before it next blocks.
        let Some(task) = task else {
            self.root_woken.set(true);
            return;
        };
        if task.state.get() == State::Parked && task.park_seq.get() == seq {
            task.wake.set(wake);
            task.state.set(State::Runnable);
            self.runq.push_back(task);
        }
    }

    #[inline]
    pub(super) fn drain_mail(&self) {
        // A plain load first: this runs every round, and mail is rare; a swap
        // is a locked instruction. Mail posted after the load is seen next
        // round, or by `poll`'s check before it blocks.
        if self.remote.has_mail.load(Ordering::SeqCst) {
            self.read_mail();
        }
    }

    /// `drain_mail`'s rare half, out of line so that the check inlined into
    /// every round saves no registers.
    #[cold]
    #[inline(never)]
    pub(super) fn read_mail(&self) {
        if !self.remote.has_mail.swap(false, Ordering::SeqCst) {
            return;
        }
        let mail =
            std::mem::take(&mut *self.remote.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for m in mail {
            match m {
                Mail::Unpark(task, seq, wake) => self.unpark_local(task, seq, wake),
                Mail::Closed(fd, generation) => self.reactor.borrow_mut().forget(fd, generation),
                Mail::Cancel(task) => self.cancel_local(task),
                Mail::Run(job) => job(),
            }
        }
    }

    /// Interrupts the parks whose mask lets in a signal whose handler ran on
    /// this thread since the last check, as the kernel interrupts a blocked call.
    #[inline]
    pub(super) fn check_signals(&self) {
        if self.signals.pending() {
            self.interrupt_parks();
        }
    }

    /// `check_signals`' rare half. Plain parks are found among the live
    /// tasks (a park only stores its mask in its task: no list to keep per
    /// park, which cost two reference counts and a slab slot each).
    #[cold]
    #[inline(never)]
    pub(super) fn interrupt_parks(&self) {
        let Some(hits) = self.signals.interrupt() else {
            return;
        };
        let mut at = self.live_head.get();
        // SAFETY: every listed task is alive (see `live_head`), and waking
        // one does not unlist it.
        while let Some(task) = unsafe { at.as_ref() } {
            at = task.live_next.get();
            if task.state.get() != State::Parked {
                continue;
            }
            let Some(wake) = task.plain_mask.get().and_then(|m| hits.plain(m)) else {
                continue;
            };
            task.plain_mask.set(None);
            let seq = task.park_seq.get();
            self.unpark_local(Some(current_arc(task)), seq, wake);
        }
    }

    #[inline]
    pub(super) fn fire_timers(&self) {
        if self.timers.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let Some(who) = self.timers.borrow_mut().pop_expired(now) else {
                break;
            };
            who.unpark(Wake::TimedOut);
        }
    }

    /// Drives this scheduler until `done()` holds or `deadline` passes.
    pub(crate) fn run_until(&self, deadline: Option<Instant>, done: &mut dyn FnMut() -> bool) {
        // Whether `done()` was asked since the last thing that could change it
        // ran here: two coroutines yielding to each other ask it once a round.
        let mut asked = false;
        loop {
            if !asked {
                self.root_woken.set(false);
                if done() {
                    return;
                }
            }
            asked = false;
            let batch = self.runq.len();
            let cold = self.live.get() >= PREFETCH_FROM;
            for _ in 0..batch {
                let Some(task) = self.runq.pop_front() else {
                    break;
                };
                if cold && let Some(next) = self.runq.front() {
                    prefetch_resumption(next);
                }
                self.resume(task);
            }
            self.back_to_carrier();
            if batch > 0 {
                self.root_woken.set(false);
                if done() {
                    return;
                }
                asked = true;
            }
            self.check_signals();
            self.drain_mail();
            self.fire_timers();
            // The mail just read may be the wake-up `done()` waits for (set from
            // another thread after the check above): blocking now would lose it.
            if self.root_woken.get() {
                asked = false;
                continue;
            }
            let now = (deadline.is_some() || !self.timers.borrow().is_empty()).then(Instant::now);
            if let (Some(d), Some(now)) = (deadline, now) {
                if now >= d {
                    return;
                }
            }
            let busy = !self.runq.is_empty();
            let runs = self.runs_since_poll.get().saturating_add(batch as u32);
            if busy && runs < POLL_EVERY {
                self.runs_since_poll.set(runs);
                continue;
            }
            self.runs_since_poll.set(0);
            asked = false;
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                let next = [deadline, self.timers.borrow().next_deadline()]
                    .into_iter()
                    .flatten()
                    .min();
                next.map(|t| t.saturating_duration_since(now.unwrap_or_else(Instant::now)))
            };
            self.poll(timeout);
        }
    }

    pub(super) fn poll(&self, timeout: Option<Duration>) {
        let may_block = timeout != Some(Duration::ZERO);
        let mut timeout = timeout;
        if may_block {
            self.remote.polling.store(true, Ordering::SeqCst);
            if self.remote.has_mail.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let mut woken = std::mem::take(&mut *self.woken.borrow_mut());
        let sigmask = self.signals.wait_mask();
        let result = {
            let mut reactor = self.reactor.borrow_mut();
            self.signals.watch(&reactor);
            reactor.poll(timeout, sigmask, |who| woken.push(who))
        };
        self.remote.polling.store(false, Ordering::SeqCst);
        let mut delivered = false;
        match result {
            Ok(polled) => {
                if polled.signalled {
                    self.signals.wake_waiting();
                }
                delivered = polled.interrupted;
            }
            Err(e) => crate::sys::diag(&[
                b"patchall: epoll_wait failed: ",
                e.to_string().as_bytes(),
                b"\n",
            ]),
        }
        if let (Some(mask), false) = (sigmask, delivered) {
            // A wait that found events at once (or had no time) delivered no
            // signal: a signal pending all along would never be, under load.
            // Those pending that `mask` lets in have their handlers run now.
            crate::runtime::signals::deliver_pending(mask);
        }
        for who in woken.drain(..) {
            self.unpark_local(who.task, who.seq, Wake::Ready);
        }
        *self.woken.borrow_mut() = woken;
        self.check_signals();
        self.drain_mail();
        self.fire_timers();
    }
}

/// Asks the CPU to bring in what resuming `task` (the next in the run queue)
/// will touch first: the top frames of its stack, which the return from its
/// switch and its blocking call pops, the reactor slot its next fd wait
/// reads, and the record of the task queued after it. With a thousand
/// coroutines taking turns, each one's stack and record have left the caches
/// by its next turn; fetched while the one before it
/// runs (its system calls take microseconds), the misses overlap with that
/// work instead of stalling the switch (`perf record` at 1,000 echo
/// connections put a fifth of patchall's own time on the first touch of the
/// resumed stack). The records go one turn ahead of the stacks: where a
/// stack lies is read from the record, and a record fetched only now made
/// that read the stall (`perf annotate`: most of `run_until`'s samples).
#[inline]
fn prefetch_resumption(task: &Task) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        /// The switch's own saves lie below the hint (the stack pointer of
        /// the parking frame); above it the frames of the call that parked
        /// (hook, wait, park: 1,120 bytes from a `recv` in std's
        /// `TcpStream::read`, gdb on the echo benchmark) and the lowest of
        /// the program's, where its buffer usually lies.
        const BELOW: usize = 64;
        const ABOVE: usize = 1280;
        const RECORD_LINES: usize = size_of::<Task>().div_ceil(64);
        let after = task.next.get().cast::<i8>();
        if !after.is_null() {
            for line in 0..RECORD_LINES {
                // SAFETY: prefetching is a hint: it never faults, on any address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(after.wrapping_add(line * 64)) };
            }
        }
        let slot = task.slot_hint.get();
        if slot != 0 {
            // SAFETY: as below.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot as *const i8) };
        }
        let at = task.stack_hint.get();
        if at != 0 {
            let from = at.wrapping_sub(BELOW) as *const i8;
            // A constant count, which the compiler unrolls.
            for line in 0..(BELOW + ABOVE) / 64 {
                // SAFETY: as above.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(line * 64)) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = task;
}

/// The running coroutine's record in the block `fs` points at. Out of line,
/// as is `move_tls`: the compiler takes a thread-local's address as fixed
/// within a function, so the ones touched after a switch must be reached from
/// a new call.
#[inline(never)]
pub(super) fn set_running(s: &Scheduler, task: *const Task) {
    CURRENT.with(|c| c.set(s));
    RUNNING.with(|r| r.set(task));
}

/// Points `fs` at `to`.
#[inline(never)]
fn move_tls(to: usize) {
    tls::switch_to(to);
}
