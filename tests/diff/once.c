/* pthread_once: once among many, a slow init, nested onces. */
#include "sync_kit.h"

static pthread_once_t once = PTHREAD_ONCE_INIT, once2 = PTHREAD_ONCE_INIT;
static int runs, value, saw_value;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

static void init_fast(void)
{
    runs++;
    value = 7;
}

static void *call_once_fast(void *arg)
{
    (void)arg;
    pthread_once(&once, init_fast);
    pthread_mutex_lock(&m);
    if (value == 7)
        saw_value++;
    pthread_mutex_unlock(&m);
    return NULL;
}

static void once_among_eight(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = spawn(call_once_fast, NULL);
    for (int i = 0; i < 8; i++)
        join(t[i]);
    PCALL("main once", pthread_once(&once, init_fast));
    say("runs = %d saw = %d", runs, saw_value);
}

static void init_slow(void)
{
    say("init: start");
    msleep(150);
    runs++;
    value = 9;
    say("init: end");
}

static void *call_once_slow(void *arg)
{
    (void)arg;
    pthread_once(&once, init_slow);
    pthread_mutex_lock(&m);
    if (value == 9)
        saw_value++;
    pthread_mutex_unlock(&m);
    return NULL;
}

/* Others wait until the (sleeping) init routine is done. */
static void slow_init_waits(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn(call_once_slow, NULL);
    for (int i = 0; i < 4; i++)
        join(t[i]);
    say("runs = %d saw = %d", runs, saw_value);
}

static void inner(void)
{
    say("inner");
    runs++;
}

static void outer(void)
{
    say("outer: start");
    pthread_once(&once2, inner);
    say("outer: end");
    runs++;
}

static void nested_onces(void)
{
    pthread_once(&once, outer);
    pthread_once(&once, outer);
    pthread_once(&once2, inner);
    say("runs = %d", runs);
}

static void *helper(void *arg)
{
    (void)arg;
    say("helper runs");
    return (void *)5L;
}

static void init_spawns(void)
{
    long r = (long)join(spawn(helper, NULL));
    say("init joined helper = %ld", r);
    runs++;
}

static void *call_once_spawner(void *arg)
{
    (void)arg;
    pthread_once(&once, init_spawns);
    return NULL;
}

/* The init routine itself starts and joins a thread. */
static void init_starts_thread(void)
{
    pthread_t a = spawn(call_once_spawner, NULL);
    pthread_t b = spawn(call_once_spawner, NULL);
    join(a);
    join(b);
    say("runs = %d", runs);
}

static int io[2];

static void init_reads(void)
{
    char c;
    say("init: reading");
    CALL("init: read", read(io[0], &c, 1));
    runs++;
}

static void *call_once_reader(void *arg)
{
    (void)arg;
    pthread_once(&once, init_reads);
    return NULL;
}

/* The init routine blocks in read; main feeds it while another caller waits. */
static void init_blocks_in_read(void)
{
    MUST(pipe(io) == 0);
    pthread_t a = spawn(call_once_reader, NULL);
    pthread_t b = spawn(call_once_reader, NULL);
    msleep(150);
    say("main: writing");
    MUST(write(io[1], "x", 1) == 1);
    join(a);
    join(b);
    say("runs = %d", runs);
}

static void init_cancelled(void)
{
    runs++;
    say("init %d: cancels itself", runs);
    pthread_cancel(pthread_self());
    pthread_testcancel();
    say("not reached");
}

static void init_second_try(void)
{
    runs++;
    say("init %d", runs);
}

static void *call_once_cancel(void *arg)
{
    (void)arg;
    pthread_once(&once, init_cancelled);
    return NULL;
}

/* A cancelled init routine leaves the once not done: the next caller runs init. */
static void cancelled_init_retried(void)
{
    void *r = join(spawn(call_once_cancel, NULL));
    say("first caller %s", r == PTHREAD_CANCELED ? "cancelled" : "returned");
    pthread_once(&once, init_second_try);
    say("runs = %d", runs);
}

DIFF_MAIN(S(once_among_eight), S(slow_init_waits), S(nested_onces), S(init_starts_thread),
          S(init_blocks_in_read), S(cancelled_init_retried))
