/* Per-thread state a thread owns: __thread counters with and without an
 * initial value, errno, pthread_self, TLS destructors, ctype, strerror and
 * sched_getcpu. Prints the same natively and with green threads that have
 * TLS of their own (PATCHALL_GREEN_TLS=own). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
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

static void *run(void *arg) {
    long id = (long)arg;
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
    snprintf(lines[id][0], sizeof lines[id][0], "thread %ld: start %d zero %d counter %d zeroed %d alpha %d cpu %s %s", id, start,
           zero, counter, zeroed[id], isalpha('a' + (int)id) != 0, cpu >= 0 ? "ok" : "bad",
           strerror_r(ENOENT, buf, sizeof buf));
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
