/* Joining and ending threads, and how the process ends with threads alive. */
#include "sync_kit.h"

static struct gate g1, g2;

static void *ret_value(void *arg)
{
    return (void *)((long)arg * 3);
}

static void join_returns_values(void)
{
    pthread_t t[5];
    for (long i = 0; i < 5; i++)
        t[i] = spawn(ret_value, (void *)i);
    long sum = 0;
    for (int i = 4; i >= 0; i--)
        sum += (long)join(t[i]);
    say("sum = %ld", sum);
}

static void join_self_edeadlk(void)
{
    PCALL("join self", pthread_join(pthread_self(), NULL));
}

static void *join_main(void *arg)
{
    (void)arg;
    PCALL("t: join self", pthread_join(pthread_self(), NULL));
    return NULL;
}

static void join_self_in_thread(void)
{
    pthread_t me = pthread_self();
    join(spawn(join_main, &me));
}

static void *wait_g1(void *arg)
{
    (void)arg;
    gate_wait(&g1);
    say("t: released");
    return (void *)9L;
}

static void join_detached_einval(void)
{
    gate_init(&g1);
    pthread_t t = spawn(wait_g1, NULL);
    PCALL("detach", pthread_detach(t));
    PCALL("join detached", pthread_join(t, NULL));
    PCALL("detach again", pthread_detach(t));
    gate_open(&g1);
    msleep(100);
}

static void tryjoin_busy(void)
{
    gate_init(&g1);
    pthread_t t = spawn(wait_g1, NULL);
    void *r = NULL;
    PCALL("tryjoin running", pthread_tryjoin_np(t, &r));
    gate_open(&g1);
    int e;
    while ((e = pthread_tryjoin_np(t, &r)) == EBUSY)
        msleep(10);
    say("tryjoin later = %s value = %ld", ename(e), (long)r);
}

static void timedjoin_timeout(void)
{
    gate_init(&g1);
    pthread_t t = spawn(wait_g1, NULL);
    void *r = NULL;
    struct timespec d = in_ms(CLOCK_REALTIME, 150);
    long long t0 = now_ms();
    PCALL("timedjoin", pthread_timedjoin_np(t, &r, &d));
    say("waited %s", took(t0, 120, 3000));
    gate_open(&g1);
    d = in_ms(CLOCK_REALTIME, 5000);
    PCALL("timedjoin", pthread_timedjoin_np(t, &r, &d));
    say("value = %ld", (long)r);
}

static void clockjoin_monotonic(void)
{
    gate_init(&g1);
    pthread_t t = spawn(wait_g1, NULL);
    void *r = NULL;
    struct timespec d = in_ms(CLOCK_MONOTONIC, 150);
    long long t0 = now_ms();
    PCALL("clockjoin", pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 120, 3000));
    PCALL("clockjoin cputime", pthread_clockjoin_np(t, &r, CLOCK_PROCESS_CPUTIME_ID, &d));
    gate_open(&g1);
    join(t);
}

static void *outlive_main(void *arg)
{
    (void)arg;
    msleep(150);
    say("t: still running after main's pthread_exit");
    return NULL;
}

static void main_pthread_exit(void)
{
    spawn(outlive_main, NULL);
    say("main: pthread_exit");
    pthread_exit(NULL);
}

static void bye(void)
{
    say("atexit handler");
}

static void *exit_from_thread(void *arg)
{
    (void)arg;
    msleep(100);
    say("t: exit(3)");
    exit(3);
}

static void exit_in_thread(void)
{
    atexit(bye);
    int p[2];
    MUST(pipe(p) == 0);
    spawn(exit_from_thread, NULL);
    char c;
    say("main: reading forever");
    read(p[0], &c, 1);
    say("not reached");
}

/* Blocks the caller for good in a call every mode parks (not pause()). */
static void block_forever(void)
{
    int p[2];
    char c;
    MUST(pipe(p) == 0);
    for (;;)
        read(p[0], &c, 1);
}

static void *_exit_from_thread(void *arg)
{
    (void)arg;
    msleep(100);
    say("t: _exit(4)");
    _exit(4);
}

static void underscore_exit_in_thread(void)
{
    atexit(bye);
    spawn(_exit_from_thread, NULL);
    block_forever();
}

