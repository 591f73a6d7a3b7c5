/* Sleeps: every flavour, bad arguments, interrupted sleeps, yield order. */
#include "sync_kit.h"

static volatile sig_atomic_t hits;

static void h(int sig)
{
    (void)sig;
    hits++;
}

static void sleep_zero_and_one(void)
{
    CALL("sleep 0", sleep(0));
    long long t0 = now_ms();
    CALL("sleep 1", sleep(1));
    say("about a second %s", took(t0, 900, 4000));
}

static void usleep_forms(void)
{
    long long t0 = now_ms();
    CALL("usleep 0", usleep(0));
    CALL("usleep 100ms", usleep(100000));
    say("waited %s", took(t0, 90, 3000));
    t0 = now_ms();
    CALL("usleep 1s", usleep(1000000));
    say("waited %s", took(t0, 900, 4000));
}

static void nanosleep_forms(void)
{
    struct timespec ts = {0, 100000000L}, rem = {7, 7};
    long long t0 = now_ms();
    CALL("nanosleep", nanosleep(&ts, &rem));
    say("waited %s", took(t0, 90, 3000));
    CALL("nanosleep NULL rem", nanosleep(&(struct timespec){0, 1000000L}, NULL));
    CALL("nanosleep zero", nanosleep(&(struct timespec){0, 0}, NULL));
    CALL("nanosleep bad nsec", nanosleep(&(struct timespec){0, 1000000000L}, NULL));
    CALL("nanosleep neg nsec", nanosleep(&(struct timespec){0, -1}, NULL));
    CALL("nanosleep neg sec", nanosleep(&(struct timespec){-1, 0}, NULL));
}

/* clock_nanosleep returns the error number, errno untouched. */
static void clock_nanosleep_forms(void)
{
    struct timespec ts = {0, 100000000L};
    long long t0 = now_ms();
    PCALL("relative monotonic", clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL));
    say("waited %s", took(t0, 90, 3000));
    struct timespec abs = in_ms(CLOCK_MONOTONIC, 120);
    t0 = now_ms();
    PCALL("abstime monotonic", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL));
    say("waited %s", took(t0, 90, 3000));
    abs = in_ms(CLOCK_REALTIME, 120);
    t0 = now_ms();
    PCALL("abstime realtime", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &abs, NULL));
    say("waited %s", took(t0, 90, 3000));
    struct timespec past = {1, 0};
    t0 = now_ms();
    PCALL("abstime past", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &past, NULL));
    say("at once %s", took(t0, 0, 1000));
    errno = 0;
    PCALL("bad nsec", clock_nanosleep(CLOCK_MONOTONIC, 0, &(struct timespec){0, 1000000000L}, NULL));
    say("errno untouched %s", errno == 0 ? "yes" : "no");
    PCALL("thread cputime clock", clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &ts, NULL));
    PCALL("bad clock", clock_nanosleep(12345, 0, &ts, NULL));
    PCALL("boottime", clock_nanosleep(CLOCK_BOOTTIME, 0, &(struct timespec){0, 1000000L}, NULL));
}

static pthread_t target;

static void *kill_after_100ms(void *arg)
{
    (void)arg;
    msleep(100);
    pthread_kill(target, SIGUSR1);
    return NULL;
}

static void clock_nanosleep_eintr(void)
{
    on(SIGUSR1, h, SA_RESTART);
    target = pthread_self();
    pthread_t t = spawn(kill_after_100ms, NULL);
    struct timespec ts = {5, 0}, rem = {0, 0};
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &rem);
    say("relative: %s rem in (0,5s) %s handler %d", ename(r),
        rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0) ? "yes" : "no", (int)hits);
    join(t);
    t = spawn(kill_after_100ms, NULL);
    struct timespec abs = in_ms(CLOCK_MONOTONIC, 5000);
    rem.tv_sec = 77;
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, &rem);
    say("abstime: %s rem untouched %s handler %d", ename(r), rem.tv_sec == 77 ? "yes" : "no", (int)hits);
    join(t);
}

static void usleep_eintr(void)
{
    on(SIGUSR1, h, SA_RESTART);
    target = pthread_self();
    pthread_t t = spawn(kill_after_100ms, NULL);
    long long t0 = now_ms();
    CALL("usleep", usleep(3000000));
    say("cut short %s handler %d", took(t0, 50, 2500), (int)hits);
    join(t);
}

static void sleep_eintr_left(void)
{
    on(SIGUSR1, h, 0);
    target = pthread_self();
    pthread_t t = spawn(kill_after_100ms, NULL);
    unsigned left = sleep(4);
    say("sleep left in [1,4] %s handler %d", left >= 1 && left <= 4 ? "yes" : "no", (int)hits);
    join(t);
}

