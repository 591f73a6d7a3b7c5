/* POSIX semaphores: unnamed and named, try/timed/clock waits, cross-thread posts. */
#include "sync_kit.h"

#include <limits.h>

static sem_t s, s2;
static struct gate g1;

static void *post_after_100ms(void *arg)
{
    sem_t *x = arg;
    msleep(100);
    say("t: post");
    sem_post(x);
    return NULL;
}

static void post_wakes_waiter(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    pthread_t t = spawn(post_after_100ms, &s);
    long long t0 = now_ms();
    CALL("sem_wait", sem_wait(&s));
    say("waited %s", took(t0, 50, 4000));
    join(t);
}

static void trywait_eagain(void)
{
    MUST(sem_init(&s, 0, 1) == 0);
    CALL("trywait", sem_trywait(&s));
    CALL("trywait", sem_trywait(&s));
    int v = -7;
    sem_getvalue(&s, &v);
    say("value = %d", v);
}

static void timedwait_timeout(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    CALL("timedwait", sem_timedwait(&s, &d));
    say("waited %s", took(t0, 120, 3000));
    struct timespec past = {1, 0};
    t0 = now_ms();
    CALL("timedwait past", sem_timedwait(&s, &past));
    say("at once %s", took(t0, 0, 1000));
    struct timespec bad = {time(NULL) + 5, 1000000000L};
    CALL("timedwait bad nsec", sem_timedwait(&s, &bad));
    sem_post(&s);
    CALL("timedwait bad nsec, value 1", sem_timedwait(&s, &bad));
}

static void clockwait_clocks(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 150);
    long long t0 = now_ms();
    CALL("clockwait monotonic", sem_clockwait(&s, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 120, 3000));
    d = in_ms(CLOCK_REALTIME, 100);
    t0 = now_ms();
    CALL("clockwait realtime", sem_clockwait(&s, CLOCK_REALTIME, &d));
    say("waited %s", took(t0, 80, 3000));
    CALL("clockwait cputime", sem_clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &d));
}

static void timedwait_posted_in_time(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    pthread_t t = spawn(post_after_100ms, &s);
    struct timespec d = in_ms(CLOCK_REALTIME, 5000);
    long long t0 = now_ms();
    CALL("timedwait", sem_timedwait(&s, &d));
    say("early %s", took(t0, 50, 4000));
    join(t);
    d = in_ms(CLOCK_MONOTONIC, 5000);
    t = spawn(post_after_100ms, &s);
    CALL("clockwait", sem_clockwait(&s, CLOCK_MONOTONIC, &d));
    join(t);
}

static void getvalue_counts(void)
{
    MUST(sem_init(&s, 0, 2) == 0);
    int v;
    for (int i = 0; i < 3; i++)
        sem_post(&s);
    sem_getvalue(&s, &v);
    say("value = %d", v);
    sem_wait(&s);
    sem_getvalue(&s, &v);
    say("value = %d", v);
}

static void *count_waiter(void *arg)
{
    (void)arg;
    gate_open(&g1);
    sem_wait(&s);
    sem_post(&s2);
    return NULL;
}

/* Three waiters; three posts; all pass, none more. */
static void three_waiters(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    MUST(sem_init(&s2, 0, 0) == 0);
    gate_init(&g1);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        t[i] = spawn(count_waiter, NULL);
    for (int i = 0; i < 3; i++)
        gate_wait(&g1);
    SETTLE();
    int v;
    sem_getvalue(&s2, &v);
    say("passed before posts = %d", v);
    sem_post(&s);
    msleep(150);
    sem_getvalue(&s2, &v);
    say("passed after one post = %d", v);
    sem_post(&s);
    sem_post(&s);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    sem_getvalue(&s2, &v);
    say("passed = %d", v);
    sem_getvalue(&s, &v);
    say("left = %d", v);
}

static void init_limits(void)
{
    CALL("init max", sem_init(&s, 0, SEM_VALUE_MAX));
    CALL("post at max", sem_post(&s));
    CALL("init max+1", sem_init(&s2, 0, (unsigned)SEM_VALUE_MAX + 1));
}

