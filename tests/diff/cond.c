/* Condition variables: signal/broadcast, timed and clock waits, handshakes. */
#include "sync_kit.h"

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go, woken, arrived;

static void *wait_for_go(void *arg)
{
    long id = (long)arg;
    pthread_mutex_lock(&m);
    arrived++;
    pthread_cond_broadcast(&c);
    while (!go)
        pthread_cond_wait(&c, &m);
    go--;
    woken++;
    pthread_mutex_unlock(&m);
    (void)id;
    return NULL;
}

static void wait_arrivals(int n)
{
    pthread_mutex_lock(&m);
    while (arrived < n)
        pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
}

static void signal_one_waiter(void)
{
    pthread_t t = spawn(wait_for_go, NULL);
    wait_arrivals(1);
    SETTLE();
    pthread_mutex_lock(&m);
    say("woken before = %d", woken);
    go = 1;
    PCALL("signal", pthread_cond_signal(&c));
    pthread_mutex_unlock(&m);
    join(t);
    say("woken after = %d", woken);
}

static void broadcast_three(void)
{
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        t[i] = spawn(wait_for_go, (void *)i);
    wait_arrivals(3);
    SETTLE();
    pthread_mutex_lock(&m);
    go = 3;
    PCALL("broadcast", pthread_cond_broadcast(&c));
    pthread_mutex_unlock(&m);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("woken = %d", woken);
}

static pthread_cond_t c2 = PTHREAD_COND_INITIALIZER;

static void *wait_c2(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    arrived++;
    pthread_cond_signal(&c);
    while (!go)
        pthread_cond_wait(&c2, &m);
    go--;
    woken++;
    pthread_mutex_unlock(&m);
    return NULL;
}

/* One signal with a token wakes exactly one of three; broadcast the rest. */
static void signal_wakes_one(void)
{
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        t[i] = spawn(wait_c2, NULL);
    wait_arrivals(3);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c2);
    pthread_mutex_unlock(&m);
    msleep(200);
    pthread_mutex_lock(&m);
    say("after signal woken = %d", woken);
    go = 2;
    pthread_cond_broadcast(&c2);
    pthread_mutex_unlock(&m);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("after broadcast woken = %d", woken);
}

static void timedwait_timeout(void)
{
    pthread_mutex_lock(&m);
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    PCALL("timedwait", pthread_cond_timedwait(&c, &m, &d));
    say("waited %s", took(t0, 120, 3000));
    PCALL("mutex held: trylock", pthread_mutex_trylock(&m));
    pthread_mutex_unlock(&m);
}

static void timedwait_past_and_bad(void)
{
    pthread_mutex_lock(&m);
    struct timespec past = {1, 0};
    struct timespec bad = {time(NULL) + 5, 1000000000L};
    long long t0 = now_ms();
    PCALL("past", pthread_cond_timedwait(&c, &m, &past));
    say("at once %s", took(t0, 0, 1000));
    PCALL("bad nsec", pthread_cond_timedwait(&c, &m, &bad));
    PCALL("neg nsec", pthread_cond_timedwait(&c, &m, &(struct timespec){time(NULL) + 5, -1}));
    pthread_mutex_unlock(&m);
}

static void clockwait_clocks(void)
{
    pthread_mutex_lock(&m);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 150);
    long long t0 = now_ms();
    PCALL("clockwait monotonic", pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 120, 3000));
    d = in_ms(CLOCK_REALTIME, 100);
    t0 = now_ms();
    PCALL("clockwait realtime", pthread_cond_clockwait(&c, &m, CLOCK_REALTIME, &d));
    say("waited %s", took(t0, 80, 3000));
    PCALL("clockwait cputime", pthread_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &d));
    pthread_mutex_unlock(&m);
}

