/*
 * What Syscall User Dispatch costs, in a C program run under
 * `patchall run --green-threads` (main is a coroutine), with
 * PATCHALL_SYSCALL_DISPATCH=on and =off in turn:
 *
 *   inline getppid   a system call no hook sees: with dispatch on it traps,
 *                    the SIGSYS handler finds no hook for it and makes it
 *                    through the gate; off, the kernel runs it directly
 *   libc getppid     the same through libc (not hooked either): as above
 *   hooked read      read(2) of 1 byte from a pipe that has it, through our
 *                    hook (no trap; dispatch adds the selector flips)
 *   stdio fgetc      getc on a FILE over that pipe, unbuffered: glibc's
 *                    internal read, trapped and given to the read hook when on
 *   yield            sched_yield (our hook: a coroutine switch, 1 coroutine)
 *
 * Prints ns per call, the median of 5 batches of N calls (DISPATCH_N, default
 * 100000).
 *
 *   cc -O2 -o target/release/dispatch_bench benches/dispatch.c
 *   for m in on off on off; do PATCHALL_SYSCALL_DISPATCH=$m \
 *     target/release/patchall run --green-threads -- target/release/dispatch_bench; done
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long n_calls = 100000;
static int pipe_fd[2];
static FILE *pipe_file;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static long inline_getppid(void)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_getppid) : "rcx", "r11", "memory");
	return r;
}

static void run_inline(long n)
{
	for (long i = 0; i < n; i++)
		(void)inline_getppid();
}

static void run_libc(long n)
{
	for (long i = 0; i < n; i++)
		(void)getppid();
}

/* Refills the pipe in chunks, outside the timed calls' count of work. */
static void fill(long n)
{
	static char chunk[4096];
	while (n > 0) {
		long k = n < (long)sizeof chunk ? n : (long)sizeof chunk;
		if (write(pipe_fd[1], chunk, k) != k)
			exit(2);
		n -= k;
	}
}

static void run_read(long n)
{
	char c;
	for (long i = 0; i < n; i += 4096) {
		long k = n - i < 4096 ? n - i : 4096;
		fill(k);
		for (long j = 0; j < k; j++)
			if (read(pipe_fd[0], &c, 1) != 1)
				exit(2);
	}
}

static void run_fgetc(long n)
{
	for (long i = 0; i < n; i += 4096) {
		long k = n - i < 4096 ? n - i : 4096;
		fill(k);
		for (long j = 0; j < k; j++)
			if (getc(pipe_file) == EOF)
				exit(2);
	}
}

static void run_yield(long n)
{
	for (long i = 0; i < n; i++)
		sched_yield();
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void measure(const char *name, void (*run)(long))
{
	double ns[5];
	run(n_calls / 10);
	for (int s = 0; s < 5; s++) {
		double t0 = now_ns();
		run(n_calls);
		ns[s] = (now_ns() - t0) / n_calls;
	}
	qsort(ns, 5, sizeof ns[0], cmp);
	printf("%-14s %8.1f ns/call (best %.1f)\n", name, ns[2], ns[0]);
}

int main(void)
{
	const char *n = getenv("DISPATCH_N");
	if (n)
		n_calls = atol(n);
	if (pipe(pipe_fd))
		return 2;
	pipe_file = fdopen(pipe_fd[0], "r");
	setvbuf(pipe_file, NULL, _IONBF, 0);
	const char *mode = getenv("PATCHALL_SYSCALL_DISPATCH");
	printf("dispatch %s\n", mode ? mode : "(default)");
	measure("inline getppid", run_inline);
	measure("libc getppid", run_libc);
	measure("hooked read", run_read);
	measure("stdio fgetc", run_fgetc);
	measure("yield", run_yield);
	return 0;
}