static long rounds;

static void *pong(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        sem_wait(&s);
        rounds++;
        sem_post(&s2);
    }
    return NULL;
}

static void ping_pong_1000(void)
{
    MUST(sem_init(&s, 0, 0) == 0);
    MUST(sem_init(&s2, 0, 0) == 0);
    pthread_t t = spawn(pong, NULL);
    for (int i = 0; i < 1000; i++) {
        sem_post(&s);
        sem_wait(&s2);
    }
    join(t);
    say("rounds = %ld", rounds);
}

static void named_across_fork(void)
{
    char name[64];
    snprintf(name, sizeof name, "/patchall-diff-%d", getpid());
    sem_t *ns = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    MUST(ns != SEM_FAILED);
    sem_t *again = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    say("reopen O_EXCL %s", again == SEM_FAILED ? ename(errno) : "opened");
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        say("child: post");
        sem_post(ns);
        _exit(0);
    }
    CALL("parent: sem_wait", sem_wait(ns));
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    CALL("unlink", sem_unlink(name));
    CALL("unlink again", sem_unlink(name));
    CALL("close", sem_close(ns));
}

static void named_between_threads(void)
{
    char name[64];
    snprintf(name, sizeof name, "/patchall-diff-t-%d", getpid());
    sem_t *ns = sem_open(name, O_CREAT, 0600, 0);
    MUST(ns != SEM_FAILED);
    sem_unlink(name);
    pthread_t t = spawn(post_after_100ms, ns);
    CALL("sem_wait named", sem_wait(ns));
    join(t);
    CALL("trywait named", sem_trywait(ns));
    sem_close(ns);
}

static void pshared_across_fork(void)
{
    sem_t *ps = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(ps != MAP_FAILED);
    MUST(sem_init(ps, 1, 0) == 0);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        say("child: post");
        sem_post(ps);
        _exit(0);
    }
    CALL("parent: sem_wait", sem_wait(ps));
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

static void *post_in_thread_and_block(void *arg)
{
    (void)arg;
    char c;
    int *p = arg;
    sem_post(&s);
    CALL("t: read", read(p[0], &c, 1));
    return NULL;
}

/* A waiter wakes while the poster blocks in read; main then writes. */
static void poster_then_blocks(void)
{
    int p[2];
    MUST(pipe(p) == 0);
    MUST(sem_init(&s, 0, 0) == 0);
    pthread_t t = spawn(post_in_thread_and_block, p);
    CALL("main: sem_wait", sem_wait(&s));
    SETTLE();
    say("main: write");
    MUST(write(p[1], "x", 1) == 1);
    join(t);
}

static void *worker_sum(void *arg)
{
    long *acc = arg;
    for (int i = 0; i < 500; i++) {
        sem_wait(&s);
        (*acc)++;
        sem_post(&s);
    }
    return NULL;
}

/* A semaphore of one used as a mutex by four threads. */
static void binary_as_mutex(void)
{
    MUST(sem_init(&s, 0, 1) == 0);
    long acc = 0;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn(worker_sum, &acc);
    for (int i = 0; i < 4; i++)
        join(t[i]);
    say("acc = %ld", acc);
}

static void destroy_reinit(void)
{
    CALL("init", sem_init(&s, 0, 3));
    CALL("destroy", sem_destroy(&s));
    CALL("init", sem_init(&s, 0, 0));
    CALL("trywait", sem_trywait(&s));
    CALL("post", sem_post(&s));
    CALL("trywait", sem_trywait(&s));
}

DIFF_MAIN(S(post_wakes_waiter), S(trywait_eagain), S(timedwait_timeout), S(clockwait_clocks),
          S(timedwait_posted_in_time), S(getvalue_counts), S(three_waiters), S(init_limits),
          S(ping_pong_1000), S(named_across_fork), S(named_between_threads),
          S(pshared_across_fork), S(poster_then_blocks), S(binary_as_mutex), S(destroy_reinit))
