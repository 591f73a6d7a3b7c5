/* pthread mutexes: every kind, try/timed/clock locks, contention. */
#include "sync_kit.h"

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static struct gate g1, g2;
static long counter;

static void init_kind(pthread_mutex_t *mx, int kind)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, kind);
    MUST(pthread_mutex_init(mx, &a) == 0);
    pthread_mutexattr_destroy(&a);
}

static void *lock_then_say(void *arg)
{
    (void)arg;
    say("t: locking");
    gate_open(&g1);
    pthread_mutex_lock(&m);
    say("t: locked");
    pthread_mutex_unlock(&m);
    return NULL;
}

/* A waiter blocks in lock until the holder unlocks. */
static void normal_contended(void)
{
    gate_init(&g1);
    pthread_mutex_lock(&m);
    pthread_t t = spawn(lock_then_say, NULL);
    gate_wait(&g1);
    SETTLE();
    say("main: unlock");
    pthread_mutex_unlock(&m);
    join(t);
    say("done");
}

static void errorcheck_relock(void)
{
    init_kind(&m, PTHREAD_MUTEX_ERRORCHECK);
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("relock", pthread_mutex_lock(&m));
    PCALL("trylock", pthread_mutex_trylock(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
    PCALL("unlock again", pthread_mutex_unlock(&m));
}

static void *unlock_foreign(void *arg)
{
    (void)arg;
    PCALL("t: unlock", pthread_mutex_unlock(&m));
    PCALL("t: trylock", pthread_mutex_trylock(&m));
    return NULL;
}

static void errorcheck_foreign_unlock(void)
{
    init_kind(&m, PTHREAD_MUTEX_ERRORCHECK);
    PCALL("lock", pthread_mutex_lock(&m));
    join(spawn(unlock_foreign, NULL));
    PCALL("unlock", pthread_mutex_unlock(&m));
}

static void *trylock_from_thread(void *arg)
{
    (void)arg;
    PCALL("t: trylock", pthread_mutex_trylock(&m));
    return NULL;
}

static void recursive_depth(void)
{
    init_kind(&m, PTHREAD_MUTEX_RECURSIVE);
    PCALL("lock 1", pthread_mutex_lock(&m));
    PCALL("lock 2", pthread_mutex_lock(&m));
    PCALL("trylock 3", pthread_mutex_trylock(&m));
    join(spawn(trylock_from_thread, NULL));
    PCALL("unlock 3", pthread_mutex_unlock(&m));
    PCALL("unlock 2", pthread_mutex_unlock(&m));
    join(spawn(unlock_foreign, NULL));
    PCALL("unlock 1", pthread_mutex_unlock(&m));
    PCALL("unlock 0", pthread_mutex_unlock(&m));
    join(spawn(trylock_from_thread, NULL));
}

static void static_initializers(void)
{
    static pthread_mutex_t r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    static pthread_mutex_t e = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    static pthread_mutex_t a = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
    PCALL("recursive lock", pthread_mutex_lock(&r));
    PCALL("recursive lock", pthread_mutex_lock(&r));
    PCALL("errorcheck lock", pthread_mutex_lock(&e));
    PCALL("errorcheck lock", pthread_mutex_lock(&e));
    PCALL("adaptive lock", pthread_mutex_lock(&a));
    PCALL("adaptive trylock", pthread_mutex_trylock(&a));
    PCALL("adaptive unlock", pthread_mutex_unlock(&a));
}

static void *hold_until_g2(void *arg)
{
    pthread_mutex_t *mx = arg ? arg : &m;
    pthread_mutex_lock(mx);
    say("t: holding");
    gate_open(&g1);
    gate_wait(&g2);
    say("t: releasing");
    pthread_mutex_unlock(mx);
    return NULL;
}

static void trylock_busy(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(hold_until_g2, NULL);
    gate_wait(&g1);
    PCALL("trylock", pthread_mutex_trylock(&m));
    gate_open(&g2);
    join(t);
    PCALL("trylock", pthread_mutex_trylock(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
}

static void timedlock_timeout(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(hold_until_g2, NULL);
    gate_wait(&g1);
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    PCALL("timedlock", pthread_mutex_timedlock(&m, &d));
    say("waited %s", took(t0, 120, 3000));
    gate_open(&g2);
    join(t);
}

static void *release_after_100ms(void *arg)
{
    pthread_mutex_t *mx = arg;
    pthread_mutex_lock(mx);
    gate_open(&g1);
    msleep(100);
    say("t: releasing");
    pthread_mutex_unlock(mx);
    return NULL;
}

static void timedlock_acquired(void)
{
    gate_init(&g1);
    pthread_t t = spawn(release_after_100ms, &m);
    gate_wait(&g1);
    struct timespec d = in_ms(CLOCK_REALTIME, 5000);
    long long t0 = now_ms();
    PCALL("timedlock", pthread_mutex_timedlock(&m, &d));
    say("waited %s", took(t0, 50, 4000));
    PCALL("unlock", pthread_mutex_unlock(&m));
    join(t);
}

static void clocklock_monotonic(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(hold_until_g2, NULL);
    gate_wait(&g1);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 150);
    long long t0 = now_ms();
    PCALL("clocklock monotonic", pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 120, 3000));
    d = in_ms(CLOCK_REALTIME, 100);
    t0 = now_ms();
    PCALL("clocklock realtime", pthread_mutex_clocklock(&m, CLOCK_REALTIME, &d));
    say("waited %s", took(t0, 80, 3000));
    PCALL("clocklock cputime", pthread_mutex_clocklock(&m, CLOCK_PROCESS_CPUTIME_ID, &d));
    gate_open(&g2);
    join(t);
}

static void timedlock_bad_and_past(void)
{
    struct timespec bad = {0, 2000000000L};
    struct timespec past = {1, 0};
    PCALL("free, bad nsec", pthread_mutex_timedlock(&m, &bad));
    PCALL("unlock", pthread_mutex_unlock(&m));
    PCALL("free, past", pthread_mutex_timedlock(&m, &past));
    PCALL("unlock", pthread_mutex_unlock(&m));
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(hold_until_g2, NULL);
    gate_wait(&g1);
    PCALL("held, bad nsec", pthread_mutex_timedlock(&m, &bad));
    long long t0 = now_ms();
    PCALL("held, past", pthread_mutex_timedlock(&m, &past));
    say("returned at once %s", took(t0, 0, 1000));
    gate_open(&g2);
    join(t);
}

static void *count_up(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&m);
        long v = counter;
        if (i % 1000 == 0)
            sched_yield();
        counter = v + 1;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void counter_four_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn(count_up, (void *)20000L);
    for (int i = 0; i < 4; i++)
        join(t[i]);
    say("counter = %ld", counter);
}

static int inside;
static int overlaps;

static void *sleepy_holder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++) {
        pthread_mutex_lock(&m);
        if (inside++)
            overlaps++;
        usleep(10000);
        counter++;
        inside--;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

/* Holders sleep while holding: waiters must not get in. */
static void holder_sleeps(void)
{
    pthread_t t[3];
    long long t0 = now_ms();
    for (int i = 0; i < 3; i++)
        t[i] = spawn(sleepy_holder, NULL);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("counter = %ld overlaps = %d serial %s", counter, overlaps, took(t0, 110, 5000));
}

static int io_pipe[2];

static void *hold_and_read(void *arg)
{
    (void)arg;
    char buf[8];
    pthread_mutex_lock(&m);
    say("t1: holding, reading");
    gate_open(&g1);
    ssize_t n = read(io_pipe[0], buf, sizeof buf);
    say("t1: read %zd, unlocking", n);
    pthread_mutex_unlock(&m);
    return NULL;
}

static void *wait_lock(void *arg)
{
    (void)arg;
    gate_open(&g2);
    pthread_mutex_lock(&m);
    say("t2: locked");
    pthread_mutex_unlock(&m);
    return NULL;
}

/* A holder blocked in read; a waiter blocked on the lock; main feeds the read. */
static void holder_does_io(void)
{
    MUST(pipe(io_pipe) == 0);
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t1 = spawn(hold_and_read, NULL);
    gate_wait(&g1);
    pthread_t t2 = spawn(wait_lock, NULL);
    gate_wait(&g2);
    SETTLE();
    say("main: writing");
    MUST(write(io_pipe[1], "abc", 3) == 3);
    join(t1);
    join(t2);
}

static void *lock_and_die(void *arg)
{
    pthread_mutex_lock(arg);
    say("t: exits holding the lock");
    return NULL;
}

static void robust_owner_dead(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    MUST(pthread_mutex_init(&m, &a) == 0);
    join(spawn(lock_and_die, &m));
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("unlock without consistent", pthread_mutex_unlock(&m));
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("trylock", pthread_mutex_trylock(&m));
}

static void robust_consistent(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    MUST(pthread_mutex_init(&m, &a) == 0);
    join(spawn(lock_and_die, &m));
    PCALL("trylock", pthread_mutex_trylock(&m));
    PCALL("consistent", pthread_mutex_consistent(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
}

static void robust_waiter_sees_owner_dead(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    MUST(pthread_mutex_init(&m, &a) == 0);
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(hold_until_g2, NULL);
    gate_wait(&g1);
    /* t unlocks normally: the waiter gets a plain 0. */
    gate_open(&g2);
    PCALL("lock", pthread_mutex_lock(&m));
    join(t);
    PCALL("unlock", pthread_mutex_unlock(&m));
}

static void prio_inherit_contended(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    MUST(pthread_mutex_init(&m, &a) == 0);
    gate_init(&g1);
    pthread_t t = spawn(release_after_100ms, &m);
    gate_wait(&g1);
    PCALL("trylock", pthread_mutex_trylock(&m));
    PCALL("lock", pthread_mutex_lock(&m));
    say("main: locked");
    PCALL("unlock", pthread_mutex_unlock(&m));
    join(t);
    counter = 0;
    pthread_t c[3];
    for (int i = 0; i < 3; i++)
        c[i] = spawn(count_up, (void *)5000L);
    for (int i = 0; i < 3; i++)
        join(c[i]);
    say("counter = %ld", counter);
}

static void destroy_locked(void)
{
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("destroy locked", pthread_mutex_destroy(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
    PCALL("destroy", pthread_mutex_destroy(&m));
    PCALL("init", pthread_mutex_init(&m, NULL));
    PCALL("lock", pthread_mutex_lock(&m));
    PCALL("unlock", pthread_mutex_unlock(&m));
}

static void pshared_across_fork(void)
{
    pthread_mutex_t *sm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(sm != MAP_FAILED);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    MUST(pthread_mutex_init(sm, &a) == 0);
    int p[2];
    MUST(pipe(p) == 0);
    pthread_mutex_lock(sm);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        say("child: trylock %s", ename(pthread_mutex_trylock(sm)));
        MUST(write(p[1], "r", 1) == 1);
        int r = pthread_mutex_lock(sm);
        say("child: lock %s", ename(r));
        pthread_mutex_unlock(sm);
        _exit(0);
    }
    char c;
    MUST(read(p[0], &c, 1) == 1);
    SETTLE();
    say("parent: unlock");
    pthread_mutex_unlock(sm);
    int st;
    MUST(waitpid(pid, &st, 0) == pid);
    say("child %s", status_of(st));
}

static volatile int turn;

static void *spin_handoff(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < 200; i++) {
        for (;;) {
            pthread_mutex_lock(&m);
            if (turn == me)
                break;
            pthread_mutex_unlock(&m);
            sched_yield();
        }
        counter++;
        turn = !me;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

/* Two threads alternate strictly, polling a turn flag under the lock. */
static void alternate_turns(void)
{
    pthread_t a = spawn(spin_handoff, (void *)0L);
    pthread_t b = spawn(spin_handoff, (void *)1L);
    join(a);
    join(b);
    say("counter = %ld turn = %d", counter, turn);
}

static void *busy_holder(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    gate_open(&g1);
    long long t0 = now_ms();
    while (now_ms() - t0 < 150)
        ;
    say("t: done spinning");
    pthread_mutex_unlock(&m);
    return NULL;
}

/* The holder computes without any call we could hook; the waiter blocks. */
static void holder_computes(void)
{
    gate_init(&g1);
    pthread_t t = spawn(busy_holder, NULL);
    gate_wait(&g1);
    pthread_mutex_lock(&m);
    say("main: locked");
    pthread_mutex_unlock(&m);
    join(t);
}

static void *lock_n_times(void *arg)
{
    long id = (long)arg;
    pthread_mutex_lock(&m);
    counter += id;
    pthread_mutex_unlock(&m);
    return NULL;
}

/* Many threads queue on one held mutex, then all get it. */
static void many_waiters(void)
{
    pthread_t t[16];
    pthread_mutex_lock(&m);
    for (long i = 0; i < 16; i++)
        t[i] = spawn(lock_n_times, (void *)(i + 1));
    SETTLE();
    say("before unlock counter = %ld", counter);
    pthread_mutex_unlock(&m);
    for (int i = 0; i < 16; i++)
        join(t[i]);
    say("after counter = %ld", counter);
}

static void attr_queries(void)
{
    pthread_mutexattr_t a;
    int v;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_gettype(&a, &v);
    say("default type normal %s", v == PTHREAD_MUTEX_NORMAL ? "yes" : "no");
    PCALL("settype bad", pthread_mutexattr_settype(&a, 99));
    PCALL("setrobust bad", pthread_mutexattr_setrobust(&a, 99));
    PCALL("setpshared", pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
    pthread_mutexattr_getpshared(&a, &v);
    say("pshared %s", v == PTHREAD_PROCESS_SHARED ? "yes" : "no");
}

DIFF_MAIN(S(normal_contended), S(errorcheck_relock), S(errorcheck_foreign_unlock),
          S(recursive_depth), S(static_initializers), S(trylock_busy), S(timedlock_timeout),
          S(timedlock_acquired), S(clocklock_monotonic), S(timedlock_bad_and_past),
          S(counter_four_threads), S(holder_sleeps), S(holder_does_io), S(robust_owner_dead),
          S(robust_consistent), S(robust_waiter_sees_owner_dead), S(prio_inherit_contended),
          S(destroy_locked), S(pshared_across_fork), S(alternate_turns), S(holder_computes),
          S(many_waiters), S(attr_queries))
