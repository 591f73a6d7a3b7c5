/* Process-shared semaphores, as Python's multiprocessing uses them (a Pool's
 * queue locks are sem_open semaphores; at exit the main thread waits on one
 * that a worker process holds until the pool's own handler thread, in the main
 * process, sends it a sentinel). Each step's output is the same natively and
 * with green threads on one OS thread or two:
 *   1. main waits (sem_wait) on a named semaphore that a thread of its own
 *      posts after a ticker has run: the wait must let the other threads run;
 *   2. the same with sem_init(pshared=1) in shared memory, posted by a child
 *      process, while a ticker runs;
 *   3. sem_timedwait and sem_clockwait on a semaphore nobody posts time out
 *      (ETIMEDOUT) after the others ran; a past deadline gives ETIMEDOUT;
 *   4. a handler without SA_RESTART ends a sem_wait with EINTR, as natively.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int ticks, stop;

static void *ticker(void *arg)
{
    (void)arg;
    while (!stop) {
        ticks++;
        usleep(1000);
    }
    return NULL;
}

static void *poster(void *arg)
{
    /* Posts only once the ticker has run: on one OS thread this needs the
     * waiter to have let the others run. */
    while (ticks < 20)
        usleep(1000);
    sem_post(arg);
    return NULL;
}

static struct timespec after(clockid_t clock, long ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void on_usr1(int sig)
{
    (void)sig;
}

static volatile int woke;

static void *kicker(void *arg)
{
    /* Again and again: one sent before main waits would be lost. */
    while (!woke) {
        pthread_kill(*(pthread_t *)arg, SIGUSR1);
        usleep(20000);
    }
    return NULL;
}

int main(void)
{
    pthread_t tick, post;
    int before, r, e;
    char name[64];

    pthread_create(&tick, NULL, ticker, NULL);

    /* 1. named, posted by a thread of this process */
    snprintf(name, sizeof name, "/patchall-test-%d", (int)getpid());
    sem_t *named = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    if (named == SEM_FAILED) {
        perror("sem_open");
        return 1;
    }
    sem_unlink(name);
    pthread_create(&post, NULL, poster, named);
    r = sem_wait(named);
    printf("named sem_wait: %d, others ran: %s\n", r, ticks >= 20 ? "yes" : "no");
    pthread_join(post, NULL);
    sem_close(named);

    /* 2. sem_init(pshared=1) in shared memory, posted by a child */
    sem_t *shared = mmap(NULL, sizeof(sem_t), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    sem_init(shared, 1, 0);
    before = ticks;
    pid_t child = fork();
    if (child == 0) {
        usleep(50000);
        sem_post(shared);
        _exit(0);
    }
    r = sem_wait(shared);
    printf("shared sem_wait after a child's post: %d, others ran: %s\n", r,
           ticks > before ? "yes" : "no");
    waitpid(child, NULL, 0);
    r = sem_trywait(shared);
    e = errno;
    printf("sem_trywait on zero: %d %s\n", r, r ? strerror(e) : "");

    /* 3. timeouts */
    before = ticks;
    struct timespec rt = after(CLOCK_REALTIME, 60);
    r = sem_timedwait(shared, &rt);
    e = errno;
    printf("sem_timedwait: %d %s, others ran: %s\n", r, strerror(e),
           ticks > before ? "yes" : "no");
    before = ticks;
    struct timespec mono = after(CLOCK_MONOTONIC, 60);
    r = sem_clockwait(shared, CLOCK_MONOTONIC, &mono);
    e = errno;
    printf("sem_clockwait: %d %s, others ran: %s\n", r, strerror(e),
           ticks > before ? "yes" : "no");
    struct timespec past = {0, 0};
    r = sem_timedwait(shared, &past);
    e = errno;
    printf("past deadline: %d %s\n", r, strerror(e));
    struct timespec bad = {0, 2000000000L};
    r = sem_timedwait(shared, &bad);
    e = errno;
    printf("bad deadline: %d %s\n", r, strerror(e));
    sem_post(shared);
    r = sem_timedwait(shared, &rt);
    printf("token there, old deadline: %d\n", r);

    /* 4. EINTR from a handler without SA_RESTART */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t self = pthread_self(), kick;
    pthread_create(&kick, NULL, kicker, &self);
    r = sem_wait(shared);
    e = errno;
    woke = 1;
    printf("sem_wait interrupted: %d %s\n", r, strerror(e));
    pthread_join(kick, NULL);

    stop = 1;
    pthread_join(tick, NULL);
    sem_destroy(shared);
    printf("done\n");
    return 0;
}
