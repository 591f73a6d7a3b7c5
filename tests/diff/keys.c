/* Thread-specific data, errno and __thread per thread. */
#include "sync_kit.h"

#include <limits.h>

static pthread_key_t k1, k2;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static long dtor_sum;
static int dtor_calls;
static struct gate g1, g2;

static void sum_dtor(void *v)
{
    pthread_mutex_lock(&m);
    dtor_sum += (long)v;
    dtor_calls++;
    pthread_mutex_unlock(&m);
}

static void *set_and_check(void *arg)
{
    pthread_setspecific(k1, arg);
    gate_open(&g1);
    gate_wait(&g2);
    return (void *)(long)(pthread_getspecific(k1) == arg);
}

/* Each thread keeps its own value across waits; each value's destructor runs. */
static void values_per_thread(void)
{
    MUST(pthread_key_create(&k1, sum_dtor) == 0);
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        t[i] = spawn(set_and_check, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        gate_wait(&g1);
    say("main's value null %s", pthread_getspecific(k1) == NULL ? "yes" : "no");
    for (int i = 0; i < 4; i++)
        gate_open(&g2);
    long kept = 0;
    for (int i = 0; i < 4; i++)
        kept += (long)join(t[i]);
    say("kept own = %ld dtor sum = %ld calls = %d", kept, dtor_sum, dtor_calls);
}

static int rounds;

static void resetting_dtor(void *v)
{
    rounds++;
    say("dtor round %d value %ld", rounds, (long)v);
    if ((long)v < 10)
        pthread_setspecific(k1, (void *)((long)v + 1));
}

static void *set_one(void *arg)
{
    pthread_setspecific(k1, arg);
    return NULL;
}

/* A destructor that sets a new value is called again, up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds. */
static void destructor_rounds(void)
{
    MUST(pthread_key_create(&k1, resetting_dtor) == 0);
    join(spawn(set_one, (void *)1L));
    say("rounds = %d (max %d)", rounds, PTHREAD_DESTRUCTOR_ITERATIONS);
}

static void named_dtor(void *v)
{
    say("dtor %s", (const char *)v);
}

static void *set_two(void *arg)
{
    (void)arg;
    pthread_setspecific(k2, "k2");
    pthread_setspecific(k1, "k1");
    return NULL;
}

/* Both keys' destructors run (glibc: in key order). */
static void two_keys_order(void)
{
    MUST(pthread_key_create(&k1, named_dtor) == 0);
    MUST(pthread_key_create(&k2, named_dtor) == 0);
    join(spawn(set_two, NULL));
}

static void *set_then_null(void *arg)
{
    (void)arg;
    pthread_setspecific(k1, (void *)5L);
    pthread_setspecific(k1, NULL);
    return NULL;
}

static void null_value_no_dtor(void)
{
    MUST(pthread_key_create(&k1, sum_dtor) == 0);
    join(spawn(set_then_null, NULL));
    say("dtor calls = %d", dtor_calls);
}

static void *set_and_wait(void *arg)
{
    pthread_setspecific(k1, arg);
    gate_open(&g1);
    gate_wait(&g2);
    return NULL;
}

static void deleted_key_no_dtor(void)
{
    MUST(pthread_key_create(&k1, sum_dtor) == 0);
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(set_and_wait, (void *)3L);
    gate_wait(&g1);
    PCALL("key_delete", pthread_key_delete(k1));
    gate_open(&g2);
    join(t);
    say("dtor calls = %d", dtor_calls);
}

static void main_dtor(void *v)
{
    say("dtor of main's value %s", (const char *)v);
}

static void *outlive(void *arg)
{
    (void)arg;
    msleep(100);
    say("t: done");
    return NULL;
}

/* main's destructors run when main calls pthread_exit. */
static void main_pthread_exit_runs_dtor(void)
{
    MUST(pthread_key_create(&k1, main_dtor) == 0);
    pthread_setspecific(k1, "main");
    spawn(outlive, NULL);
    pthread_exit(NULL);
}

/* ... but not when main returns. */
static void main_return_no_dtor(void)
{
    MUST(pthread_key_create(&k1, main_dtor) == 0);
    pthread_setspecific(k1, "main");
    say("main returns");
}

static void many_keys(void)
{
    pthread_key_t keys[200];
    int made = 0;
    for (int i = 0; i < 200; i++)
        if (pthread_key_create(&keys[i], NULL) == 0)
            made++;
    for (int i = 0; i < made; i++)
        pthread_setspecific(keys[i], (void *)(long)(i + 1));
    long sum = 0;
    for (int i = 0; i < made; i++)
        sum += (long)pthread_getspecific(keys[i]);
    say("made = %d sum = %ld", made, sum);
    for (int i = 0; i < made; i++)
        pthread_key_delete(keys[i]);
}

static void getspecific_in_dtor(void *v)
{
    say("in dtor: getspecific null %s, value %s", pthread_getspecific(k1) == NULL ? "yes" : "no",
        (const char *)v);
}

static void *set_k1(void *arg)
{
    pthread_setspecific(k1, arg);
    return NULL;
}

static void value_cleared_before_dtor(void)
{
    MUST(pthread_key_create(&k1, getspecific_in_dtor) == 0);
    join(spawn(set_k1, "v"));
}

static int errno_pipe[2];

static void *errno_reader(void *arg)
{
    (void)arg;
    errno = EIO;
    gate_open(&g1);
    char c;
    read(errno_pipe[0], &c, 1);
    errno = EIO;
    msleep(50);
    return (void *)(long)(errno == EIO);
}

static void *errno_sleeper(void *arg)
{
    (void)arg;
    errno = ENOENT;
    gate_open(&g1);
    msleep(120);
    int ok = errno == ENOENT;
    errno = ENOENT;
    sched_yield();
    msleep(20);
    return (void *)(long)(ok && errno == ENOENT);
}

/* Each thread's errno survives the others' calls while it waits. */
static void errno_per_thread(void)
{
    MUST(pipe(errno_pipe) == 0);
    gate_init(&g1);
    pthread_t a = spawn(errno_reader, NULL);
    pthread_t b = spawn(errno_sleeper, NULL);
    gate_wait(&g1);
    gate_wait(&g1);
    errno = EPERM;
    msleep(60);
    say("main errno kept %s", errno == EPERM ? "yes" : "no");
    MUST(write(errno_pipe[1], "x", 1) == 1);
    long ra = (long)join(a), rb = (long)join(b);
    say("reader kept EIO %s, sleeper kept ENOENT %s", ra ? "yes" : "no", rb ? "yes" : "no");
}

static void *errno_from_failure(void *arg)
{
    (void)arg;
    char c;
    int r = read(-1, &c, 1);
    int e = errno;
    msleep(80);
    return (void *)(long)(r == -1 && e == EBADF && errno == EBADF);
}

static void errno_after_failed_call(void)
{
    pthread_t t = spawn(errno_from_failure, NULL);
    msleep(20);
    close(-5);
    int e = errno;
    long ok = (long)join(t);
    say("main EBADF %s, thread kept EBADF %s", e == EBADF ? "yes" : "no", ok ? "yes" : "no");
}

static __thread int tls_value;

static void *tls_user(void *arg)
{
    tls_value = (int)(long)arg;
    gate_open(&g1);
    gate_wait(&g2);
    return (void *)(long)(tls_value == (int)(long)arg);
}

/* By design under green threads: coroutines of one OS thread share __thread. */
static void thread_local_per_thread(void)
{
    gate_init(&g1);
    gate_init(&g2);
    tls_value = 100;
    pthread_t a = spawn(tls_user, (void *)1L);
    pthread_t b = spawn(tls_user, (void *)2L);
    gate_wait(&g1);
    gate_wait(&g1);
    gate_open(&g2);
    gate_open(&g2);
    long ka = (long)join(a), kb = (long)join(b);
    say("a kept %s, b kept %s, main kept %s", ka ? "yes" : "no", kb ? "yes" : "no",
        tls_value == 100 ? "yes" : "no");
}

static __thread int tls_init = 42;

static void *read_tls_init(void *arg)
{
    (void)arg;
    return (void *)(long)tls_init;
}

static void thread_local_initial(void)
{
    tls_init = 7;
    say("new thread sees initial %ld", (long)join(spawn(read_tls_init, NULL)));
}

DIFF_MAIN(S(values_per_thread), S(destructor_rounds), S(two_keys_order), S(null_value_no_dtor),
          S(deleted_key_no_dtor), S(main_pthread_exit_runs_dtor), S(main_return_no_dtor),
          S(many_keys), S(value_cleared_before_dtor), S(errno_per_thread),
          S(errno_after_failed_call), S(thread_local_per_thread), S(thread_local_initial))
