/* A green program that only sleeps: a thread sleeps 1 s while main joins it.
 * Prints "sleeping" first, so that a test can count the OS threads meanwhile
 * (/proc/<pid>/status): with the monitor off, one. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *nap(void *arg) {
    (void)arg;
    sleep(1);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, nap, NULL) != 0)
        return 1;
    printf("sleeping\n");
    fflush(stdout);
    pthread_join(t, NULL);
    printf("woke\n");
    return 0;
}