static volatile int turn;
static char order[64];
static int nord;

static void *yielder(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < 8; i++) {
        while (turn != me)
            sched_yield();
        order[__atomic_fetch_add(&nord, 1, __ATOMIC_SEQ_CST)] = (char)('a' + me);
        turn = (int)((me + 1) % 3);
    }
    return NULL;
}

/* Three threads take turns by spinning on a flag with sched_yield. */
static void sched_yield_round_robin(void)
{
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        t[i] = spawn(yielder, (void *)i);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("order %s", order);
}

static void *sleep_ms(void *arg)
{
    long ms = (long)arg;
    msleep(ms);
    say("woke after %ld", ms);
    return NULL;
}

/* Wake order follows the sleep lengths. */
static void wake_order(void)
{
    pthread_t t[3];
    long ms[3] = {300, 100, 200};
    for (int i = 0; i < 3; i++)
        t[i] = spawn(sleep_ms, (void *)ms[i]);
    for (int i = 0; i < 3; i++)
        join(t[i]);
}

static void *sleep_200(void *arg)
{
    (void)arg;
    usleep(200000);
    return NULL;
}

/* Twenty threads sleeping 200 ms each sleep at the same time. */
static void concurrent_sleepers(void)
{
    pthread_t t[20];
    long long t0 = now_ms();
    for (int i = 0; i < 20; i++)
        t[i] = spawn(sleep_200, NULL);
    for (int i = 0; i < 20; i++)
        join(t[i]);
    say("together %s", took(t0, 180, 2000));
}

static int pfd[2];

static void *sleeper_then_write(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 150000000L};
    nanosleep(&ts, NULL);
    say("t: woke, writing");
    MUST(write(pfd[1], "z", 1) == 1);
    return NULL;
}

static void sleep_while_main_reads(void)
{
    MUST(pipe(pfd) == 0);
    pthread_t t = spawn(sleeper_then_write, NULL);
    char c;
    say("main: reading");
    CALL("main: read", read(pfd[0], &c, 1));
    join(t);
}

static void *sleep_flavours(void *arg)
{
    long k = (long)arg;
    switch (k) {
    case 0: sleep(1); break;
    case 1: usleep(500000); break;
    case 2: nanosleep(&(struct timespec){0, 700000000L}, NULL); break;
    default: clock_nanosleep(CLOCK_MONOTONIC, 0, &(struct timespec){0, 300000000L}, NULL); break;
    }
    return (void *)k;
}

/* The four sleep calls in four threads at once, woken in length order. */
static void mixed_flavours(void)
{
    pthread_t t[4];
    long long t0 = now_ms();
    for (long i = 0; i < 4; i++)
        t[i] = spawn(sleep_flavours, (void *)i);
    long sum = 0;
    for (int i = 0; i < 4; i++)
        sum += (long)join(t[i]);
    say("sum %ld all within about a second %s", sum, took(t0, 900, 3000));
}

static void select_poll_as_sleep(void)
{
    long long t0 = now_ms();
    struct timeval tv = {0, 100000};
    CALL("select no fds", select(0, NULL, NULL, NULL, &tv));
    say("waited %s, timeval zeroed %s", took(t0, 90, 3000), tv.tv_sec == 0 && tv.tv_usec == 0 ? "yes" : "no");
    t0 = now_ms();
    CALL("poll no fds", poll(NULL, 0, 100));
    say("waited %s", took(t0, 90, 3000));
}

static void *cpu_spin(void *arg)
{
    (void)arg;
    long long t0 = now_ms();
    volatile unsigned long n = 0;
    while (now_ms() - t0 < 300)
        n++;
    return NULL;
}

/* A sleeper wakes on time even while a thread computes without calls
 * (green threads on one worker: only if the computer yields; it does not). */
static void sleeper_vs_cpu_hog(void)
{
    pthread_t hog = spawn(cpu_spin, NULL);
    long long t0 = now_ms();
    msleep(50);
    say("sleeper woke within 250 ms %s", took(t0, 40, 250));
    join(hog);
}

DIFF_MAIN(S(sleep_zero_and_one), S(usleep_forms), S(nanosleep_forms), S(clock_nanosleep_forms),
          S(clock_nanosleep_eintr), S(usleep_eintr), S(sleep_eintr_left), S(sched_yield_round_robin),
          S(wake_order), S(concurrent_sleepers), S(sleep_while_main_reads), S(mixed_flavours),
          S(select_poll_as_sleep), S(sleeper_vs_cpu_hog))
