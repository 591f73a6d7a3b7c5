/* fork and setuid/setgid from a thread, with other threads alive: one kept
 * native (PATCHALL_NATIVE_THREADS=native_sleeper); then main calls setuid
 * while a thread spins on another OS thread if there is one (the setxid
 * signal then finds a thread with TLS of its own running there). The child of fork uses its thread's
 * __thread state and exits normally. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static __thread int counter = 5;
static atomic_int done, spinning, skipped;
static pid_t main_tid;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void *native_sleeper(void *arg) {
    (void)arg;
    while (!atomic_load(&done))
        usleep(1000);
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    double end = now() + 5;
    /* On main's OS thread a spin would only delay the others. */
    if (gettid() == main_tid) {
        atomic_fetch_add(&skipped, 1);
        return NULL;
    }
    atomic_store(&spinning, 1);
    while (!atomic_load(&done) && now() < end)
        ;
    atomic_store(&spinning, 0);
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    counter += 10;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child: counter %d tid is pid %d\n", counter, gettid() == getpid());
        exit(3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("parent: child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("setuid %d setgid %d seteuid %d setresgid %d\n", setuid(getuid()), setgid(getgid()),
           seteuid(geteuid()), setresgid(-1, getegid(), -1));
    printf("counter %d\n", counter);
    return NULL;
}

/* A thread started by a thread: forker's descriptor is set up while the
 * creator runs. */
static void *worker(void *arg) {
    pthread_t t;
    pthread_create(&t, NULL, forker, arg);
    pthread_join(t, NULL);
    return NULL;
}

int main(void) {
    main_tid = gettid();
    pthread_t n, s[2], w;
    pthread_create(&n, NULL, native_sleeper, NULL);
    pthread_create(&w, NULL, worker, NULL);
    pthread_join(w, NULL);
    /* With a spinner running on another OS thread (there is none with one
     * worker), main changes its ids: that thread must take part. */
    pthread_create(&s[0], NULL, spinner, NULL);
    pthread_create(&s[1], NULL, spinner, NULL);
    for (int i = 0; i < 100 && !atomic_load(&spinning) && atomic_load(&skipped) < 2; i++)
        usleep(10 * 1000);
    int r = setuid(getuid());
    /* Still spinning (or nothing could spin): setuid did not wait for the
     * spinner to give up. */
    int still = atomic_load(&spinning) || atomic_load(&skipped) == 2;
    atomic_store(&done, 1);
    printf("main: setuid %d, spinner still running %d\n", r, still);
    pthread_join(s[0], NULL);
    pthread_join(s[1], NULL);
    pthread_join(n, NULL);
    printf("main: counter %d\n", counter);
    return 0;
}
