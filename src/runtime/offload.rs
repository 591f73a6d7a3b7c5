//! The offload pool: plain OS threads that make a truly blocking call (a DNS
//! lookup, a read from a slow disk, a wait for any child) while the coroutine
//! that asked parks; completion wakes it through its scheduler's inbox, as
//! gevent's threadpool resolver does.
//!
//! Threads start on demand, when a job finds none idle, up to
//! `PATCHALL_OFFLOAD_THREADS`; all but [`KEEP`] end after [`IDLE_LIMIT`] without
//! work. They are created with the real `pthread_create` (so green threads
//! never turn them into coroutines), block every asynchronous signal (a
//! process-directed signal goes to the program's own threads, as without the
//! pool), and are never in a coroutine: every hooked call they make forwards
//! to libc.
//!
//! Waking a sleeping thread costs more than most jobs (BENCHMARKS.md, "Offload pool"),
//! so on machines with more than one CPU both sides stay awake for a moment:
//! the caller yields for up to `SPIN` before it parks, and a pool thread that
//! finished a job looks for the next for as long before it sleeps.
//!
//! A job may borrow the caller's memory (a read buffer, a `struct addrinfo **`):
//! the caller stays parked until the job has finished, whatever wakes it — a
//! cancellation or a signal is left pending for the next park, never allowed
//! to return while a pool thread may still write into a buffer the caller
//! would then free.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::scheduler::{in_coroutine, park, yield_now};
use super::task::{Unparker, Wake};
use crate::config::config;
use crate::sys::{Original, errno, set_errno};

/// Idle threads kept however long they wait: the next lookup starts at once.
const KEEP: usize = 2;
/// How long a thread beyond `KEEP` waits for work before it ends.
const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// How long a thread that finished a job looks for the next before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// A job's end, shared by the caller and the pool thread: who to wake, then
/// `Done`. In an `Arc`, so the pool thread's last touch never lands on memory
/// the woken caller already released.
enum Progress {
    Running(Option<Unparker>),
    Done,
}

struct Completion(Mutex<Progress>);

impl Completion {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self) {
        let waiter = match std::mem::replace(&mut *self.lock(), Progress::Done) {
            Progress::Running(w) => w,
            Progress::Done => None,
        };
        if let Some(w) = waiter {
            w.unpark(Wake::Ready);
        }
    }

    /// Waits in the running coroutine until `finish`. The other coroutines run
    /// at least once meanwhile (an offloaded call is always a scheduling
    /// point). For `SPIN` the coroutine only yields, which keeps its scheduler
    /// from sleeping: waking a sleeping thread costs more than most calls
    /// (BENCHMARKS.md, "Offload pool"); then it parks. Wakes for other reasons
    /// (cancellation) only lead to parking again: the job holds the caller's
    /// memory.
    fn wait(&self) {
        let until = spin_allowed().then(|| Instant::now() + SPIN);
        loop {
            yield_now();
            if matches!(*self.lock(), Progress::Done) {
                return;
            }
            if until.is_none_or(|t| Instant::now() >= t) {
                break;
            }
        }
        loop {
            if matches!(*self.lock(), Progress::Done) {
                return;
            }
            park(None, |who| match &mut *self.lock() {
                Progress::Done => false,
                Progress::Running(waiter) => {
                    *waiter = Some(who);
                    true
                }
            });
        }
    }
}

/// A job as the pool sees it: the caller's closure, which lives on the
/// caller's (parked) coroutine stack.
struct Job {
    work: *mut (dyn FnMut() + 'static),
    done: Arc<Completion>,
}

// SAFETY: `work` is only called by the one pool thread that pops the job, while
// its owner is parked in `Completion::wait` (see `run`).
unsafe impl Send for Job {}

struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    /// Threads asleep, waiting for a job.
    idle: usize,
    /// Threads that just finished a job and look for the next without sleeping.
    spinning: usize,
}

struct Pool {
    queue: Mutex<Queue>,
    /// `queue.jobs.len()`, readable without the lock by spinning threads.
    queued: AtomicUsize,
    work: Condvar,
    cap: usize,
}

/// The pool, made on first use. A child of `fork` starts over (`after_fork_child`).
static POOL: AtomicPtr<Pool> = AtomicPtr::new(ptr::null_mut());
/// Jobs run so far, process-wide: lets tests and benchmarks see offloading.
static JOBS_RUN: AtomicU64 = AtomicU64::new(0);

fn pool() -> &'static Pool {
    let p = POOL.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: published pools are leaked, never freed.
        return unsafe { &*p };
    }
    let fresh = Box::into_raw(Box::new(Pool {
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            threads: 0,
            idle: 0,
            spinning: 0,
        }),
        queued: AtomicUsize::new(0),
        work: Condvar::new(),
        cap: config().offload_threads,
    }));
    match POOL.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just published, leaked from here on.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never published; nobody else saw it.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above.
            unsafe { &*winner }
        }
    }
}

