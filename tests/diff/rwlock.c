/* rwlocks: sharing, exclusion, kinds, timed and clock locks. */
#include "sync_kit.h"

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static struct gate g1, g2, g3;
static int readers_in, max_readers;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

static void *reader_meets_other(void *arg)
{
    (void)arg;
    pthread_rwlock_rdlock(&rw);
    pthread_mutex_lock(&m);
    readers_in++;
    if (readers_in > max_readers)
        max_readers = readers_in;
    pthread_mutex_unlock(&m);
    gate_open(&g1);
    gate_wait(&g2);
    pthread_mutex_lock(&m);
    readers_in--;
    pthread_mutex_unlock(&m);
    pthread_rwlock_unlock(&rw);
    return NULL;
}

/* Two readers are inside at once. */
static void readers_share(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t a = spawn(reader_meets_other, NULL);
    pthread_t b = spawn(reader_meets_other, NULL);
    gate_wait(&g1);
    gate_wait(&g1);
    say("max readers = %d", max_readers);
    PCALL("main tryrdlock", pthread_rwlock_tryrdlock(&rw));
    PCALL("main unlock", pthread_rwlock_unlock(&rw));
    PCALL("main trywrlock", pthread_rwlock_trywrlock(&rw));
    gate_open(&g2);
    gate_open(&g2);
    join(a);
    join(b);
    PCALL("main trywrlock after", pthread_rwlock_trywrlock(&rw));
    PCALL("unlock", pthread_rwlock_unlock(&rw));
}

static void *writer_holds(void *arg)
{
    (void)arg;
    pthread_rwlock_wrlock(&rw);
    say("w: holding");
    gate_open(&g1);
    gate_wait(&g2);
    say("w: releasing");
    pthread_rwlock_unlock(&rw);
    return NULL;
}

static void writer_excludes(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(writer_holds, NULL);
    gate_wait(&g1);
    PCALL("tryrdlock", pthread_rwlock_tryrdlock(&rw));
    PCALL("trywrlock", pthread_rwlock_trywrlock(&rw));
    struct timespec d = in_ms(CLOCK_REALTIME, 120);
    long long t0 = now_ms();
    PCALL("timedrdlock", pthread_rwlock_timedrdlock(&rw, &d));
    say("waited %s", took(t0, 90, 3000));
    d = in_ms(CLOCK_REALTIME, 120);
    t0 = now_ms();
    PCALL("timedwrlock", pthread_rwlock_timedwrlock(&rw, &d));
    say("waited %s", took(t0, 90, 3000));
    gate_open(&g2);
    PCALL("rdlock", pthread_rwlock_rdlock(&rw));
    say("main: reading");
    pthread_rwlock_unlock(&rw);
    join(t);
}

static void *reader_holds(void *arg)
{
    (void)arg;
    pthread_rwlock_rdlock(&rw);
    say("r: holding");
    gate_open(&g1);
    gate_wait(&g2);
    say("r: releasing");
    pthread_rwlock_unlock(&rw);
    return NULL;
}

static void *writer_waits(void *arg)
{
    (void)arg;
    gate_open(&g3);
    pthread_rwlock_wrlock(&rw);
    say("w: got it");
    pthread_rwlock_unlock(&rw);
    return NULL;
}

static void reader_blocks_writer(void)
{
    gate_init(&g1);
    gate_init(&g2);
    gate_init(&g3);
    pthread_t r = spawn(reader_holds, NULL);
    gate_wait(&g1);
    pthread_t w = spawn(writer_waits, NULL);
    gate_wait(&g3);
    SETTLE();
    say("main: release reader");
    gate_open(&g2);
    join(r);
    join(w);
}

static void clock_locks(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t t = spawn(writer_holds, NULL);
    gate_wait(&g1);
    struct timespec d = in_ms(CLOCK_MONOTONIC, 120);
    long long t0 = now_ms();
    PCALL("clockrdlock monotonic", pthread_rwlock_clockrdlock(&rw, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 90, 3000));
    d = in_ms(CLOCK_MONOTONIC, 120);
    t0 = now_ms();
    PCALL("clockwrlock monotonic", pthread_rwlock_clockwrlock(&rw, CLOCK_MONOTONIC, &d));
    say("waited %s", took(t0, 90, 3000));
    PCALL("clockwrlock cputime", pthread_rwlock_clockwrlock(&rw, CLOCK_PROCESS_CPUTIME_ID, &d));
    struct timespec bad = {time(NULL) + 5, 1000000000L};
    PCALL("timedwrlock bad nsec", pthread_rwlock_timedwrlock(&rw, &bad));
    struct timespec past = {1, 0};
    PCALL("timedrdlock past", pthread_rwlock_timedrdlock(&rw, &past));
    gate_open(&g2);
    join(t);
}

