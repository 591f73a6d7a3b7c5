//! Generators and greenlets beyond the examples.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use patchall::{Generator, GeneratorState, Greenlet};

#[test]
fn a_dropped_suspended_generator_drops_its_locals() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let d = drops.clone();
    let mut g = Generator::new(move |co, ()| {
        let _held = Counted(d);
        co.suspend(1u8);
        co.suspend(2u8);
    })
    .unwrap();
    assert_eq!(g.resume(()), GeneratorState::Yielded(1));
    assert!(!g.is_complete());
    drop(g);
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn many_generators_reuse_pooled_stacks() {
    for i in 0..10_000u32 {
        let mut g = Generator::new(|co, x: u32| co.suspend(x + 1)).unwrap();
        assert_eq!(g.resume(i), GeneratorState::Yielded(i + 1));
        assert_eq!(g.resume(7), GeneratorState::Complete(7));
        assert!(g.is_complete());
    }
}

#[test]
fn a_blocking_call_in_a_generator_parks_the_enclosing_coroutine() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = patchall::spawn(move || {
        for _ in 0..5 {
            t.fetch_add(1, SeqCst);
            patchall::yield_now();
        }
    })
    .unwrap();
    let t = ticks.clone();
    let sleeper = patchall::spawn(move || {
        let mut g = Generator::new(move |_co: &patchall::Yielder<(), ()>, ()| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            t.load(SeqCst)
        })
        .unwrap();
        g.resume(())
    })
    .unwrap();
    ticker.join().unwrap();
    assert_eq!(sleeper.join().unwrap(), GeneratorState::Complete(5));
}

#[test]
fn switching_to_a_dead_greenlet_does_nothing_and_self_switch_continues() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let me: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let (l, m) = (log.clone(), me.clone());
    let g = Greenlet::new(move || {
        l.borrow_mut().push("a");
        m.borrow().clone().unwrap().switch();
        l.borrow_mut().push("b");
    })
    .unwrap();
    *me.borrow_mut() = Some(g.clone());
    g.switch();
    assert!(g.is_dead());
    g.switch();
    assert_eq!(*log.borrow(), ["a", "b"]);
}