impl Pool {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; gives it back if no thread exists and none can be started.
    fn submit(&'static self, job: Job) -> Result<(), Job> {
        let mut q = self.queue();
        q.jobs.push_back(job);
        self.queued.store(q.jobs.len(), Ordering::Release);
        if q.spinning >= q.jobs.len() {
            return Ok(());
        }
        if q.spinning + q.idle >= q.jobs.len() || q.threads >= self.cap {
            self.work.notify_one();
            return Ok(());
        }
        q.threads += 1;
        drop(q);
        if start_thread(self) {
            return Ok(());
        }
        let mut q = self.queue();
        q.threads -= 1;
        if q.threads > 0 {
            // Someone will get to it, later.
            return Ok(());
        }
        // Only ever our own job can be queued with no thread at all: every
        // earlier submitter saw the same failure and took theirs back.
        let job = q.jobs.pop_back().expect("the job just queued");
        self.queued.store(q.jobs.len(), Ordering::Release);
        Err(job)
    }

    /// A pool thread's life: jobs until it has been idle too long.
    fn serve(&self) {
        let mut spin = false;
        loop {
            let Some(job) = self.next_job(spin) else {
                return;
            };
            spin = true;
            // SAFETY: the caller is parked until `finish` (Completion::wait),
            // so its closure and everything it borrows are alive.
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job.work)() }));
            if ran.is_err() {
                // The caller's result slot is empty and it cannot be given
                // one: a bug in patchall, not a condition to recover from.
                crate::sys::diag(&[b"patchall: an offloaded call panicked\n"]);
                std::process::abort();
            }
            JOBS_RUN.fetch_add(1, Ordering::Relaxed);
            job.done.finish();
        }
    }

    fn next_job(&self, spin: bool) -> Option<Job> {
        let spin = spin && spin_allowed();
        if spin {
            self.queue().spinning += 1;
            let until = Instant::now() + SPIN;
            while self.queued.load(Ordering::Acquire) == 0 && Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let mut q = self.queue();
        if spin {
            q.spinning -= 1;
        }
        loop {
            if let Some(job) = q.jobs.pop_front() {
                self.queued.store(q.jobs.len(), Ordering::Release);
                return Some(job);
            }
            q.idle += 1;
            let (guard, waited) = self
                .work
                .wait_timeout(q, IDLE_LIMIT)
                .unwrap_or_else(|e| e.into_inner());
            q = guard;
            q.idle -= 1;
            if waited.timed_out() && q.jobs.is_empty() && q.threads > KEEP {
                q.threads -= 1;
                return None;
            }
        }
    }
}

/// Spinning only pays where the thread we wait for runs on another CPU.
fn spin_allowed() -> bool {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    let n = match CPUS.load(Ordering::Relaxed) {
        0 => {
            // Not `available_parallelism`, which may open files: through
            // the hooks, which may offload.
            // SAFETY: an all-zero cpu_set_t is valid; the call fills it.
            let n = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
                {
                    libc::CPU_COUNT(&set) as usize
                } else {
                    1
                }
            };
            CPUS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    };
    n > 1
}

/// The real `pthread_create`, never the green-thread hook: a pool thread must
/// be an OS thread even when the job comes from a coroutine.
static PTHREAD_CREATE: Original = Original::new(c"pthread_create");

pub(crate) type Start = extern "C" fn(*mut c_void) -> *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    Start,
    *mut c_void,
) -> libc::c_int;

/// Blocks every asynchronous signal on a runtime thread (the pool's, the
/// monitor's): they stay with the program's threads; faults are still
/// delivered here, where they happen. Fewer than `signals::FAULTS`: SIGTRAP
/// stays blocked, these threads running only the runtime's own code and the
/// system calls handed to them, never a program's breakpoint.
pub(crate) fn keep_signals_away() {
    // SAFETY: a local set, filled and passed by pointer; masks only this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
    }
}

extern "C" fn thread_main(pool: *mut c_void) -> *mut c_void {
    keep_signals_away();
    // SAFETY: `start_thread` passes a leaked `&'static Pool`.
    let pool = unsafe { &*pool.cast::<Pool>() };
    pool.serve();
    ptr::null_mut()
}

fn start_thread(pool: &'static Pool) -> bool {
    start_native(thread_main, pool as *const Pool as *mut c_void)
}

/// Starts a detached OS thread running `start(arg)` with the real
/// `pthread_create`; false if none could be started.
pub(crate) fn start_native(start: Start, arg: *mut c_void) -> bool {
    let Some(addr) = PTHREAD_CREATE.addr() else {
        return false;
    };
    // SAFETY: dlsym found libc's pthread_create, whose signature this is.
    let create = unsafe { std::mem::transmute::<usize, CreateFn>(addr) };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `start` takes `arg` as its caller promised.
    if unsafe { create(&mut thread, ptr::null(), start, arg) } != 0 {
        return false;
    }
    // SAFETY: a thread we just created and never join.
    unsafe { libc::pthread_detach(thread) };
    true
}