static void *sleep_forever(void *arg)
{
    (void)arg;
    int p[2];
    char c;
    MUST(pipe(p) == 0);
    say("t: sleeping");
    gate_open(&g1);
    for (;;)
        read(p[0], &c, 1);
    return NULL;
}

static void main_returns_threads_alive(void)
{
    atexit(bye);
    gate_init(&g1);
    spawn(sleep_forever, NULL);
    spawn(sleep_forever, NULL);
    gate_wait(&g1);
    gate_wait(&g1);
    say("main returns");
}

static pthread_t late;

static void *finish_late(void *arg)
{
    (void)arg;
    msleep(150);
    say("late thread done");
    return (void *)11L;
}

static void join_late(void)
{
    say("atexit: joining");
    say("atexit: joined %ld", (long)join(late));
}

/* An exit handler joins a thread after main returned (libuv does this). */
static void atexit_joins(void)
{
    atexit(join_late);
    late = spawn(finish_late, NULL);
    say("main returns");
}

static int dtor_armed;

__attribute__((destructor)) static void dtor_join(void)
{
    if (!dtor_armed)
        return;
    say("destructor: joining");
    say("destructor: joined %ld", (long)join(late));
}

static void destructor_joins(void)
{
    dtor_armed = 1;
    late = spawn(finish_late, NULL);
    say("main returns");
}

static sem_t done;

static void *detached_worker(void *arg)
{
    msleep(50 * (long)arg);
    sem_post(&done);
    return NULL;
}

static void detached_run_to_end(void)
{
    sem_init(&done, 0, 0);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (long i = 0; i < 4; i++) {
        pthread_t t;
        MUST(pthread_create(&t, &a, detached_worker, (void *)i) == 0);
        if (i == 0)
            PCALL("join a created-detached thread", pthread_join(t, NULL));
    }
    for (int i = 0; i < 4; i++)
        sem_wait(&done);
    say("all four detached threads done");
}

static void *detach_self(void *arg)
{
    (void)arg;
    PCALL("t: detach self", pthread_detach(pthread_self()));
    sem_post(&done);
    return NULL;
}

static void detach_self_then_end(void)
{
    sem_init(&done, 0, 0);
    spawn(detach_self, NULL);
    sem_wait(&done);
    msleep(50);
    say("main done");
}

static void *chain(void *arg)
{
    long n = (long)arg;
    if (n == 0)
        return (void *)1L;
    long r = (long)join(spawn(chain, (void *)(n - 1)));
    return (void *)(r + 1);
}

static void join_chain(void)
{
    say("depth = %ld", (long)join(spawn(chain, (void *)20L)));
}

static void hundred_threads(void)
{
    pthread_t t[100];
    for (long i = 0; i < 100; i++)
        t[i] = spawn(ret_value, (void *)i);
    long sum = 0;
    for (int i = 0; i < 100; i++)
        sum += (long)join(t[i]);
    say("sum = %ld", sum);
}

static void deep_exit(int n)
{
    if (n <= 0)
        pthread_exit((void *)77L);
    if (n < 100)
        deep_exit(n - 1);
    say("not reached");
}

static void *exit_deep(void *arg)
{
    (void)arg;
    deep_exit(10);
    return NULL;
}

static void pthread_exit_nested(void)
{
    say("value = %ld", (long)join(spawn(exit_deep, NULL)));
}

static void *compare_ids(void *arg)
{
    pthread_t *m = arg;
    say("t: equal to main %s, equal to self %s", pthread_equal(*m, pthread_self()) ? "yes" : "no",
        pthread_equal(pthread_self(), pthread_self()) ? "yes" : "no");
    return NULL;
}

static void self_and_equal(void)
{
    pthread_t me = pthread_self();
    pthread_t t = spawn(compare_ids, &me);
    join(t);
    say("main: equal to thread %s", pthread_equal(me, t) ? "yes" : "no");
}

static void *big_frame(void *arg)
{
    (void)arg;
    volatile char buf[48 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 512)
        buf[i] = (char)i;
    return (void *)(long)buf[512];
}

