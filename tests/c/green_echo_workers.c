/* A thread-per-connection echo server, as an unmodified C program would be
 * written: one pthread per client, a mutex-guarded tally, a condition variable
 * that tells main when every client is done, then main joins every thread.
 * Under green threads with PATCHALL_WORKERS=N the threads spread over N OS
 * threads, so the tally, the condition variable and the joins cross workers.
 *
 * Usage: green_echo_workers CLIENTS. Prints "port P" once listening; after
 * CLIENTS clients have closed: clients, lines and bytes echoed, and how many
 * distinct OS threads served them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_TIDS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_done = PTHREAD_COND_INITIALIZER;
static long done, lines, bytes;
static long tids[MAX_TIDS];
static int n_tids;

static void note_tid(void)
{
	long tid = syscall(SYS_gettid);
	for (int i = 0; i < n_tids; i++)
		if (tids[i] == tid)
			return;
	if (n_tids < MAX_TIDS)
		tids[n_tids++] = tid;
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	long my_bytes = 0, my_lines = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w <= 0) {
				perror("write");
				exit(2);
			}
			off += w;
		}
		long k = 0;
		for (ssize_t i = 0; i < n; i++)
			k += buf[i] == '\n';
		my_bytes += n;
		my_lines += k;
		/* A plain counter under a lock taken at every read, by threads on
		 * every worker: exact only if the mutex excludes across them. */
		pthread_mutex_lock(&lock);
		lines += k;
		pthread_mutex_unlock(&lock);
	}
	close(fd);
	pthread_mutex_lock(&lock);
	done++;
	bytes += my_bytes;
	note_tid();
	pthread_cond_signal(&all_done);
	pthread_mutex_unlock(&lock);
	return (void *)(intptr_t)my_lines;
}

int main(int argc, char **argv)
{
	long clients = argc > 1 ? atol(argv[1]) : 0;
	if (clients <= 0) {
		fprintf(stderr, "usage: %s CLIENTS\n", argv[0]);
		return 2;
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) ||
	    listen(l, 128) || getsockname(l, (struct sockaddr *)&a, &len)) {
		perror("listen");
		return 2;
	}
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	pthread_t *threads = calloc((size_t)clients, sizeof *threads);
	for (long i = 0; i < clients; i++) {
		int c = accept(l, NULL, NULL);
		if (c < 0) {
			perror("accept");
			return 2;
		}
		if (pthread_create(&threads[i], NULL, serve, (void *)(intptr_t)c)) {
			fprintf(stderr, "pthread_create failed\n");
			return 2;
		}
	}
	pthread_mutex_lock(&lock);
	while (done < clients)
		pthread_cond_wait(&all_done, &lock);
	pthread_mutex_unlock(&lock);
	long joined_lines = 0;
	for (long i = 0; i < clients; i++) {
		void *ret;
		if (pthread_join(threads[i], &ret)) {
			fprintf(stderr, "pthread_join failed\n");
			return 2;
		}
		joined_lines += (long)(intptr_t)ret;
	}
	printf("clients %ld\nlines %ld\njoined lines %ld\nbytes %ld\nserving os threads %d\n",
	       done, lines, joined_lines, bytes, n_tids);
	return 0;
}
