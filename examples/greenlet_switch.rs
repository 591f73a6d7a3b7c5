//! The tutorial's greenlet demo: two functions switch to each other explicitly.
//!
//! ```python
//! def test1():
//!     print(12); gr2.switch(); print(34); gr2.switch()
//! def test2():
//!     print(56); gr1.switch(); print(78)
//! gr1 = greenlet(test1); gr2 = greenlet(test2); gr1.switch()
//! ```
//! prints 12, 56, 34, 78.

use std::cell::OnceCell;
use std::rc::Rc;

use patchall::Greenlet;

fn main() {
    let gr1_slot: Rc<OnceCell<Greenlet>> = Rc::default();
    let gr2_slot: Rc<OnceCell<Greenlet>> = Rc::default();
    let gr2 = gr2_slot.clone();
    let gr1 = Greenlet::new(move || {
        println!("12");
        gr2.get().expect("gr2 exists").switch();
        println!("34");
        gr2.get().expect("gr2 exists").switch();
    })
    .expect("a stack for gr1");
    let gr1_for_2 = gr1_slot.clone();
    let gr2 = Greenlet::new(move || {
        println!("56");
        gr1_for_2.get().expect("gr1 exists").switch();
        println!("78");
    })
    .expect("a stack for gr2");
    let _ = gr1_slot.set(gr1.clone());
    let _ = gr2_slot.set(gr2);
    gr1.switch();
}
