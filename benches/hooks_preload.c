/*
 * benches/hooks.rs for the preload face: an unmodified C program's read/recv
 * (through the PLT, so through libpatchall.so's hooks when it is preloaded)
 * against libc's own functions called directly. Each loop is a function of its
 * own so that callgrind can count it (scripts/hook-cost runs it).
 *
 *   prog fresh     the process never spawns (the preload's common case)
 *   prog engaged   one coroutine ran first (pa_spawn + pa_join, looked up in
 *                  the preloaded library)
 *
 * HOOKS_BATCH sets the calls per loop (default 10000).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);

static read_fn libc_read_fn;
static recv_fn libc_recv_fn;

__attribute__((noinline)) static void hooked_read(int fd, char *buf, long n) {
    for (long i = 0; i < n; i++) (void)!read(fd, buf, 64);
}
__attribute__((noinline)) static void libc_read(int fd, char *buf, long n) {
    for (long i = 0; i < n; i++) (void)!libc_read_fn(fd, buf, 64);
}
__attribute__((noinline)) static void hooked_recv(int fd, char *buf, long n) {
    for (long i = 0; i < n; i++) (void)!recv(fd, buf, 64, 0);
}
__attribute__((noinline)) static void libc_recv(int fd, char *buf, long n) {
    for (long i = 0; i < n; i++) (void)!libc_recv_fn(fd, buf, 64, 0);
}

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv) {
    int sv[2];
    char buf[64];
    const char *batch = getenv("HOOKS_BATCH");
    long n = batch ? atol(batch) : 10000;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0) {
        perror("socketpair");
        return 1;
    }
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    libc_read_fn = libc ? (read_fn)dlsym(libc, "read") : NULL;
    libc_recv_fn = libc ? (recv_fn)dlsym(libc, "recv") : NULL;
    if (!libc_read_fn || !libc_recv_fn) {
        fprintf(stderr, "libc's read/recv not found\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "engaged") == 0) {
        uint64_t (*spawn)(void *(*)(void *), void *, const void *) =
            (uint64_t (*)(void *(*)(void *), void *, const void *))dlsym(RTLD_DEFAULT, "pa_spawn");
        int (*join)(uint64_t, void **) = (int (*)(uint64_t, void **))dlsym(RTLD_DEFAULT, "pa_join");
        if (!spawn || !join || join(spawn(nothing, NULL, NULL), NULL) != 0) {
            fprintf(stderr, "engaged needs libpatchall.so preloaded\n");
            return 1;
        }
    }
    /* The hooks resolve libc's address on their first call: not in the loops. */
    (void)!read(sv[0], buf, 64);
    (void)!recv(sv[0], buf, 64, 0);
    hooked_read(sv[0], buf, n);
    libc_read(sv[0], buf, n);
    hooked_recv(sv[0], buf, n);
    libc_recv(sv[0], buf, n);
    return 0;
}
