/* Two threads write lines to one pipe until it fills, one with fprintf and
 * one with fwrite, each through a FILE of its own (line buffered, so each
 * line is one write of less than PIPE_BUF: whole on the pipe); a third thread
 * starts reading only after 200 ms, with fgets, and checks every line. */
#include "stdio_net.h"

#define LINES 2000
#define PAD 150

static int fds[2];
static int got[2], bad, out_of_order;

static void *writer(void *arg)
{
	long id = (long)arg;
	char pad[PAD + 1], line[PAD + 32];
	FILE *f = fdopen(id == 0 ? fds[1] : dup(fds[1]), "w");
	if (!f)
		die("fdopen");
	setvbuf(f, NULL, _IOLBF, 0);
	memset(pad, 'a' + id, PAD);
	pad[PAD] = 0;
	for (int n = 0; n < LINES; n++) {
		if (id == 0) {
			fprintf(f, "w%ld %05d %s\n", id, n, pad);
		} else {
			int len = snprintf(line, sizeof line, "w%ld %05d %s\n", id, n, pad);
			fwrite(line, 1, len, f);
		}
	}
	fclose(f);
	return NULL;
}

static void *reader(void *arg)
{
	char line[PAD + 64];
	int next[2] = { 0, 0 };
	FILE *f = fdopen(fds[0], "r");
	(void)arg;
	usleep(200 * 1000);
	while (fgets(line, sizeof line, f)) {
		long id;
		int n, len = (int)strlen(line);
		if (sscanf(line, "w%ld %d", &id, &n) != 2 || id < 0 || id > 1 || len != PAD + 10 ||
		    line[9] != 'a' + id || line[len - 2] != 'a' + id) {
			bad++;
			continue;
		}
		if (n != next[id])
			out_of_order++;
		next[id] = n + 1;
		got[id]++;
	}
	fclose(f);
	return NULL;
}

int main(void)
{
	pthread_t w[2], r, t = start_ticker();
	if (pipe(fds))
		die("pipe");
	int before = ticks;
	if (pthread_create(&r, NULL, reader, NULL) || pthread_create(&w[0], NULL, writer, (void *)0) ||
	    pthread_create(&w[1], NULL, writer, (void *)1))
		die("pthread_create");
	pthread_join(w[0], NULL);
	pthread_join(w[1], NULL);
	printf("writers done; others ran meanwhile: %s\n", ticks - before >= 20 ? "yes" : "no");
	pthread_join(r, NULL);
	printf("fprintf writer: %d lines, fwrite writer: %d lines\n", got[0], got[1]);
	printf("malformed: %d, out of order: %d\n", bad, out_of_order);
	stop_ticker(t);
	return 0;
}
