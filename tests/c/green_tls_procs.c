/* fork and setuid/setgid from a thread, with other threads alive: one kept
 * native (PATCHALL_NATIVE_THREADS=native_sleeper) and one spinning on
 * another OS thread if there is one (the setxid signal then finds a thread
 * with TLS of its own running). The child of fork uses its thread's
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
static atomic_int done;
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
    double end = now() + 2;
    /* On main's OS thread a spin would only delay the others. */
    while (gettid() != main_tid && !atomic_load(&done) && now() < end)
        ;
    return NULL;
}

static void *worker(void *arg) {
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

int main(void) {
    main_tid = gettid();
    pthread_t n, s, w;
    pthread_create(&n, NULL, native_sleeper, NULL);
    pthread_create(&s, NULL, spinner, NULL);
    pthread_create(&w, NULL, worker, NULL);
    pthread_join(w, NULL);
    atomic_store(&done, 1);
    pthread_join(s, NULL);
    pthread_join(n, NULL);
    printf("main: counter %d\n", counter);
    return 0;
}