/* A CLOCK_MONOTONIC condattr: timedwait reads its deadline on that clock. */
static void condattr_monotonic(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    PCALL("setclock monotonic", pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
    PCALL("setclock cputime", pthread_condattr_setclock(&a, CLOCK_PROCESS_CPUTIME_ID));
    clockid_t ck;
    pthread_condattr_getclock(&a, &ck);
    say("clock monotonic %s", ck == CLOCK_MONOTONIC ? "yes" : "no");
    pthread_cond_t mc;
    MUST(pthread_cond_init(&mc, &a) == 0);
    pthread_mutex_lock(&m);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 150);
    long long t0 = now_ms();
    PCALL("timedwait", pthread_cond_timedwait(&mc, &m, &d));
    say("waited %s", took(t0, 120, 3000));
    pthread_mutex_unlock(&m);
}

static void *signal_after_100ms(void *arg)
{
    pthread_cond_t *cv = arg;
    msleep(100);
    pthread_mutex_lock(&m);
    go = 1;
    say("t: signalling");
    pthread_cond_signal(cv);
    pthread_mutex_unlock(&m);
    return NULL;
}

static void monotonic_signalled_in_time(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_t mc;
    MUST(pthread_cond_init(&mc, &a) == 0);
    pthread_mutex_lock(&m);
    pthread_t t = spawn(signal_after_100ms, &mc);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 5000);
    long long t0 = now_ms();
    int r = 0;
    while (!go && r == 0)
        r = pthread_cond_timedwait(&mc, &m, &d);
    say("timedwait = %s go = %d early %s", ename(r), go, took(t0, 50, 4000));
    pthread_mutex_unlock(&m);
    join(t);
}

static void timedwait_signalled_in_time(void)
{
    pthread_mutex_lock(&m);
    pthread_t t = spawn(signal_after_100ms, &c);
    struct timespec d = in_ms(CLOCK_REALTIME, 5000);
    long long t0 = now_ms();
    int r = 0;
    while (!go && r == 0)
        r = pthread_cond_timedwait(&c, &m, &d);
    say("timedwait = %s go = %d early %s", ename(r), go, took(t0, 50, 4000));
    pthread_mutex_unlock(&m);
    join(t);
}

static int turn;
static long rounds;

static void *ping_pong(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&m);
        while (turn != me)
            pthread_cond_wait(&c, &m);
        rounds++;
        turn = !me;
        pthread_cond_signal(&c);
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void ping_pong_500(void)
{
    pthread_t a = spawn(ping_pong, (void *)0L);
    pthread_t b = spawn(ping_pong, (void *)1L);
    join(a);
    join(b);
    say("rounds = %ld turn = %d", rounds, turn);
}

#define QN 4
static int q[QN], qh, qt, qn;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static long total;

static void *producer(void *arg)
{
    long base = (long)arg;
    for (int i = 1; i <= 1000; i++) {
        pthread_mutex_lock(&m);
        while (qn == QN)
            pthread_cond_wait(&not_full, &m);
        q[qt] = base + i;
        qt = (qt + 1) % QN;
        qn++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&m);
        while (qn == 0)
            pthread_cond_wait(&not_empty, &m);
        total += q[qh];
        qh = (qh + 1) % QN;
        qn--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void bounded_queue(void)
{
    pthread_t t[4];
    t[0] = spawn(producer, (void *)0L);
    t[1] = spawn(producer, (void *)100000L);
    t[2] = spawn(consumer, NULL);
    t[3] = spawn(consumer, NULL);
    for (int i = 0; i < 4; i++)
        join(t[i]);
    say("total = %ld left = %d", total, qn);
}

static void *try_held(void *arg)
{
    (void)arg;
    SETTLE();
    PCALL("t: trylock while main waits", pthread_mutex_trylock(&m));
    pthread_mutex_unlock(&m);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c);
    pthread_mutex_unlock(&m);
    return NULL;
}

/* The wait releases the mutex, and holds it again when it returns. */
static void wait_releases_mutex(void)
{
    pthread_mutex_lock(&m);
    pthread_t t = spawn(try_held, NULL);
    while (!go)
        pthread_cond_wait(&c, &m);
    join(t);
    PCALL("main: trylock after wait (recursive? no)", pthread_mutex_trylock(&m));
    pthread_mutex_unlock(&m);
}

