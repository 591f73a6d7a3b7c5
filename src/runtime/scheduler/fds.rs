//! What every reactor must hear of an fd's life from any thread: its close
//! (or replacement), its shutdown, its creation.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Mail, REMOTES, current_scheduler};
use crate::runtime::reactor::{self, FD_REGS};

/// Called before `fd` is closed or replaced, from any thread: every reactor drops
/// its registration and wakes its waiters with `Closed`; the generation moves on.
pub(crate) fn fd_closing(fd: RawFd) {
    let Some(reg) = FD_REGS.get(fd) else { return };
    let old = reg.generation.fetch_add(1, Ordering::AcqRel);
    reg.reset_readiness();
    let mask = reg.reactors.swap(0, Ordering::AcqRel);
    if mask == 0 {
        return;
    }
    let local = current_scheduler();
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    for remote in remotes.iter().flatten() {
        if mask & reactor::reactor_bit(remote.id) == 0 {
            continue;
        }
        match local {
            Some(s) if Arc::ptr_eq(&s.remote, remote) => {
                if let Ok(mut reactor) = s.reactor.try_borrow_mut() {
                    reactor.forget(fd, old);
                    continue;
                }
                s.remote.post(Mail::Closed(fd, old));
            }
            _ => {
                // Deregister before the fd number can be reused; the owner wakes
                // the waiters when it reads its mail.
                remote.epoll.deregister(fd);
                remote.post(Mail::Closed(fd, old));
            }
        }
    }
}

/// Called after `fd` was shut down, from any thread: every reactor that holds
/// it wakes its waiters to retry their calls (the fd stays open). The kernel
/// raises no epoll event when a send can no longer block (`SHUT_WR`).
pub(crate) fn fd_shut_down(fd: RawFd) {
    let Some(reg) = FD_REGS.get(fd) else { return };
    // No event announces it either: the next call on it tries.
    reg.reset_readiness();
    let generation = reg.generation.load(Ordering::Acquire);
    let mask = reg.reactors.load(Ordering::Acquire);
    if mask == 0 {
        return;
    }
    let local = current_scheduler();
    let remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    for remote in remotes.iter().flatten() {
        if mask & reactor::reactor_bit(remote.id) == 0 {
            continue;
        }
        if let Some(s) = local.filter(|s| Arc::ptr_eq(&s.remote, remote))
            && let Ok(mut reactor) = s.reactor.try_borrow_mut()
        {
            reactor.wake_waiters(fd, generation);
            continue;
        }
        remote.post(Mail::Run(Box::new(move || {
            if let Some(s) = current_scheduler() {
                s.reactor.borrow_mut().wake_waiters(fd, generation);
            }
        })));
    }
}

/// Called when a hook hands out a new fd: a registration left by a close we never
/// saw (glibc closing internally) must not be mistaken for this one.
pub(crate) fn fd_created(fd: RawFd) {
    if FD_REGS
        .get(fd)
        .is_some_and(|r| r.reactors.load(Ordering::Acquire) != 0)
    {
        fd_closing(fd);
    } else if let Some(reg) = FD_REGS.get(fd) {
        reg.generation.fetch_add(1, Ordering::AcqRel);
        reg.reset_readiness();
    }
}
