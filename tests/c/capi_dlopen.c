/* The C API from a libpatchall.so loaded with dlopen. The library reaches
 * its hot thread-locals in the initial-exec model (runtime::tp_local): its
 * TLS must then go into the static block, where glibc keeps room for
 * libraries loaded after the start (dlopen fails if there is none).
 *
 *   capi_dlopen PATH-TO-libpatchall.so
 *
 * On the main thread and on a second thread, three coroutines sleep 30, 10
 * and 20 ms and note the order they woke in (10 20 30 if they slept side by
 * side); each checks pa_in_coroutine() inside, the thread outside. Prints
 * one line per thread. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <patchall.h>

static pa_coroutine_t (*spawn)(void *(*)(void *), void *, const pa_options *);
static int (*join)(pa_coroutine_t, void **);
static int (*sleep_ms)(uint64_t);
static int (*in_coroutine)(void);

/* One thread's naps: the coroutines of a thread share it without locks. */
struct round {
    uintptr_t woke[3];
    int n;
};

struct nap {
    uintptr_t ms;
    struct round *round;
};

static void *napper(void *arg)
{
    struct nap *nap = arg;
    if (!in_coroutine())
        return NULL;
    sleep_ms(nap->ms);
    nap->round->woke[nap->round->n++] = nap->ms;
    return nap;
}

static void *round_of_naps(void *name)
{
    struct round round = {.n = 0};
    struct nap naps[3] = {{30, &round}, {10, &round}, {20, &round}};
    pa_coroutine_t c[3];
    for (int i = 0; i < 3; i++)
        c[i] = spawn(napper, &naps[i], NULL);
    int outside = in_coroutine();
    for (int i = 0; i < 3; i++) {
        void *r = NULL;
        if (!c[i] || join(c[i], &r) != 0 || r != &naps[i])
            return NULL;
    }
    printf("%s: outside %d, woke after %lu %lu %lu ms\n", (const char *)name, outside,
           (unsigned long)round.woke[0], (unsigned long)round.woke[1], (unsigned long)round.woke[2]);
    fflush(stdout);
    return name;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: capi_dlopen LIBPATCHALL\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    spawn = (pa_coroutine_t(*)(void *(*)(void *), void *, const pa_options *))dlsym(lib, "pa_spawn");
    join = (int (*)(pa_coroutine_t, void **))dlsym(lib, "pa_join");
    sleep_ms = (int (*)(uint64_t))dlsym(lib, "pa_sleep_ms");
    in_coroutine = (int (*)(void))dlsym(lib, "pa_in_coroutine");
    if (!spawn || !join || !sleep_ms || !in_coroutine) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    if (!round_of_naps("main"))
        return 1;
    pthread_t t;
    void *done = NULL;
    if (pthread_create(&t, NULL, round_of_naps, "thread") != 0 || pthread_join(t, &done) != 0 || !done)
        return 1;
    return 0;
}
