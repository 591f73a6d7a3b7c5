//! Generators: the `yield`-based coroutines of the tutorial's first section, a
//! function that suspends itself with a value and is resumed with another, like
//! Python's `gen.send(value)`. They run on the caller's thread when resumed,
//! nothing schedules them.

use std::io;

use corosensei::{Coroutine, CoroutineResult};

use crate::config::config;
use crate::runtime::stack::{self, Stack};

/// What a generator did when resumed.
#[derive(Debug, PartialEq, Eq)]
pub enum GeneratorState<Y, R> {
    /// It suspended itself with this value.
    Yielded(Y),
    /// It returned this value; resuming it again panics.
    Complete(R),
}

/// The handle a generator's body uses to suspend itself.
#[repr(transparent)]
pub struct Yielder<In, Out>(corosensei::Yielder<In, Out>);

impl<In, Out> Yielder<In, Out> {
    /// Suspends the generator, handing `value` to the caller of `resume`; returns
    /// the value the next `resume` passes in (Python's `x = yield value`).
    pub fn suspend(&self, value: Out) -> In {
        self.0.suspend(value)
    }
}

/// A stackful generator on a pooled stack.
///
/// ```
/// use patchall::{Generator, GeneratorState};
/// // A running total: each resume sends a number, each yield hands the sum back.
/// let mut sum = Generator::new(|co, first: u32| {
///     let mut total = first;
///     loop {
///         let next = co.suspend(total);
///         if next == 0 {
///             return total;
///         }
///         total += next;
///     }
/// })
/// .unwrap();
/// assert_eq!(sum.resume(1), GeneratorState::Yielded(1));
/// assert_eq!(sum.resume(2), GeneratorState::Yielded(3));
/// assert_eq!(sum.resume(0), GeneratorState::Complete(3));
/// ```
pub struct Generator<In, Out, R> {
    co: Option<Coroutine<In, Out, R, Stack>>,
}

impl<In: 'static, Out: 'static, R: 'static> Generator<In, Out, R> {
    /// A generator that runs `body(yielder, first_input)` at the first `resume`.
    /// Fails when no stack can be had.
    pub fn new<F>(body: F) -> io::Result<Self>
    where
        F: FnOnce(&Yielder<In, Out>, In) -> R + 'static,
    {
        let cfg = config();
        let size = stack::usable_size(None, crate::config::DEFAULT_STACK_SIZE)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let stack = stack::allocate(size, cfg.stack_mode)?;
        let co = Coroutine::with_stack(stack, move |y: &corosensei::Yielder<In, Out>, input| {
            // SAFETY: `Yielder` is a #[repr(transparent)] newtype over corosensei's
            // Yielder, so a reference to one is a valid reference to the other.
            let y =
                unsafe { &*(y as *const corosensei::Yielder<In, Out>).cast::<Yielder<In, Out>>() };
            body(y, input)
        });
        Ok(Generator { co: Some(co) })
    }

    /// Runs the generator until it suspends or returns. Panics if it already
    /// returned; a panic inside the body propagates to the caller.
    pub fn resume(&mut self, input: In) -> GeneratorState<Out, R> {
        let co = self.co.as_mut().expect("a generator exists until dropped");
        match co.resume(input) {
            CoroutineResult::Yield(v) => GeneratorState::Yielded(v),
            CoroutineResult::Return(r) => GeneratorState::Complete(r),
        }
    }

    /// True once the body has returned.
    pub fn is_complete(&self) -> bool {
        self.co.as_ref().is_none_or(Coroutine::done)
    }
}

impl<In, Out, R> Drop for Generator<In, Out, R> {
    fn drop(&mut self) {
        if let Some(mut co) = self.co.take() {
            // A suspended body holds only Rust frames of its own: unwind them so
            // their values drop, then give the stack back.
            co.force_unwind();
            stack::release([co.into_stack()]);
        }
    }
}
