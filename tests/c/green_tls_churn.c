/* Starts and joins 20,000 threads, each allocating and freeing blocks of a
 * few sizes (so that malloc gives it a per-thread cache), and prints how
 * much the resident set grew per thread between the 2,000th and the last. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define TOTAL 20000
#define WARM 2000

static __thread char scratch[256];

static long rss_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    if (f)
        fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static void *run(void *arg) {
    void *p[8];
    for (int i = 0; i < 8; i++)
        p[i] = malloc(16 + 40 * i);
    for (int i = 0; i < 8; i++)
        free(p[i]);
    scratch[(long)arg % sizeof scratch]++;
    return NULL;
}

int main(void) {
    long warm = 0;
    for (long i = 0; i < TOTAL; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, (void *)i) != 0)
            return 1;
        pthread_join(t, NULL);
        if (i + 1 == WARM)
            warm = rss_bytes();
    }
    long growth = (rss_bytes() - warm) / (TOTAL - WARM);
    printf("growth per thread %ld bytes\n", growth);
    return 0;
}
