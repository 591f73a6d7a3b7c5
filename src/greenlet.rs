//! Greenlets: explicit, symmetric switching between coroutines, the tutorial's
//! `gr1.switch()` demo. A greenlet runs only when some code switches to it; when
//! its function returns, control goes back to the code that first switched in
//! (gevent's "parent"). For scheduled, I/O-driven coroutines use `spawn`.

use std::cell::{Cell, RefCell};
use std::io;
use std::ptr;
use std::rc::Rc;

use crate::generator::{Generator, GeneratorState, Yielder};

type Body = Generator<(), Greenlet, ()>;

struct Inner {
    body: RefCell<Option<Body>>,
    dead: Cell<bool>,
}

/// A coroutine that runs when switched to. Cheap to clone; stays on its thread.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use patchall::Greenlet;
///
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let other: Rc<RefCell<Option<Greenlet>>> = Rc::default();
/// let (l, o) = (log.clone(), other.clone());
/// let first = Greenlet::new(move || {
///     l.borrow_mut().push(1);
///     o.borrow().clone().unwrap().switch();
///     l.borrow_mut().push(3);
/// }).unwrap();
/// let l = log.clone();
/// let f = first.clone();
/// *other.borrow_mut() = Some(Greenlet::new(move || {
///     l.borrow_mut().push(2);
///     f.switch();
/// }).unwrap());
/// first.switch();
/// assert_eq!(*log.borrow(), [1, 2, 3]);
/// ```
#[derive(Clone)]
pub struct Greenlet(Rc<Inner>);

thread_local! {
    /// The running greenlet's yielder, or null when the caller is not a greenlet.
    static YIELDER: Cell<*const Yielder<(), Greenlet>> = const { Cell::new(ptr::null()) };
}

impl Greenlet {
    /// A greenlet that runs `f` at its first switch. Fails when no stack can be had.
    pub fn new(f: impl FnOnce() + 'static) -> io::Result<Greenlet> {
        let body = Generator::new(move |y: &Yielder<(), Greenlet>, ()| {
            YIELDER.with(|c| c.set(y));
            f();
        })?;
        Ok(Greenlet(Rc::new(Inner {
            body: RefCell::new(Some(body)),
            dead: Cell::new(false),
        })))
    }

    /// Transfers control to this greenlet. Called by a greenlet, suspends the
    /// caller until something switches back to it; called by other code, returns
    /// when the greenlets have run to the end of one of them. Switching to a dead
    /// greenlet does nothing.
    pub fn switch(&self) {
        let me = YIELDER.with(Cell::get);
        if me.is_null() {
            drive(self.clone());
        } else {
            // SAFETY: YIELDER is set while the running greenlet's body runs, and the
            // Yielder lives on that body's stack for as long as it runs.
            unsafe { (*me).suspend(self.clone()) };
            // Another greenlet ran meanwhile and moved YIELDER: this one runs again.
            YIELDER.with(|c| c.set(me));
        }
    }

    /// True once the greenlet's function has returned.
    pub fn is_dead(&self) -> bool {
        self.0.dead.get()
    }
}

/// Runs greenlets from plain code: each suspension names the next one to run.
fn drive(mut next: Greenlet) {
    loop {
        if next.is_dead() {
            return;
        }
        let mut body = next
            .0
            .body
            .borrow_mut()
            .take()
            .expect("a live greenlet is not running");
        let state = body.resume(());
        YIELDER.with(|c| c.set(ptr::null()));
        match state {
            GeneratorState::Yielded(target) => {
                *next.0.body.borrow_mut() = Some(body);
                next = target;
            }
            GeneratorState::Complete(()) => {
                next.0.dead.set(true);
                return;
            }
        }
    }
}
