/* C11 threads: thrd_, mtx_, cnd_, tss_, call_once. */
#include "sync_kit.h"

#include <threads.h>

static mtx_t mx;
static cnd_t cv;
static int go, woken;
static long counter;

static int ret_arg(void *arg)
{
    return (int)(long)arg * 2;
}

static void create_join_result(void)
{
    thrd_t t;
    say("create %s", thrd_create(&t, ret_arg, (void *)21L) == thrd_success ? "ok" : "fail");
    int r = -1;
    say("join %s res = %d", thrd_join(t, &r) == thrd_success ? "ok" : "fail", r);
}

static int count_up(void *arg)
{
    for (long i = 0; i < (long)arg; i++) {
        mtx_lock(&mx);
        counter++;
        mtx_unlock(&mx);
    }
    return 0;
}

static void mtx_plain_counter(void)
{
    MUST(mtx_init(&mx, mtx_plain) == thrd_success);
    thrd_t t[4];
    for (int i = 0; i < 4; i++)
        MUST(thrd_create(&t[i], count_up, (void *)10000L) == thrd_success);
    for (int i = 0; i < 4; i++)
        thrd_join(t[i], NULL);
    say("counter = %ld", counter);
    mtx_destroy(&mx);
}

static const char *res(int r)
{
    switch (r) {
    case thrd_success: return "success";
    case thrd_busy: return "busy";
    case thrd_timedout: return "timedout";
    case thrd_nomem: return "nomem";
    default: return "error";
    }
}

static struct gate g1, g2;

static int hold_mx(void *arg)
{
    (void)arg;
    mtx_lock(&mx);
    gate_open(&g1);
    gate_wait(&g2);
    mtx_unlock(&mx);
    return 0;
}

static void mtx_timed_timeout(void)
{
    MUST(mtx_init(&mx, mtx_timed) == thrd_success);
    gate_init(&g1);
    gate_init(&g2);
    thrd_t t;
    thrd_create(&t, hold_mx, NULL);
    gate_wait(&g1);
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    say("timedlock %s", res(mtx_timedlock(&mx, &d)));
    say("waited %s", took(t0, 120, 3000));
    say("trylock %s", res(mtx_trylock(&mx)));
    gate_open(&g2);
    thrd_join(t, NULL);
    d = in_ms(CLOCK_REALTIME, 1000);
    say("timedlock free %s", res(mtx_timedlock(&mx, &d)));
    mtx_unlock(&mx);
}

static void mtx_recursive_kind(void)
{
    MUST(mtx_init(&mx, mtx_plain | mtx_recursive) == thrd_success);
    say("lock %s", res(mtx_lock(&mx)));
    say("lock %s", res(mtx_lock(&mx)));
    say("trylock %s", res(mtx_trylock(&mx)));
    mtx_unlock(&mx);
    mtx_unlock(&mx);
    say("unlock %s", res(mtx_unlock(&mx)));
}

static int wait_go(void *arg)
{
    (void)arg;
    mtx_lock(&mx);
    while (!go)
        cnd_wait(&cv, &mx);
    woken++;
    mtx_unlock(&mx);
    return 0;
}

static void cnd_signal_broadcast(void)
{
    mtx_init(&mx, mtx_plain);
    cnd_init(&cv);
    thrd_t t[3];
    for (int i = 0; i < 3; i++)
        thrd_create(&t[i], wait_go, NULL);
    msleep(100);
    mtx_lock(&mx);
    go = 1;
    say("broadcast %s", res(cnd_broadcast(&cv)));
    mtx_unlock(&mx);
    for (int i = 0; i < 3; i++)
        thrd_join(t[i], NULL);
    say("woken = %d", woken);
    say("signal none %s", res(cnd_signal(&cv)));
}

