/*
 * patchall.h - the C API of patchall: coroutines in which blocking libc calls
 * (read, write, recv, send, accept, connect, poll, sleep...) park the coroutine
 * instead of the thread.
 *
 * Link with -lpatchall (libpatchall.so). Because libpatchall.so then comes
 * before libc in the program's link order, its definitions of read, recv,
 * connect... are the ones the program's calls bind to: the hooks are in force
 * without LD_PRELOAD. Outside a coroutine every hooked call is exactly the libc
 * call (same result, same errno).
 *
 * Threads. Each OS thread has its own scheduler, created on first use. A
 * coroutine runs on the thread that spawned it and never moves. Coroutines run
 * only while their thread waits: a coroutine parks in a hooked call, pa_sleep_*,
 * pa_yield or pa_join; a plain thread (not a coroutine) drives its scheduler
 * while it is inside pa_join, pa_run, pa_sleep_* or pa_yield. A thread that
 * never waits never runs its coroutines.
 *
 * Any thread may pa_join or pa_detach any coroutine. When main returns, the
 * process exits as with pthreads, whatever coroutines remain: call pa_run (or
 * join them) first.
 *
 * Errors are returned, never raised: functions return 0 or an errno value and
 * leave errno alone, except pa_spawn, which returns 0 and sets errno. Nothing
 * here aborts the process; ENOTRECOVERABLE means a bug inside patchall was
 * caught at the boundary (please report it).
 *
 * The same coroutines are spawned by the Rust crate (patchall::spawn): a
 * program may mix both.
 */
#ifndef PATCHALL_H
#define PATCHALL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A coroutine's id: unique in the process, never reused, never 0. An id that
 * names no joinable coroutine (joined, detached, garbage) gives ESRCH; it can
 * never reach another coroutine.
 */
typedef uint64_t pa_coroutine_t;

/* How to spawn a coroutine. Zero-initialise, then set what you need. */
typedef struct pa_options {
    /* A name shown in stack-overflow reports; copied at spawn. NULL: none. */
    const char *name;
    /*
     * Usable stack bytes, rounded up to whole pages and to at least 16 KiB.
     * 0: PATCHALL_STACK_SIZE (default 256 KiB). The stack is address space,
     * committed only as touched.
     */
    size_t stack_size;
} pa_options;

/*
 * Starts start(arg) as a new coroutine on the calling thread's scheduler.
 * It first runs when this thread next waits (see "Threads" above). opts may be
 * NULL for the defaults. start must return normally: no longjmp out of it, no
 * pthread_exit inside it.
 *
 * Returns the new coroutine's id, or 0 with errno set:
 *   EINVAL  start is NULL;
 *   ENOMEM  no memory for the stack (e.g. an enormous stack_size);
 *   EAGAIN  another resource is exhausted (e.g. no fd for the scheduler).
 *
 * The coroutine is joinable: pa_join or pa_detach it once, or its result slot
 * (a few dozen bytes) stays allocated until the process exits.
 */
pa_coroutine_t pa_spawn(void *(*start)(void *arg), void *arg, const pa_options *opts);

/*
 * Waits until coroutine co has returned, stores its return value in *retval
 * (if retval is not NULL) and forgets co. Inside a coroutine, parks only the
 * caller; on a plain thread, drives this thread's scheduler until co is done.
 *
 * Returns 0, or:
 *   ESRCH            no joinable coroutine co (never spawned, already joined,
 *                    detached);
 *   EDEADLK          co is the calling coroutine;
 *   ENOTRECOVERABLE  co ended through a bug inside patchall.
 * Two callers joining the same coroutine: one gets the result, the other ESRCH.
 */
int pa_join(pa_coroutine_t co, void **retval);

/*
 * Gives up the right to join co: it runs to completion on its own and its
 * return value is discarded. Returns 0, or ESRCH as pa_join.
 */
int pa_detach(pa_coroutine_t co);

/*
 * Sleeps for ms milliseconds (pa_sleep_ms) or ns nanoseconds (pa_sleep_ns):
 * inside a coroutine, parks it; on a plain thread, runs this thread's
 * coroutines until the time has passed. Returns 0 (ENOTRECOVERABLE on a bug).
 * Not interrupted by signals.
 */
int pa_sleep_ms(uint64_t ms);
int pa_sleep_ns(uint64_t ns);

/*
 * Lets every other runnable coroutine of this thread run once before the
 * caller continues. On a plain thread, runs the coroutines that are runnable
 * now. Returns 0.
 */
int pa_yield(void);

/* The calling coroutine's id, or 0 on a plain thread. */
pa_coroutine_t pa_self(void);

/* 1 when called inside a coroutine, 0 elsewhere. */
int pa_in_coroutine(void);

/*
 * On a plain thread: runs this thread's coroutines until every one of them,
 * and every one they spawn, has finished. Returns 0. Inside a coroutine it
 * would wait for itself: returns EDEADLK at once.
 */
int pa_run(void);

/*
 * Writes a list of every scheduler (worker thread) and every live coroutine
 * of the process to fd: id, name or start routine, state (running, runnable,
 * parked) and, for a parked one, the call it waits in (read, recv, accept,
 * mutex, join, sleep...), its fd and direction, address or deadline, and for
 * how long. The same text PATCHALL_DUMP_SIGNAL prints on stderr; see
 * docs/hangs.md. Safe to call anywhere: in a coroutine it parks while other
 * worker threads answer (at most a second each). Wait times
 * are known for waits that began once timing was on: from the start with
 * PATCHALL_DUMP_SIGNAL, PATCHALL_DUMP or PATCHALL_STATS set, else from the
 * first call of this function on.
 * Returns 0, or the errno value of a failed write (errno is left alone).
 */
int pa_print_run_info(int fd);

#ifdef __cplusplus
}
#endif

#endif /* PATCHALL_H */
