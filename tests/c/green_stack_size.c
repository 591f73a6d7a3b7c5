/* Each thread reads its own stack bounds (pthread_getattr_np on itself) and
 * checks that one of its locals lies inside them; a second thread asks for
 * 1 MiB with pthread_attr_setstacksize. Prints
 *   default <bytes>      (the thread created without an attribute)
 *   attr <bytes>         (the thread that asked for 1 MiB)
 *   glibc <bytes>        (glibc's default thread stack size)
 * and exits 1 if a local lies outside its thread's reported stack. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *own_stack(void *arg) {
    (void)arg;
    volatile char local = 0;
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) != 0 ||
        pthread_attr_getstack(&attr, &addr, &size) != 0) {
        fprintf(stderr, "cannot read the thread's stack\n");
        exit(2);
    }
    pthread_attr_destroy(&attr);
    uintptr_t lo = (uintptr_t)addr, here = (uintptr_t)&local;
    if (here < lo || here >= lo + size) {
        fprintf(stderr, "a local at %#lx lies outside [%#lx, %#lx)\n", (unsigned long)here,
                (unsigned long)lo, (unsigned long)(lo + size));
        exit(1);
    }
    return (void *)size;
}

static size_t run(const pthread_attr_t *attr) {
    pthread_t t;
    void *size;
    if (pthread_create(&t, attr, own_stack, NULL) != 0 || pthread_join(t, &size) != 0) {
        fprintf(stderr, "pthread_create/join failed\n");
        exit(2);
    }
    return (size_t)size;
}

int main(void) {
    pthread_attr_t attr;
    size_t glibc;
    pthread_getattr_default_np(&attr);
    pthread_attr_getstacksize(&attr, &glibc);
    pthread_attr_destroy(&attr);

    printf("default %zu\n", run(NULL));
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    printf("attr %zu\n", run(&attr));
    pthread_attr_destroy(&attr);
    printf("glibc %zu\n", glibc);
    return 0;
}