static void cnd_timedwait_timeout(void)
{
    mtx_init(&mx, mtx_plain);
    cnd_init(&cv);
    mtx_lock(&mx);
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    say("timedwait %s", res(cnd_timedwait(&cv, &mx, &d)));
    say("waited %s", took(t0, 120, 3000));
    mtx_unlock(&mx);
}

static void sleep_and_yield(void)
{
    struct timespec d = {0, 100000000L}, rem = {9, 9};
    long long t0 = now_ms();
    say("thrd_sleep = %d", thrd_sleep(&d, &rem));
    say("slept %s", took(t0, 80, 3000));
    thrd_yield();
    say("yielded");
}

static volatile int turn;
static int order[20], nord;

static int yielder(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < 10; i++) {
        while (turn != me)
            thrd_yield();
        order[nord++] = (int)me;
        turn = !me;
    }
    return 0;
}

/* Two threads alternate by spinning on a flag with thrd_yield. */
static void yield_ping_pong(void)
{
    thrd_t a, b;
    thrd_create(&a, yielder, (void *)0L);
    thrd_create(&b, yielder, (void *)1L);
    thrd_join(a, NULL);
    thrd_join(b, NULL);
    char s[32] = {0};
    for (int i = 0; i < 20; i++)
        s[i] = '0' + order[i];
    say("order %s", s);
}

static tss_t key;
static int dtor_runs;

static void dtor(void *v)
{
    __atomic_add_fetch(&dtor_runs, (int)(long)v, __ATOMIC_SEQ_CST);
}

static int set_tss(void *arg)
{
    tss_set(key, arg);
    msleep(50);
    return tss_get(key) == arg;
}

static void tss_destructors(void)
{
    MUST(tss_create(&key, dtor) == thrd_success);
    thrd_t t[3];
    for (long i = 0; i < 3; i++)
        thrd_create(&t[i], set_tss, (void *)(i + 1));
    int own = 0;
    for (int i = 0; i < 3; i++) {
        int r;
        thrd_join(t[i], &r);
        own += r;
    }
    say("own values kept = %d dtor sum = %d main value null %s", own, dtor_runs,
        tss_get(key) == NULL ? "yes" : "no");
}

static once_flag of = ONCE_FLAG_INIT;
static int once_runs;

static void once_fn(void)
{
    once_runs++;
    msleep(50);
}

static int once_caller(void *arg)
{
    (void)arg;
    call_once(&of, once_fn);
    return once_runs;
}

static void call_once_many(void)
{
    thrd_t t[4];
    for (int i = 0; i < 4; i++)
        thrd_create(&t[i], once_caller, NULL);
    int all = 1;
    for (int i = 0; i < 4; i++) {
        int r;
        thrd_join(t[i], &r);
        all &= r == 1;
    }
    say("runs = %d all saw it done %s", once_runs, all ? "yes" : "no");
}

static int exits_early(void *arg)
{
    (void)arg;
    thrd_exit(17);
}

static int current_equal(void *arg)
{
    thrd_t *other = arg;
    return thrd_equal(thrd_current(), *other) ? 1 : 2;
}

static void exit_detach_equal(void)
{
    thrd_t t;
    thrd_create(&t, exits_early, NULL);
    int r;
    thrd_join(t, &r);
    say("thrd_exit res = %d", r);
    thrd_t me = thrd_current();
    say("self equal %s", thrd_equal(me, thrd_current()) ? "yes" : "no");
    thrd_create(&t, current_equal, &me);
    thrd_join(t, &r);
    say("thread equal to main %s", r == 1 ? "yes" : "no");
    thrd_create(&t, exits_early, NULL);
    say("detach %s", res(thrd_detach(t)));
    msleep(50);
}

DIFF_MAIN(S(create_join_result), S(mtx_plain_counter), S(mtx_timed_timeout),
          S(mtx_recursive_kind), S(cnd_signal_broadcast), S(cnd_timedwait_timeout),
          S(sleep_and_yield), S(yield_ping_pong), S(tss_destructors), S(call_once_many),
          S(exit_detach_equal))
