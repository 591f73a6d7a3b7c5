//! The run queue: a FIFO of runnable tasks, linked through the tasks themselves.
//!
//! Every yield pops one task and pushes one back. A `VecDeque` behind a
//! `RefCell` pays a borrow flag, a capacity check and index wrapping on each;
//! a task is in at most one run queue at a time (only a `Runnable` task is
//! queued, once), so a link field in the task is enough and never allocates.

use std::cell::Cell;
use std::ptr;
use std::sync::Arc;

use super::task::Task;

/// Owns one strong count of each queued task (taken by `Arc::into_raw`).
pub(crate) struct RunQueue {
    head: Cell<*const Task>,
    tail: Cell<*const Task>,
    len: Cell<usize>,
}

impl RunQueue {
    pub(crate) const fn new() -> RunQueue {
        RunQueue {
            head: Cell::new(ptr::null()),
            tail: Cell::new(ptr::null()),
            len: Cell::new(0),
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_null()
    }

    /// Queues `task`, which must not be queued already (here or elsewhere).
    #[inline]
    pub(crate) fn push_back(&self, task: Arc<Task>) {
        let new = Arc::into_raw(task);
        // SAFETY: `new` comes from `into_raw`, so it points to a live task; the
        // queue now owns that count until `pop_front` gives it back.
        unsafe { (*new).next.set(ptr::null()) };
        let tail = self.tail.replace(new);
        if tail.is_null() {
            self.head.set(new);
        } else {
            // SAFETY: a non-null tail is a task the queue holds a count of.
            unsafe { (*tail).next.set(new) };
        }
        self.len.set(self.len.get() + 1);
    }

    /// The task `pop_front` would give next, not taken out.
    #[inline]
    pub(crate) fn front(&self) -> Option<&Task> {
        // SAFETY: a non-null head is a task the queue holds a count of, alive
        // for as long as it stays queued, which `&self` outlasts only if the
        // caller pops nothing meanwhile (it only reads the reference at once).
        unsafe { self.head.get().as_ref() }
    }

    #[inline]
    pub(crate) fn pop_front(&self) -> Option<Arc<Task>> {
        let head = self.head.get();
        if head.is_null() {
            return None;
        }
        // SAFETY: a non-null head is a task the queue holds a count of.
        let next = unsafe { (*head).next.get() };
        self.head.set(next);
        if next.is_null() {
            self.tail.set(ptr::null());
        }
        self.len.set(self.len.get() - 1);
        // SAFETY: the count `push_back` took with `into_raw` goes back to the caller.
        Some(unsafe { Arc::from_raw(head) })
    }
}

impl Drop for RunQueue {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::task::tests::plain_task;

    #[test]
    fn fifo_order_and_counts_survive_interleaving() {
        let q = RunQueue::new();
        let tasks: Vec<Arc<Task>> = (0..4).map(plain_task).collect();
        q.push_back(tasks[0].clone());
        q.push_back(tasks[1].clone());
        assert_eq!(q.pop_front().map(|t| t.id), Some(0));
        q.push_back(tasks[2].clone());
        q.push_back(tasks[0].clone());
        assert_eq!(q.len(), 3);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_front().map(|t| t.id)).collect();
        assert_eq!(order, [1, 2, 0]);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        // Emptied, then reused: the tail was reset.
        q.push_back(tasks[3].clone());
        assert_eq!(q.pop_front().map(|t| t.id), Some(3));
        // Every count the queue took was given back.
        assert!(tasks.iter().all(|t| Arc::strong_count(t) == 1));
    }

    #[test]
    fn dropping_a_queue_releases_its_tasks() {
        let t = plain_task(7);
        let q = RunQueue::new();
        q.push_back(t.clone());
        assert_eq!(Arc::strong_count(&t), 2);
        drop(q);
        assert_eq!(Arc::strong_count(&t), 1);
    }
}
