/* fgets, fread and fputs on socket FILEs whose peer is another thread: the
 * main thread's fgets waits 300 ms for the peer's line, its fread for a block
 * the peer sends in pieces, and the peer's fgets for main's reply. A ticker
 * thread counts meanwhile: every wait must let it run (natively the kernel
 * does; under green threads the wait inside libc must park, not block). */
#include "stdio_net.h"

#define BLOCK 20000

static int port;
static char peer_got[128];

static void *peer(void *arg)
{
	static char block[BLOCK];
	FILE *in, *out;
	(void)arg;
	socket_files(connect_to(port), &in, &out);
	usleep(300 * 1000);
	fputs("hello over a socket\n", out);
	fflush(out);
	for (int i = 0; i < BLOCK; i++)
		block[i] = (char)(i * 7);
	for (int i = 0; i < BLOCK; i += 2000) {
		usleep(20 * 1000);
		fwrite(block + i, 1, 2000, out);
		fflush(out);
	}
	if (!fgets(peer_got, sizeof peer_got, in))
		strcpy(peer_got, "(eof)\n");
	fclose(in);
	fclose(out);
	return NULL;
}

static const char *ran(int before)
{
	return ticks - before >= 10 ? "yes" : "no";
}

int main(void)
{
	static char buf[BLOCK];
	char line[128];
	pthread_t p, t = start_ticker();
	int l = listen_any(1, &port), before;
	FILE *in, *out;
	if (pthread_create(&p, NULL, peer, NULL))
		die("pthread_create");
	socket_files(accept(l, NULL, NULL), &in, &out);

	before = ticks;
	if (!fgets(line, sizeof line, in))
		die("fgets");
	printf("fgets: %s", line);
	printf("others ran while fgets waited: %s\n", ran(before));

	before = ticks;
	size_t n = fread(buf, 1, BLOCK, in);
	unsigned long sum = 0;
	int intact = 1;
	for (size_t i = 0; i < n; i++) {
		sum += (unsigned char)buf[i];
		intact &= buf[i] == (char)(i * 7);
	}
	printf("fread: %zu bytes, intact %s, sum %lu\n", n, intact ? "yes" : "no", sum);
	printf("others ran while fread waited: %s\n", ran(before));

	fputs("reply from main\n", out);
	fflush(out);
	pthread_join(p, NULL);
	printf("peer's fgets: %s", peer_got);
	printf("fgets at the peer's close: %s\n", fgets(line, sizeof line, in) ? "data" : "eof");
	fclose(in);
	fclose(out);
	stop_ticker(t);
	return 0;
}
