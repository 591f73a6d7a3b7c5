/* Contract 12: a thread spinning on accept() -> EMFILE without sleeping must
 * not stop the others. The server thread fills the fd table, then retries
 * accept in a tight loop. The client thread waits (usleep: a timer) until the
 * table is full, connects with a socket it made beforehand, sends QUIT and
 * frees one fd; the server's next accept then returns the connection and it
 * reads QUIT. Natively the threads run side by side; as green threads on one
 * OS thread, the client runs only if the spinning server yields. alarm()
 * bounds a hang. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 64

static int listener, client_sock;
static struct sockaddr_in addr;
static int fillers[MAX_FDS];
static int nfillers;
static atomic_int table_full;
static atomic_long emfile;
static char got[16];
static int client_ok;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *server(void *arg)
{
	(void)arg;
	int fd;
	while ((fd = dup(listener)) >= 0) {
		if (nfillers == MAX_FDS)
			die("the fd table did not fill");
		fillers[nfillers++] = fd;
	}
	if (errno != EMFILE)
		die("dup");
	atomic_store(&table_full, 1);
	int conn;
	while ((conn = accept(listener, NULL, NULL)) < 0) {
		if (errno != EMFILE)
			die("accept");
		atomic_fetch_add(&emfile, 1);
	}
	size_t n = 0;
	while (n < 5) {
		ssize_t r = read(conn, got + n, 5 - n);
		if (r <= 0)
			die("read");
		n += (size_t)r;
	}
	close(conn);
	return NULL;
}

static void *client(void *arg)
{
	(void)arg;
	/* Until the server has met EMFILE at least once: on two workers the two
	 * threads truly run at once, and a close before the server's first accept
	 * would let that accept succeed. */
	while (!atomic_load(&table_full) || atomic_load(&emfile) == 0)
		usleep(1000);
	if (connect(client_sock, (struct sockaddr *)&addr, sizeof addr) != 0)
		die("connect");
	if (write(client_sock, "QUIT\n", 5) != 5)
		die("write");
	/* Room for exactly one more fd: the server's accept. */
	close(fillers[nfillers - 1]);
	client_ok = 1;
	return NULL;
}

int main(void)
{
	alarm(60);
	struct rlimit lim;
	if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
		die("getrlimit");
	lim.rlim_cur = MAX_FDS;
	if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
		die("setrlimit");

	listener = socket(AF_INET, SOCK_STREAM, 0);
	client_sock = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0 || client_sock < 0)
		die("socket");
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof addr;
	if (bind(listener, (struct sockaddr *)&addr, len) != 0 || listen(listener, 8) != 0 ||
	    getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
		die("listen");

	pthread_t s, c;
	if (pthread_create(&s, NULL, server, NULL) != 0 || pthread_create(&c, NULL, client, NULL) != 0)
		die("pthread_create");
	pthread_join(c, NULL);
	pthread_join(s, NULL);

	printf("accept failed with EMFILE: %s\n", atomic_load(&emfile) > 0 ? "yes" : "no");
	printf("server read: %s", got);
	printf("client done: %s\n", client_ok ? "yes" : "no");
	return 0;
}