static void self_deadlocks(void)
{
    PCALL("wrlock", pthread_rwlock_wrlock(&rw));
    PCALL("wrlock again", pthread_rwlock_wrlock(&rw));
    PCALL("rdlock while writing", pthread_rwlock_rdlock(&rw));
    PCALL("unlock", pthread_rwlock_unlock(&rw));
    PCALL("rdlock", pthread_rwlock_rdlock(&rw));
    PCALL("rdlock again", pthread_rwlock_rdlock(&rw));
    PCALL("unlock", pthread_rwlock_unlock(&rw));
    PCALL("unlock", pthread_rwlock_unlock(&rw));
    PCALL("trywrlock", pthread_rwlock_trywrlock(&rw));
    PCALL("unlock", pthread_rwlock_unlock(&rw));
}

static void *late_tryrdlock(void *arg)
{
    (void)arg;
    if (PCALL("late reader tryrdlock", pthread_rwlock_tryrdlock(&rw)) == 0)
        pthread_rwlock_unlock(&rw);
    return NULL;
}

/* kind: does a new reader get in while a writer waits? */
static void kind_run(int kind)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, kind);
    MUST(pthread_rwlock_init(&rw, &a) == 0);
    gate_init(&g1);
    gate_init(&g2);
    gate_init(&g3);
    pthread_t r = spawn(reader_holds, NULL);
    gate_wait(&g1);
    pthread_t w = spawn(writer_waits, NULL);
    gate_wait(&g3);
    SETTLE();
    join(spawn(late_tryrdlock, NULL));
    gate_open(&g2);
    join(r);
    join(w);
}

static void prefer_reader_default(void)
{
    kind_run(PTHREAD_RWLOCK_PREFER_READER_NP);
}

static void prefer_writer_nonrecursive(void)
{
    kind_run(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

static long value[2];
static long reads_ok;

static void *rw_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        pthread_rwlock_wrlock(&rw);
        value[0]++;
        if (i % 100 == 0)
            sched_yield();
        value[1]++;
        pthread_rwlock_unlock(&rw);
    }
    return NULL;
}

static void *rw_reader(void *arg)
{
    (void)arg;
    long ok = 0;
    for (int i = 0; i < 2000; i++) {
        pthread_rwlock_rdlock(&rw);
        if (value[0] == value[1])
            ok++;
        pthread_rwlock_unlock(&rw);
    }
    pthread_mutex_lock(&m);
    reads_ok += ok;
    pthread_mutex_unlock(&m);
    return NULL;
}

static void mixed_counter(void)
{
    pthread_t t[5];
    t[0] = spawn(rw_writer, NULL);
    t[1] = spawn(rw_writer, NULL);
    for (int i = 2; i < 5; i++)
        t[i] = spawn(rw_reader, NULL);
    for (int i = 0; i < 5; i++)
        join(t[i]);
    say("value = %ld %ld consistent reads = %ld", value[0], value[1], reads_ok);
}

static void *sleepy_writer(void *arg)
{
    (void)arg;
    pthread_rwlock_wrlock(&rw);
    gate_open(&g1);
    msleep(100);
    value[0] = 42;
    pthread_rwlock_unlock(&rw);
    return NULL;
}

static void *reader_sees(void *arg)
{
    (void)arg;
    pthread_rwlock_rdlock(&rw);
    pthread_mutex_lock(&m);
    if (value[0] == 42)
        reads_ok++;
    pthread_mutex_unlock(&m);
    pthread_rwlock_unlock(&rw);
    return NULL;
}

/* A writer sleeps holding the lock; five readers wait and all see its write. */
static void writer_sleeps_readers_wait(void)
{
    gate_init(&g1);
    pthread_t w = spawn(sleepy_writer, NULL);
    gate_wait(&g1);
    pthread_t r[5];
    for (int i = 0; i < 5; i++)
        r[i] = spawn(reader_sees, NULL);
    join(w);
    for (int i = 0; i < 5; i++)
        join(r[i]);
    say("readers that saw the write = %ld", reads_ok);
}

static void destroy_and_attrs(void)
{
    pthread_rwlockattr_t a;
    int v;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_getkind_np(&a, &v);
    say("default kind reader %s", v == PTHREAD_RWLOCK_PREFER_READER_NP ? "yes" : "no");
    PCALL("setkind bad", pthread_rwlockattr_setkind_np(&a, 99));
    pthread_rwlock_t l;
    PCALL("init", pthread_rwlock_init(&l, &a));
    PCALL("rdlock", pthread_rwlock_rdlock(&l));
    PCALL("unlock", pthread_rwlock_unlock(&l));
    PCALL("destroy", pthread_rwlock_destroy(&l));
}

DIFF_MAIN(S(readers_share), S(writer_excludes), S(reader_blocks_writer), S(clock_locks),
          S(self_deadlocks), S(prefer_reader_default), S(prefer_writer_nonrecursive),
          S(mixed_counter), S(writer_sleeps_readers_wait), S(destroy_and_attrs))
