/* A green thread burns 300 ms of CPU without a hooked call: under
 * PATCHALL_MONITOR=100ms the monitor reports it once, naming `burn`, a
 * static (non-exported) start routine. main meanwhile parks in pthread_join:
 * a parked coroutine is never reported. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double elapsed_ms(const struct timespec *a, const struct timespec *b) {
    return (b->tv_sec - a->tv_sec) * 1e3 + (b->tv_nsec - a->tv_nsec) / 1e6;
}

static volatile unsigned long sink;

static void *burn(void *arg) {
    (void)arg;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        for (int i = 0; i < 100000; i++)
            sink += i;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (elapsed_ms(&start, &now) < 300);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, burn, NULL) != 0)
        return 1;
    pthread_join(t, NULL);
    printf("burnt\n");
    /* Parked, not held: time for a monitor that a loaded machine runs late
     * to finish its report before the process ends. */
    sleep(1);
    return 0;
}
