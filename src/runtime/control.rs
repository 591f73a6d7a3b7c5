//! Naming and steering a coroutine from the layer above: its handle (to cancel
//! it from any thread), its `timeout()` deadline, a per-coroutine word, and
//! ending it without returning.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use super::scheduler::{Mail, Remote, current_arc, current_scheduler, current_task, remote_of};
use super::task::Task;

/// A coroutine other code can name from any thread: to cancel it, or to store
/// it as the identity of a green thread.
#[derive(Clone)]
pub(crate) struct TaskHandle(pub(super) Arc<Task>);

impl TaskHandle {
    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    /// Lets go of the task; a finished one's allocation may serve a later
    /// spawn on this thread.
    pub(crate) fn release(self) {
        if let Some(s) = current_scheduler() {
            s.keep_task(self.0);
        }
    }

    /// `cancel`, for a coroutine of the scheduler whose `Scheduler::id` is
    /// `home`; nothing if that scheduler is gone (its coroutines with it).
    pub(crate) fn cancel_at(&self, home: usize) {
        match current_scheduler() {
            Some(s) if s.id() == home => s.cancel_local(self.0.clone()),
            _ => {
                if let Some(remote) = remote_of(home) {
                    remote.post(Mail::Cancel(self.0.clone()));
                }
            }
        }
    }

    /// Marks the coroutine cancelled and, if it is parked, wakes it with
    /// `Wake::Cancelled`; any later park returns `Cancelled` at once.
    pub(crate) fn cancel(&self, home: &TaskHome) {
        match current_scheduler() {
            Some(s) if Arc::ptr_eq(&s.remote, &home.0) => s.cancel_local(self.0.clone()),
            _ => home.0.post(Mail::Cancel(self.0.clone())),
        }
    }
}

/// The scheduler a coroutine lives on, for waking it from another thread.
#[derive(Clone)]
pub(crate) struct TaskHome(Arc<Remote>);

/// The running coroutine's handle and home (in a coroutine).
pub(crate) fn current_handle() -> Option<(TaskHandle, TaskHome)> {
    let task = current_task()?;
    let sched = current_scheduler()?;
    Some((
        TaskHandle(current_arc(task)),
        TaskHome(sched.remote.clone()),
    ))
}

/// True if the running coroutine has been cancelled.
pub(crate) fn cancel_requested() -> bool {
    current_task().is_some_and(|t| t.cancelled.get())
}

/// In a coroutine, whether it has been cancelled; None elsewhere. One
/// thread-local read and one load: the data hooks' entry asks it.
#[inline(always)]
pub(crate) fn running_cancelled() -> Option<bool> {
    current_task().map(|t| t.cancelled.get())
}

/// Withdraws the running coroutine's cancellation, for a layer above that
/// defers it (`pthread_setcancelstate(PTHREAD_CANCEL_DISABLE)`): parks block
/// again until the next `TaskHandle::cancel`.
pub(crate) fn clear_cancel() {
    if let Some(t) = current_task() {
        t.cancelled.set(false);
    }
}

/// The running coroutine's stack: (lowest usable address, usable bytes).
pub(crate) fn current_stack() -> Option<(usize, usize)> {
    current_task().map(|t| (t.guard.1, t.stack_size))
}

/// Replaces the running coroutine's `timeout()` deadline, returning the old one.
/// Outside a coroutine there is none to set: returns None.
pub(crate) fn replace_deadline(deadline: Option<Instant>) -> Option<Instant> {
    current_task().and_then(|t| t.deadline.replace(deadline))
}

/// The running coroutine's `timeout()` deadline, if it is inside one.
pub(crate) fn deadline() -> Option<Instant> {
    current_task().and_then(|t| t.deadline.get())
}

/// The layer-above word of the running coroutine (0 outside coroutines).
pub(crate) fn task_local() -> usize {
    current_task().map_or(0, |t| t.local.get())
}

pub(crate) fn set_task_local(value: usize) {
    if let Some(t) = current_task() {
        t.local.set(value);
    }
}

/// Runs `f` on the running coroutine's scratch value of type `T` (made with
/// `T::default()` on first use), which lives as long as the coroutine; None
/// outside coroutines. Not re-entrant: `f` must not call it again.
pub(crate) fn with_scratch<T: Any + Send + Default, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
    let task = current_task()?;
    // SAFETY: the slot is only touched here, by the coroutine itself (on its
    // scheduler's thread), and `f` does not re-enter; the task drops it.
    let slot = unsafe { &mut *task.scratch.get() };
    if !slot.as_ref().is_some_and(|b| b.is::<T>()) {
        *slot = Some(Box::new(T::default()));
    }
    slot.as_mut()?.downcast_mut::<T>().map(f)
}

/// Ends the running coroutine without returning (`pthread_exit`).
///
/// # Safety
/// No frame between the coroutine's body and this call may own a value that
/// needs dropping: the frames are abandoned, not unwound.
pub(crate) unsafe fn exit_current() -> ! {
    let task = current_task().expect("exit_current is only called in a coroutine");
    task.exiting.set(true);
    if task.tls.get() != 0 {
        super::tls::exiting();
    }
    // SAFETY: as in `park`; the scheduler never resumes an exiting coroutine.
    unsafe { (*task.yielder.get()).suspend(()) };
    unreachable!("an exited coroutine was resumed")
}
