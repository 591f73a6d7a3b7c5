/* A program that closes or takes over every fd it did not open, as daemons,
 * bind9 and shells do, between two rounds of threads (contract 10): the
 * runtime's own fds (epoll, waker, ...) must look closed to it and survive.
 * argv[1] picks how: loop (close 3..1023), range (close_range(3, ~0U, 0)),
 * unshare (the same with CLOSE_RANGE_UNSHARE), cloexec (close_range with
 * CLOSE_RANGE_CLOEXEC, then closefrom), from (closefrom(3)), dup2 (dup2 onto
 * every number 4..1023, threads, then close them all), dupfd (F_DUPFD at
 * numbers up to 1020). Each round: a thread sleeps, then two threads pass
 * messages over a pipe while main sleeps. The output is the same natively and
 * with green threads on any number of workers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MESSAGES 100

static int pipefd[2];

static void *sleeper(void *p)
{
	(void)p;
	usleep(2000);
	return (void *)1;
}

static void *writer(void *p)
{
	(void)p;
	for (int i = 0; i < MESSAGES; i++) {
		if (write(pipefd[1], &i, sizeof i) != sizeof i)
			return (void *)0;
		if (i % 10 == 0)
			usleep(500);
	}
	close(pipefd[1]);
	return (void *)1;
}

static void *reader(void *p)
{
	long *sum = p;
	int v, n = 0;
	ssize_t r;
	while ((r = read(pipefd[0], &v, sizeof v)) == sizeof v) {
		*sum += v;
		n++;
	}
	close(pipefd[0]);
	return (void *)(intptr_t)n;
}

/* A thread that sleeps, then a pipe between two threads while main sleeps. */
static void round_of_threads(const char *when)
{
	pthread_t s, w, r;
	void *slept, *wrote, *got;
	long sum = 0;
	if (pthread_create(&s, NULL, sleeper, NULL) != 0) {
		printf("%s: pthread_create failed\n", when);
		exit(1);
	}
	pthread_join(s, &slept);
	if (pipe(pipefd) != 0) {
		printf("%s: pipe: %s\n", when, strerror(errno));
		exit(1);
	}
	pthread_create(&r, NULL, reader, &sum);
	pthread_create(&w, NULL, writer, NULL);
	usleep(3000);
	pthread_join(w, &wrote);
	pthread_join(r, &got);
	printf("%s: slept %d, wrote %d, read %d messages, sum %ld\n", when, (int)(intptr_t)slept,
	       (int)(intptr_t)wrote, (int)(intptr_t)got, sum);
}

/* How many of 3..1023 are open (fcntl F_GETFD says so). */
static int open_fds(void)
{
	int n = 0;
	for (int fd = 3; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static int close_all(void)
{
	int closed = 0;
	for (int fd = 3; fd < 1024; fd++)
		if (close(fd) == 0)
			closed++;
	return closed;
}

int main(int argc, char **argv)
{
	const char *how = argc > 1 ? argv[1] : "";
	setvbuf(stdout, NULL, _IOLBF, 0);
	round_of_threads("before");
	if (strcmp(how, "loop") == 0) {
		printf("close loop: %d closed\n", close_all());
	} else if (strcmp(how, "range") == 0) {
		printf("close_range: %d\n", close_range(3, ~0U, 0));
	} else if (strcmp(how, "unshare") == 0) {
		printf("close_range unshare: %d\n", close_range(3, ~0U, CLOSE_RANGE_UNSHARE));
	} else if (strcmp(how, "cloexec") == 0) {
		printf("close_range cloexec: %d\n", close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
		closefrom(3);
	} else if (strcmp(how, "from") == 0) {
		closefrom(3);
	} else if (strcmp(how, "dup2") == 0) {
		closefrom(3);
		int null = open("/dev/null", O_RDWR);
		int ok = 0, wrong = 0;
		for (int fd = 4; fd < 1024; fd++) {
			int r = dup2(null, fd);
			if (r == fd)
				ok++;
			else
				wrong++;
		}
		printf("dup2 onto 4..1023: %d ok, %d failed; open now %d\n", ok, wrong, open_fds());
		round_of_threads("between");
		int r3 = dup3(null, 1000, O_CLOEXEC);
		printf("dup3 onto 1000: %d; close loop: %d closed\n", r3, close_all());
	} else if (strcmp(how, "dupfd") == 0) {
		closefrom(3);
		int bases[] = { 900, 960, 1000, 1020 };
		for (unsigned i = 0; i < sizeof bases / sizeof bases[0]; i++) {
			int r = fcntl(1, i % 2 ? F_DUPFD_CLOEXEC : F_DUPFD, bases[i]);
			printf("F_DUPFD from %d: %d\n", bases[i], r);
		}
		printf("close loop: %d closed\n", close_all());
	} else {
		printf("usage: green_close_fds loop|range|unshare|cloexec|from|dup2|dupfd\n");
		return 2;
	}
	printf("open after: %d; close(3..1023) then: %d closed\n", open_fds(), close_all());
	round_of_threads("after");
	return 0;
}
