/* pthread barriers: one serial thread per round, reuse, sleepy arrivals. */
#include "sync_kit.h"

static pthread_barrier_t b;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int serial, passed, before;

static void *arrive(void *arg)
{
    long rounds = (long)arg;
    for (long r = 0; r < rounds; r++) {
        pthread_mutex_lock(&m);
        before++;
        pthread_mutex_unlock(&m);
        int x = pthread_barrier_wait(&b);
        pthread_mutex_lock(&m);
        if (x == PTHREAD_BARRIER_SERIAL_THREAD)
            serial++;
        else if (x != 0)
            say("barrier_wait = %s", ename(x));
        passed++;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void run(int threads, long rounds)
{
    MUST(pthread_barrier_init(&b, NULL, threads) == 0);
    pthread_t t[32];
    for (int i = 0; i < threads; i++)
        t[i] = spawn(arrive, (void *)rounds);
    for (int i = 0; i < threads; i++)
        join(t[i]);
    say("serial = %d passed = %d", serial, passed);
    PCALL("destroy", pthread_barrier_destroy(&b));
}

static void four_threads(void)
{
    run(4, 1);
}

static void reuse_five_rounds(void)
{
    run(3, 5);
}

static void sixteen_threads(void)
{
    run(16, 3);
}

static void count_one(void)
{
    MUST(pthread_barrier_init(&b, NULL, 1) == 0);
    int x = pthread_barrier_wait(&b);
    say("serial %s", x == PTHREAD_BARRIER_SERIAL_THREAD ? "yes" : "no");
    x = pthread_barrier_wait(&b);
    say("serial %s", x == PTHREAD_BARRIER_SERIAL_THREAD ? "yes" : "no");
}

static void count_zero_einval(void)
{
    PCALL("init 0", pthread_barrier_init(&b, NULL, 0));
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    PCALL("setpshared bad", pthread_barrierattr_setpshared(&a, 7));
    PCALL("setpshared private", pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
    PCALL("init 2", pthread_barrier_init(&b, &a, 2));
}

static void *late_arrival(void *arg)
{
    long ms = (long)arg;
    msleep(ms);
    pthread_mutex_lock(&m);
    before++;
    pthread_mutex_unlock(&m);
    pthread_barrier_wait(&b);
    pthread_mutex_lock(&m);
    if (before == 4)
        passed++;
    pthread_mutex_unlock(&m);
    return NULL;
}

/* Nobody leaves before the last (slowest) one arrives. */
static void sleepy_arrivals(void)
{
    MUST(pthread_barrier_init(&b, NULL, 4) == 0);
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        t[i] = spawn(late_arrival, (void *)(50 * (i + 1)));
    long long t0 = now_ms();
    pthread_mutex_lock(&m);
    before++;
    pthread_mutex_unlock(&m);
    pthread_barrier_wait(&b);
    say("main waited for the last %s", took(t0, 120, 4000));
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("threads that saw all four arrive = %d", passed);
}

static int pfd[2];

static void *arrive_then_write(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&b);
    MUST(write(pfd[1], "w", 1) == 1);
    return NULL;
}

/* Main takes part; a thread blocked at the barrier is released by main's arrival
 * after main was itself blocked in read. */
static void main_participates(void)
{
    MUST(pipe(pfd) == 0);
    MUST(pthread_barrier_init(&b, NULL, 2) == 0);
    pthread_t t = spawn(arrive_then_write, NULL);
    SETTLE();
    say("main arrives");
    int x = pthread_barrier_wait(&b);
    char c;
    CALL("main read", read(pfd[0], &c, 1));
    join(t);
    say("main got a result %s", x == 0 || x == PTHREAD_BARRIER_SERIAL_THREAD ? "yes" : "no");
}

static int phase_seen[3][3];

static void *phased(void *arg)
{
    long id = (long)arg;
    for (int p = 0; p < 3; p++) {
        phase_seen[id][p] = p;
        pthread_barrier_wait(&b);
        for (int j = 0; j < 3; j++)
            if (phase_seen[j][p] != p)
                say("thread %ld saw a stale phase", id);
        pthread_barrier_wait(&b);
    }
    return NULL;
}

/* Writes before the barrier are visible to all after it, phase after phase. */
static void phases_visible(void)
{
    memset(phase_seen, -1, sizeof phase_seen);
    MUST(pthread_barrier_init(&b, NULL, 3) == 0);
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        t[i] = spawn(phased, (void *)i);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("phases done");
}

DIFF_MAIN(S(four_threads), S(reuse_five_rounds), S(sixteen_threads), S(count_one),
          S(count_zero_einval), S(sleepy_arrivals), S(main_participates), S(phases_visible))
