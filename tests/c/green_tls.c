/* Per-thread state a thread owns: __thread counters with and without an
 * initial value, errno, pthread_self, TLS destructors, ctype, strerror and
 * sched_getcpu; and where the TLS lies (glibc puts a thread's at the top of
 * its stack, above every frame). Prints the same natively and with green threads that have
 * TLS of their own (PATCHALL_GREEN_TLS=own). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 5

static __thread int counter = 10;
static __thread int zeroed[64];
static pthread_t selves[THREADS];
/* Each thread's report, printed by main in thread order (timing decides
 * the order threads finish in). */
static char lines[THREADS][2][160];

extern void *__dso_handle;
int __cxa_thread_atexit_impl(void (*fn)(void *), void *arg, void *dso);

static void dtor(void *arg) {
    long id = (long)arg;
    snprintf(lines[id][1], sizeof lines[id][1], "thread %ld: tls destructor, counter %d", id,
             counter);
}

/* 1 if this thread's TLS lies in its stack (as pthread_getattr_np reports
 * it) above the frame of the caller. */
static int tls_at_stack_top(void) {
    volatile char local = 0;
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return -1;
    int got = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    if (got != 0)
        return -1;
    uintptr_t lo = (uintptr_t)addr, hi = lo + size, tls = (uintptr_t)&counter;
    return tls > (uintptr_t)&local && tls < hi;
}

static void *run(void *arg) {
    long id = (long)arg;
    int at_top = tls_at_stack_top();
    selves[id] = pthread_self();
    __cxa_thread_atexit_impl(dtor, arg, &__dso_handle);
    int start = counter, zero = zeroed[id];
    for (int i = 0; i < ROUNDS; i++) {
        counter += (int)id + 1;
        zeroed[id]++;
        errno = 100 + (int)id;
        usleep(1000 * (THREADS - id));
        if (errno != 100 + id)
            printf("thread %ld: errno changed to %d\n", id, errno);
    }
    char buf[64];
    int cpu = sched_getcpu();
    snprintf(lines[id][0], sizeof lines[id][0], "thread %ld: start %d zero %d counter %d zeroed %d alpha %d cpu %s %s; tls at stack top %d", id,
           start, zero, counter, zeroed[id], isalpha('a' + (int)id) != 0, cpu >= 0 ? "ok" : "bad",
           strerror_r(ENOENT, buf, sizeof buf), at_top);
    return NULL;
}

int main(void) {
    counter = 1;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        printf("%s\n%s\n", lines[i][0], lines[i][1]);
    int distinct = 1;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < i; j++)
            if (pthread_equal(selves[i], selves[j]) || pthread_equal(selves[i], pthread_self()))
                distinct = 0;
    printf("main: counter %d distinct self %d\n", counter, distinct);
    return 0;
}
