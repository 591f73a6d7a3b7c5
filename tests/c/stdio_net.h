/* Helpers for the stdio-on-sockets programs: a loopback listener on port 0,
 * a connected client, and a ticker thread whose count shows that other
 * threads ran while one waited inside libc. */
#ifndef PATCHALL_STDIO_NET_H
#define PATCHALL_STDIO_NET_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Listens on 127.0.0.1, an ephemeral port; returns the fd, sets *port. */
static inline int listen_any(int backlog, int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		die("listen");
	*port = ntohs(a.sin_port);
	return fd;
}

static inline int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a))
		die("connect");
	return fd;
}

/* A read FILE and a write FILE on one socket (C forbids switching a "r+"
 * stream from reading to writing without a seek, which a socket lacks). */
static inline void socket_files(int fd, FILE **in, FILE **out)
{
	*in = fdopen(fd, "r");
	*out = fdopen(dup(fd), "w");
	if (!*in || !*out)
		die("fdopen");
}

static atomic_int ticks, ticker_stop;

static inline void *ticker(void *arg)
{
	(void)arg;
	while (!ticker_stop) {
		ticks++;
		usleep(5 * 1000);
	}
	return NULL;
}

static inline pthread_t start_ticker(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, ticker, NULL))
		die("pthread_create");
	return t;
}

static inline void stop_ticker(pthread_t t)
{
	ticker_stop = 1;
	pthread_join(t, NULL);
}

#endif
