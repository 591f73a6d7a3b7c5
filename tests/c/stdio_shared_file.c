/* Two threads print whole lines with fprintf to ONE FILE on a pipe that a
 * third thread drains slowly, so a flush blocks while its thread holds the
 * FILE's lock. glibc's FILE lock is recursive, keyed by the thread
 * descriptor: natively the second writer waits for the lock (a futex wait)
 * and every line arrives whole, once, in order. Prints what the reader saw. */
#include "stdio_net.h"

#define LINES 2000
#define PAD 90

static int fds[2];
static FILE *shared;
static unsigned char seen[2][LINES];
static int whole[2], malformed, duplicated, out_of_order;
static long bytes;

static void *writer(void *arg)
{
	long id = (long)arg;
	char pad[PAD + 1];
	memset(pad, 'a' + id, PAD);
	pad[PAD] = 0;
	for (int n = 0; n < LINES; n++)
		fprintf(shared, "w%ld %05d %s\n", id, n, pad);
	return NULL;
}

/* Reads a few lines, then pauses: the pipe stays full. */
static void *reader(void *arg)
{
	char line[4 * PAD];
	int next[2] = { 0, 0 }, k = 0;
	FILE *in = fdopen(fds[0], "r");
	(void)arg;
	while (fgets(line, sizeof line, in)) {
		long id;
		int n, len = (int)strlen(line);
		bytes += len;
		if (++k % 8 == 0)
			usleep(1000);
		if (sscanf(line, "w%ld %d", &id, &n) != 2 || id < 0 || id > 1 || n < 0 || n >= LINES ||
		    len != PAD + 10 || line[9] != 'a' + id || line[len - 2] != 'a' + id) {
			malformed++;
			continue;
		}
		if (seen[id][n]++)
			duplicated++;
		if (n != next[id])
			out_of_order++;
		next[id] = n + 1;
		whole[id]++;
	}
	fclose(in);
	return NULL;
}

int main(void)
{
	pthread_t w[2], r;
	int missing = 0;
	if (pipe(fds))
		die("pipe");
	shared = fdopen(fds[1], "w");
	if (!shared || pthread_create(&r, NULL, reader, NULL))
		die("start");
	for (long i = 0; i < 2; i++)
		if (pthread_create(&w[i], NULL, writer, (void *)i))
			die("pthread_create");
	pthread_join(w[0], NULL);
	pthread_join(w[1], NULL);
	fclose(shared);
	pthread_join(r, NULL);
	for (int id = 0; id < 2; id++)
		for (int n = 0; n < LINES; n++)
			missing += !seen[id][n];
	printf("bytes: %ld of %d\n", bytes, 2 * LINES * (PAD + 10));
	printf("whole lines: %d + %d of %d each\n", whole[0], whole[1], LINES);
	printf("malformed: %d, duplicated: %d, missing: %d, out of order: %d\n", malformed,
	       duplicated, missing, out_of_order);
	return 0;
}