static void attr_stacksize(void)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    PCALL("setstacksize too small", pthread_attr_setstacksize(&a, 1024));
    PCALL("setstacksize 256k", pthread_attr_setstacksize(&a, 256 * 1024));
    size_t sz;
    pthread_attr_getstacksize(&a, &sz);
    say("stacksize = %zu", sz);
    pthread_t t;
    PCALL("create", pthread_create(&t, &a, big_frame, NULL));
    say("value = %ld", (long)join(t));
}

static void *query_own_attr(void *arg)
{
    (void)arg;
    pthread_attr_t a;
    int ds = -1;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getdetachstate(&a, &ds);
        pthread_attr_destroy(&a);
    }
    say("t: joinable %s", ds == PTHREAD_CREATE_JOINABLE ? "yes" : "no");
    return NULL;
}

static void getattr_np_self(void)
{
    join(spawn(query_own_attr, NULL));
}

static void *named(void *arg)
{
    (void)arg;
    char buf[32] = "";
    pthread_setname_np(pthread_self(), "selfnamed");
    pthread_getname_np(pthread_self(), buf, sizeof buf);
    say("t: own name %s", buf);
    gate_open(&g2);
    gate_wait(&g1);
    return NULL;
}

static void thread_names(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(named, NULL);
    gate_wait(&g2);
    char buf[32] = "";
    PCALL("getname", pthread_getname_np(t, buf, sizeof buf));
    say("name %s", buf);
    PCALL("setname", pthread_setname_np(t, "worker"));
    PCALL("getname", pthread_getname_np(t, buf, sizeof buf));
    say("name %s", buf);
    PCALL("setname too long", pthread_setname_np(t, "a-name-longer-than-15"));
    gate_open(&g1);
    join(t);
}

static void *liveness(void *arg)
{
    (void)arg;
    gate_wait(&g1);
    return NULL;
}

static void kill_zero_alive(void)
{
    gate_init(&g1);
    pthread_t t = spawn(liveness, NULL);
    PCALL("pthread_kill 0 alive", pthread_kill(t, 0));
    gate_open(&g1);
    join(t);
}

static pid_t tid_of[2];

static void *record_tid(void *arg)
{
    tid_of[(long)arg] = gettid();
    gate_open(&g1);
    gate_wait(&g2);
    return NULL;
}

/* By design under green threads: coroutines of one OS thread share its tid. */
static void gettid_distinct(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t a = spawn(record_tid, (void *)0L);
    pthread_t b = spawn(record_tid, (void *)1L);
    gate_wait(&g1);
    gate_wait(&g1);
    say("tids distinct %s, main's differs %s", tid_of[0] != tid_of[1] ? "yes" : "no",
        tid_of[0] != gettid() && tid_of[1] != gettid() ? "yes" : "no");
    gate_open(&g2);
    gate_open(&g2);
    join(a);
    join(b);
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;

static void *cond_forever(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    gate_open(&g1);
    for (;;)
        pthread_cond_wait(&c, &m);
    return NULL;
}

/* exit() from main while other threads wait in cond_wait and read. */
static void exit_with_blocked_threads(void)
{
    atexit(bye);
    gate_init(&g1);
    spawn(cond_forever, NULL);
    spawn(sleep_forever, NULL);
    gate_wait(&g1);
    gate_wait(&g1);
    say("main: exit(5)");
    exit(5);
}

static void quick_bye(void)
{
    say("at_quick_exit handler");
}

static void *quick_from_thread(void *arg)
{
    (void)arg;
    quick_exit(6);
}

static void quick_exit_in_thread(void)
{
    atexit(bye);
    at_quick_exit(quick_bye);
    spawn(quick_from_thread, NULL);
    block_forever();
}

DIFF_MAIN(S(join_returns_values), S(join_self_edeadlk), S(join_self_in_thread),
          S(join_detached_einval), S(tryjoin_busy), S(timedjoin_timeout), S(clockjoin_monotonic),
          S(main_pthread_exit), S(exit_in_thread), S(underscore_exit_in_thread),
          S(main_returns_threads_alive), S(atexit_joins), S(destructor_joins),
          S(detached_run_to_end), S(detach_self_then_end), S(join_chain), S(hundred_threads),
          S(pthread_exit_nested), S(self_and_equal), S(attr_stacksize), S(getattr_np_self),
          S(thread_names), S(kill_zero_alive), S(gettid_distinct), S(exit_with_blocked_threads),
          S(quick_exit_in_thread))
