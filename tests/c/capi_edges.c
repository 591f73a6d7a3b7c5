/*
 * capi_edges.c - the C API's contract, one deterministic line per check:
 * error codes (never an abort), errno left alone, ids, nesting, detach + pa_run,
 * yield order, a plain thread driving its scheduler in pa_sleep_ns, and a join
 * from another OS thread. Linked with -lpatchall; see tests/capi.rs.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <patchall.h>

static const char *errname(int e)
{
    switch (e) {
    case 0: return "0";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    case ESRCH: return "ESRCH";
    case EDEADLK: return "EDEADLK";
    default: return strerror(e);
    }
}

static pa_coroutine_t self_id;

static void *inside(void *arg)
{
    (void)arg;
    printf("inside: self matches %d, in_coroutine %d\n", pa_self() == self_id,
           pa_in_coroutine());
    printf("inside: join self %s, run %s\n", errname(pa_join(pa_self(), NULL)),
           errname(pa_run()));
    return NULL;
}

static void *child(void *arg)
{
    pa_sleep_ms(5);
    return (void *)((uintptr_t)arg * 2);
}

static void *parent(void *arg)
{
    (void)arg;
    pa_coroutine_t c = pa_spawn(child, (void *)21, NULL);
    void *got = NULL;
    int err = pa_join(c, &got); /* parks the parent, not the thread */
    printf("nested: child %s, joined %s, value %" PRIuPTR "\n", c ? "spawned" : "failed",
           errname(err), (uintptr_t)got);
    return NULL;
}

static int detached_done;

static void *detached(void *arg)
{
    pa_sleep_ms((uint64_t)(uintptr_t)arg);
    detached_done++;
    return NULL;
}

static char order[64];

static void *taker(void *arg)
{
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(order);
        snprintf(order + n, sizeof order - n, "%s%d ", (const char *)arg, i);
        pa_yield();
    }
    return NULL;
}

static int flag;

static void *set_flag(void *arg)
{
    (void)arg;
    flag = 1;
    return NULL;
}

static void *answer(void *arg)
{
    (void)arg;
    pa_sleep_ms(30);
    return (void *)42;
}

struct cross {
    pa_coroutine_t co;
    int err;
    void *value;
    int local_ran;
};

static void *bump(void *arg)
{
    pa_sleep_ms(1);
    ++*(int *)arg;
    return NULL;
}

static void *joiner_thread(void *arg)
{
    struct cross *x = arg;
    x->err = pa_join(x->co, &x->value); /* a coroutine of the main thread */
    /* This thread has a scheduler of its own now; its coroutines run here. */
    for (int i = 0; i < 3; i++)
        pa_detach(pa_spawn(bump, &x->local_ran, NULL));
    pa_run();
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("outside: self %" PRIu64 ", in_coroutine %d, run %s\n", pa_self(), pa_in_coroutine(),
           errname(pa_run()));

    errno = 0;
    pa_coroutine_t none = pa_spawn(NULL, NULL, NULL);
    printf("spawn NULL: %" PRIu64 " %s\n", none, errname(errno));

    pa_options huge = {.name = "huge", .stack_size = (size_t)1 << 50};
    errno = 0;
    none = pa_spawn(child, NULL, &huge);
    printf("spawn with a 1 PiB stack: %" PRIu64 " %s\n", none, errname(errno));

    printf("unknown ids: join(0) %s, join(1<<60) %s, detach(0) %s\n", errname(pa_join(0, NULL)),
           errname(pa_join((pa_coroutine_t)1 << 60, NULL)), errname(pa_detach(0)));

    errno = 12345;
    pa_yield();
    pa_sleep_ms(0);
    pa_sleep_ns(1000);
    pa_detach(0);
    pa_run();
    printf("errno left alone: %s\n", errno == 12345 ? "yes" : "no");

    self_id = pa_spawn(inside, NULL, NULL);
    printf("inside: joined %s\n", errname(pa_join(self_id, NULL)));

    pa_coroutine_t p = pa_spawn(parent, NULL, NULL);
    printf("nested: parent joined %s\n", errname(pa_join(p, NULL)));

    pa_coroutine_t d1 = pa_spawn(detached, (void *)20, NULL);
    pa_coroutine_t d2 = pa_spawn(detached, (void *)10, NULL);
    int first = pa_detach(d1), second = pa_detach(d2);
    int again = pa_detach(d1), join = pa_join(d2, NULL);
    printf("detach: %s %s, again %s, join %s\n", errname(first), errname(second), errname(again),
           errname(join));
    int before = detached_done, ran = pa_run();
    printf("detach: before run %d, run %s, after run %d\n", before, errname(ran), detached_done);

    pa_coroutine_t a = pa_spawn(taker, "a", NULL);
    pa_coroutine_t b = pa_spawn(taker, "b", NULL);
    pa_join(a, NULL);
    pa_join(b, NULL);
    printf("yield order: %s\n", order);

    pa_options small = {.name = NULL, .stack_size = 16 * 1024};
    pa_detach(pa_spawn(set_flag, NULL, &small));
    printf("plain thread: flag %d before pa_sleep_ns, ", flag);
    pa_sleep_ns(2 * 1000 * 1000);
    printf("%d after\n", flag);

    struct cross x = {.co = pa_spawn(answer, NULL, NULL)};
    pthread_t t;
    pthread_create(&t, NULL, joiner_thread, &x);
    pa_run(); /* runs `answer` here while the other thread waits in pa_join */
    pthread_join(t, NULL);
    printf("cross-thread join: %s, value %" PRIuPTR ", its own coroutines ran %d\n",
           errname(x.err), (uintptr_t)x.value, x.local_ran);

    printf("done\n");
    return 0;
}
