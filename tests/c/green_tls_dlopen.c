/* Built twice: with -DLIB as a library whose TLS is initial-exec, and as a
 * program whose threads, all started before the library is loaded, each
 * read its variable (initial value 42) after one of them dlopens it. */
#define _GNU_SOURCE
#ifdef LIB
__thread int ie_var __attribute__((tls_model("initial-exec"))) = 42;
int ie_next(void) { return ie_var++; }
#else
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define THREADS 3
static int (*next)(void);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t loaded = PTHREAD_COND_INITIALIZER;
static const char *path;
static int got[THREADS][2];

static void *run(void *arg) {
    long id = (long)arg;
    pthread_mutex_lock(&lock);
    if (id == 0) {
        void *h = dlopen(path, RTLD_NOW);
        next = h ? (int (*)(void))dlsym(h, "ie_next") : NULL;
        if (!next)
            fprintf(stderr, "dlopen: %s\n", dlerror());
        pthread_cond_broadcast(&loaded);
    }
    while (!next)
        pthread_cond_wait(&loaded, &lock);
    pthread_mutex_unlock(&lock);
    got[id][0] = next();
    usleep(1000);
    got[id][1] = next();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    path = argv[1];
    pthread_t t[THREADS];
    for (long i = THREADS - 1; i >= 0; i--)
        pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        printf("thread %d: %d %d\n", i, got[i][0], got[i][1]);
    printf("main: %d\n", next ? next() : -1);
    return 0;
}
#endif
