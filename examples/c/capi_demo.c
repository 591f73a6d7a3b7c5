/*
 * capi_demo.c - patchall's C API on one thread.
 *
 * Three coroutines sleep 90, 30 and 60 ms; a reader blocks in a plain read()
 * on a pipe that a writer fills after 120 ms. All five share the main thread.
 * Because libpatchall.so defines read(), the reader's read parks only the
 * reader: the sleepers wake in time order while it waits, then the writer
 * writes and the reader gets its bytes. Were read() the plain libc call, it
 * would block the thread, and with it the writer: the demo would hang.
 *
 * Build and run (from the repository root, after `cargo build -p patchall-preload`):
 *   cc -Iinclude -o capi_demo examples/c/capi_demo.c -Ltarget/debug -lpatchall
 *   LD_LIBRARY_PATH=target/debug ./capi_demo
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <patchall.h>

static int pipe_fds[2];

static void *sleeper(void *arg)
{
    uint64_t ms = (uint64_t)(uintptr_t)arg;
    pa_sleep_ms(ms);
    printf("sleeper %" PRIu64 " ms: awake\n", ms);
    return (void *)(uintptr_t)(ms / 10);
}

static void *reader(void *arg)
{
    (void)arg;
    char buf[64];
    printf("reader: read() on an empty pipe\n");
    ssize_t n = read(pipe_fds[0], buf, sizeof buf - 1); /* parks this coroutine only */
    if (n < 0) {
        printf("reader: read failed: %s\n", strerror(errno));
        return (void *)(intptr_t)-1;
    }
    buf[n] = '\0';
    printf("reader: got \"%s\"\n", buf);
    return (void *)(intptr_t)n;
}

static void *writer(void *arg)
{
    const char *msg = arg;
    pa_sleep_ms(120);
    printf("writer: writing after 120 ms\n");
    if (write(pipe_fds[1], msg, strlen(msg)) < 0)
        printf("writer: write failed: %s\n", strerror(errno));
    return NULL;
}

int main(void)
{
    /* Line-buffered, so the order of the lines is the order of the printf calls
     * even if the output is a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(pipe_fds) != 0) {
        perror("pipe");
        return 1;
    }

    pa_options named = {.name = "reader", .stack_size = 64 * 1024};
    pa_coroutine_t r = pa_spawn(reader, NULL, &named);
    pa_coroutine_t w = pa_spawn(writer, "hello through a pipe", NULL);
    uint64_t naps[] = {90, 30, 60};
    pa_coroutine_t s[3];
    for (int i = 0; i < 3; i++)
        s[i] = pa_spawn(sleeper, (void *)(uintptr_t)naps[i], NULL);
    if (!r || !w || !s[0] || !s[1] || !s[2]) {
        perror("pa_spawn");
        return 1;
    }
    printf("main: spawned 5 coroutines (pa_in_coroutine() = %d)\n", pa_in_coroutine());

    /* Joining drives this thread's scheduler: every coroutine runs meanwhile. */
    void *result;
    int err = pa_join(r, &result);
    printf("main: joined reader: %s, %" PRIdPTR " bytes\n", err ? strerror(err) : "ok",
           (intptr_t)result);
    for (int i = 0; i < 3; i++) {
        err = pa_join(s[i], &result);
        printf("main: joined sleeper %" PRIu64 ": %s, returned %" PRIuPTR "\n", naps[i],
               err ? strerror(err) : "ok", (uintptr_t)result);
    }
    err = pa_join(w, NULL);
    printf("main: joined writer: %s\n", err ? strerror(err) : "ok");
    err = pa_join(w, NULL);
    printf("main: joining the writer again: %s\n", err == ESRCH ? "ESRCH" : "unexpected");
    return 0;
}