/// Runs `job` on a pool thread while the running coroutine parks, and returns
/// its value. The job starts with the caller's errno and the caller gets the
/// errno the job left. None, without running it, outside a coroutine: the
/// caller then makes the call itself.
///
/// If no pool thread exists and none can be started, the job runs here,
/// blocking this thread as the call would have without patchall.
///
/// # Safety
/// `job` runs on another OS thread: it may use memory the caller keeps alive
/// across this call (this call returns only after the job has finished), but
/// not the caller's thread-locals beyond errno, and it must not unwind.
pub(crate) unsafe fn run<R>(job: impl FnOnce() -> R) -> Option<R> {
    if !in_coroutine() {
        return None;
    }
    let caller_errno = errno();
    let mut job = Some(job);
    let mut out = None;
    {
        let mut work = || {
            if let Some(job) = job.take() {
                set_errno(caller_errno);
                let value = job();
                out = Some((value, errno()));
            }
        };
        let local: &mut (dyn FnMut() + '_) = &mut work;
        // SAFETY: only the lifetime is erased; `done.wait()` below returns
        // after the pool thread's last use of the closure, before `work` ends.
        let erased: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(local) };
        let done = Arc::new(Completion(Mutex::new(Progress::Running(None))));
        match pool().submit(Job {
            work: erased,
            done: done.clone(),
        }) {
            Ok(()) => done.wait(),
            Err(_) => work(),
        }
    }
    let (value, job_errno) = out.expect("a finished job stored its value");
    set_errno(job_errno);
    Some(value)
}

/// How many calls coroutines have handed to the offload pool since the
/// process started (DNS lookups, file calls, waits): for tests, benchmarks and
/// monitoring.
pub fn offloaded_calls() -> u64 {
    JOBS_RUN.load(Ordering::Relaxed)
}

/// In the child of `fork`: the pool's threads do not exist here, and its lock
/// may have been held by one of them. Start over; the old pool is leaked.
pub(crate) fn after_fork_child() {
    POOL.store(ptr::null_mut(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn thread_id() -> libc::pid_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    #[test]
    fn outside_a_coroutine_nothing_is_offloaded() {
        // SAFETY: the job borrows nothing.
        assert!(unsafe { run(|| 1) }.is_none());
    }

    #[test]
    fn jobs_run_elsewhere_carry_errno_and_borrow_the_callers_memory() {
        let h = crate::spawn(|| {
            let mut buf = [0u8; 4];
            set_errno(libc::ENOENT);
            let me = thread_id();
            // SAFETY: the job writes into `buf`, alive across the call.
            let (tid, seen, plain) = unsafe {
                run(|| {
                    buf.copy_from_slice(b"done");
                    let seen = errno();
                    set_errno(libc::EXDEV);
                    (thread_id(), seen, !in_coroutine())
                })
            }
            .unwrap();
            (tid != me, seen, errno(), buf, plain)
        })
        .unwrap();
        let (elsewhere, seen, after, buf, plain) = h.join().unwrap();
        assert!(elsewhere, "the job ran on the calling thread");
        assert!(plain, "the job ran in a coroutine: hooks would not forward");
        assert_eq!(seen, libc::ENOENT, "the job starts with the caller's errno");
        assert_eq!(after, libc::EXDEV, "the caller gets the job's errno");
        assert_eq!(&buf, b"done");
    }

    #[test]
    fn parked_callers_let_others_run_and_jobs_overlap() {
        const N: usize = 8;
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = crate::spawn(move || {
            for _ in 0..40 {
                t.fetch_add(1, Ordering::SeqCst);
                crate::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();
        let start = Instant::now();
        let sleepers: Vec<_> = (0..N)
            .map(|_| {
                crate::spawn(|| {
                    // SAFETY: the job borrows nothing; a real blocking sleep.
                    unsafe {
                        run(|| {
                            std::thread::sleep(Duration::from_millis(150));
                        })
                    }
                    .unwrap()
                })
                .unwrap()
            })
            .collect();
        crate::join_all(sleepers);
        let took = start.elapsed();
        let during = ticks.load(Ordering::SeqCst);
        ticker.join().unwrap();
        assert!(during >= 5, "the ticker stalled: {during} ticks");
        // Eight 150 ms sleeps in a row would take 1.2 s.
        assert!(
            took < Duration::from_millis(900),
            "jobs did not overlap: {took:?}"
        );
    }

    #[test]
    fn a_cancelled_caller_waits_for_its_job() {
        let h = crate::spawn(|| {
            let (handle, home) = crate::runtime::control::current_handle().unwrap();
            let mut buf = vec![0u8; 16];
            let canceller = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                handle.cancel(&home);
            });
            let ptr = buf.as_mut_ptr() as usize;
            // SAFETY: the job writes `buf`, alive until `run` returns.
            unsafe {
                run(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    std::ptr::write_bytes(ptr as *mut u8, 7, 16);
                })
            };
            canceller.join().unwrap();
            (crate::runtime::control::cancel_requested(), buf)
        })
        .unwrap();
        let (pending, buf) = h.join().unwrap();
        assert!(pending, "the cancellation is left for the next park");
        assert_eq!(buf, vec![7u8; 16], "returned before the job finished");
    }
}