static void broadcast_no_waiters_not_kept(void)
{
    PCALL("broadcast", pthread_cond_broadcast(&c));
    PCALL("signal", pthread_cond_signal(&c));
    pthread_mutex_lock(&m);
    struct timespec d = in_ms(CLOCK_REALTIME, 100);
    PCALL("timedwait afterwards", pthread_cond_timedwait(&c, &m, &d));
    pthread_mutex_unlock(&m);
}

static void *signal_recursive(void *arg)
{
    pthread_mutex_t *rm = arg;
    pthread_mutex_lock(rm);
    go = 1;
    pthread_cond_signal(&c);
    pthread_mutex_unlock(rm);
    return NULL;
}

static void recursive_mutex_wait(void)
{
    pthread_mutex_t rm;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rm, &a);
    pthread_mutex_lock(&rm);
    pthread_t t = spawn(signal_recursive, &rm);
    while (!go)
        PCALL("wait", pthread_cond_wait(&c, &rm));
    PCALL("unlock", pthread_mutex_unlock(&rm));
    join(t);
}

static void errorcheck_not_owner(void)
{
    pthread_mutex_t em;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&em, &a);
    struct timespec d = in_ms(CLOCK_REALTIME, 100);
    PCALL("timedwait unowned errorcheck", pthread_cond_timedwait(&c, &em, &d));
}

static int pipefd[2];

static void *waiter_then_io(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    while (!go)
        pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    say("t: woken, writing");
    MUST(write(pipefd[1], "x", 1) == 1);
    return NULL;
}

/* Main blocks in read while a thread waits on a cond; a third signals. */
static void cond_then_pipe(void)
{
    MUST(pipe(pipefd) == 0);
    pthread_t t = spawn(waiter_then_io, NULL);
    pthread_t s = spawn(signal_after_100ms, &c);
    char b;
    say("main: reading");
    CALL("main: read", read(pipefd[0], &b, 1));
    join(t);
    join(s);
}

static void *wait_and_count(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    arrived++;
    pthread_cond_broadcast(&c2);
    while (go == 0)
        pthread_cond_wait(&c, &m);
    woken++;
    pthread_mutex_unlock(&m);
    return NULL;
}

/* Twenty waiters, one broadcast. */
static void broadcast_twenty(void)
{
    pthread_t t[20];
    for (int i = 0; i < 20; i++)
        t[i] = spawn(wait_and_count, NULL);
    pthread_mutex_lock(&m);
    while (arrived < 20)
        pthread_cond_wait(&c2, &m);
    go = 1;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    for (int i = 0; i < 20; i++)
        join(t[i]);
    say("woken = %d", woken);
}

static void destroy_then_reinit(void)
{
    pthread_cond_t lc;
    PCALL("init", pthread_cond_init(&lc, NULL));
    PCALL("signal", pthread_cond_signal(&lc));
    PCALL("destroy", pthread_cond_destroy(&lc));
    PCALL("init", pthread_cond_init(&lc, NULL));
    pthread_mutex_lock(&m);
    struct timespec d = in_ms(CLOCK_REALTIME, 50);
    PCALL("timedwait", pthread_cond_timedwait(&lc, &m, &d));
    pthread_mutex_unlock(&m);
    PCALL("destroy", pthread_cond_destroy(&lc));
}

DIFF_MAIN(S(signal_one_waiter), S(broadcast_three), S(signal_wakes_one), S(timedwait_timeout),
          S(timedwait_past_and_bad), S(clockwait_clocks), S(condattr_monotonic),
          S(monotonic_signalled_in_time), S(timedwait_signalled_in_time), S(ping_pong_500),
          S(bounded_queue), S(wait_releases_mutex), S(broadcast_no_waiters_not_kept),
          S(recursive_mutex_wait), S(errorcheck_not_owner), S(cond_then_pipe),
          S(broadcast_twenty), S(destroy_then_reinit))
