/* A plain thread-per-connection echo server, written as if patchall did not
 * exist: an accept loop, one detached pthread per client echoing bytes until
 * EOF, a mutex-guarded count of bytes and connections served, and a condvar on
 * which main waits for the last client thread before it prints the count.
 *
 *   echo_threads [LIMIT]
 *
 * Binds 127.0.0.1:0 and prints "port N" as its first line. It stops accepting
 * after LIMIT client connections (if LIMIT > 0), or when a connection sends
 * "QUIT\n" as its first bytes; then it waits for every client thread to finish
 * and prints "served B bytes in C connections" (the QUIT connection is not
 * counted) and exits 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_done = PTHREAD_COND_INITIALIZER;
/* All guarded by `lock`. */
static long active;
static unsigned long bytes_served;
static unsigned long connections_served;
static int quitting;

static struct sockaddr_in bound;

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The accept loop sits in accept(): after setting `quitting`, a connection of
 * our own is what wakes it to look. */
static void wake_accept_loop(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&bound, sizeof bound) < 0)
		perror("echo_threads: connect to self");
	if (fd >= 0)
		close(fd);
}

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	char buf[4096];
	unsigned long mine = 0;
	int quit = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (mine == 0 && n == 5 && memcmp(buf, "QUIT\n", 5) == 0) {
			quit = 1;
			break;
		}
		if (write_all(fd, buf, (size_t)n) < 0)
			break;
		mine += (unsigned long)n;
		pthread_mutex_lock(&lock);
		bytes_served += (unsigned long)n;
		pthread_mutex_unlock(&lock);
	}
	close(fd);
	if (quit) {
		pthread_mutex_lock(&lock);
		quitting = 1;
		pthread_mutex_unlock(&lock);
		wake_accept_loop();
	}
	pthread_mutex_lock(&lock);
	if (!quit)
		connections_served++;
	if (--active == 0)
		pthread_cond_broadcast(&all_done);
	pthread_mutex_unlock(&lock);
	return NULL;
}

int main(int argc, char **argv)
{
	long limit = argc > 1 ? atol(argv[1]) : 0;
	/* A client that leaves mid-echo must not kill the server. */
	signal(SIGPIPE, SIG_IGN);

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	bound.sin_family = AF_INET;
	bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof bound;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&bound, sizeof bound) < 0 ||
	    listen(lfd, 4096) < 0 || getsockname(lfd, (struct sockaddr *)&bound, &len) < 0) {
		perror("echo_threads: listen");
		return 1;
	}
	printf("port %d\n", ntohs(bound.sin_port));
	fflush(stdout);

	long accepted = 0;
	while (limit == 0 || accepted < limit) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("echo_threads: accept");
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of fds: let clients leave, then go on. */
				usleep(10 * 1000);
				continue;
			}
			return 1;
		}
		pthread_mutex_lock(&lock);
		int stop = quitting;
		if (!stop)
			active++;
		pthread_mutex_unlock(&lock);
		if (stop) {
			close(fd);
			break;
		}
		pthread_t t;
		int rc = pthread_create(&t, NULL, serve, (void *)(long)fd);
		if (rc != 0) {
			fprintf(stderr, "echo_threads: pthread_create: %s\n", strerror(rc));
			close(fd);
			pthread_mutex_lock(&lock);
			active--;
			pthread_mutex_unlock(&lock);
			continue;
		}
		pthread_detach(t);
		accepted++;
	}
	close(lfd);

	pthread_mutex_lock(&lock);
	while (active > 0)
		pthread_cond_wait(&all_done, &lock);
	printf("served %lu bytes in %lu connections\n", bytes_served, connections_served);
	pthread_mutex_unlock(&lock);
	return 0;
}
