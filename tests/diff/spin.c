/* Spinlocks: contention, trylock, a holder that blocks while holding. */
#include "sync_kit.h"

static pthread_spinlock_t sl;
static long counter;

static void *spin_count(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_spin_lock(&sl);
        counter++;
        pthread_spin_unlock(&sl);
    }
    return NULL;
}

static void contention_counter(void)
{
    MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        t[i] = spawn(spin_count, (void *)20000L);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("counter = %ld", counter);
}

static void *try_from_thread(void *arg)
{
    (void)arg;
    PCALL("t: trylock", pthread_spin_trylock(&sl));
    return NULL;
}

static void trylock_busy(void)
{
    MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
    PCALL("lock", pthread_spin_lock(&sl));
    join(spawn(try_from_thread, NULL));
    PCALL("unlock", pthread_spin_unlock(&sl));
    PCALL("trylock", pthread_spin_trylock(&sl));
    PCALL("unlock", pthread_spin_unlock(&sl));
    PCALL("destroy", pthread_spin_destroy(&sl));
}

static struct gate g;

static void *sleepy_spin_holder(void *arg)
{
    (void)arg;
    pthread_spin_lock(&sl);
    gate_open(&g);
    msleep(100);
    say("t: unlocking");
    pthread_spin_unlock(&sl);
    return NULL;
}

/* The holder sleeps while holding (bad style, legal): the spinner must wait it out. */
static void holder_sleeps(void)
{
    MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
    gate_init(&g);
    pthread_t t = spawn(sleepy_spin_holder, NULL);
    gate_wait(&g);
    pthread_spin_lock(&sl);
    say("main: locked");
    pthread_spin_unlock(&sl);
    join(t);
}

static void *polite_spinner(void *arg)
{
    (void)arg;
    while (pthread_spin_trylock(&sl) == EBUSY)
        sched_yield();
    say("t: locked");
    pthread_spin_unlock(&sl);
    return NULL;
}

/* A trylock+sched_yield loop waits for a holder that blocks in a sleep. */
static void trylock_yield_loop(void)
{
    MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
    pthread_spin_lock(&sl);
    pthread_t t = spawn(polite_spinner, NULL);
    msleep(100);
    say("main: unlocking");
    pthread_spin_unlock(&sl);
    join(t);
}

static void pshared_fork(void)
{
    pthread_spinlock_t *ps = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(ps != MAP_FAILED);
    MUST(pthread_spin_init(ps, PTHREAD_PROCESS_SHARED) == 0);
    pthread_spin_lock(ps);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        say("child: trylock %s", ename(pthread_spin_trylock(ps)));
        pthread_spin_lock(ps);
        say("child: locked");
        _exit(0);
    }
    msleep(100);
    say("parent: unlock");
    pthread_spin_unlock(ps);
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

DIFF_MAIN(S(contention_counter), S(trylock_busy), S(holder_sleeps), S(trylock_yield_loop),
          S(pshared_fork))
