/* pa_print_run_info from C: a named coroutine parked in read on a pipe, an
 * unnamed one asleep in its start function `nap` (linked with -rdynamic, so
 * the dynamic symbol table names it). Prints "reader fd N", then the dump,
 * then "done" once both finished. */
#include <patchall.h>
#include <stdio.h>
#include <unistd.h>

static int fds[2];

void *reader_main(void *arg)
{
	char c;
	(void)arg;
	return read(fds[0], &c, 1) == 1 ? (void *)1 : NULL;
}

void *nap(void *arg)
{
	(void)arg;
	pa_sleep_ms(300);
	return NULL;
}

int main(void)
{
	if (pipe(fds) < 0) {
		perror("pipe");
		return 1;
	}
	printf("reader fd %d\n", fds[0]);
	fflush(stdout);
	pa_options named = { .name = "reader", .stack_size = 0 };
	pa_coroutine_t r = pa_spawn(reader_main, NULL, &named);
	pa_coroutine_t n = pa_spawn(nap, NULL, NULL);
	if (r == 0 || n == 0) {
		perror("pa_spawn");
		return 1;
	}
	/* This plain thread drives both into their waits. */
	pa_sleep_ms(50);
	if (pa_print_run_info(1) != 0) {
		perror("pa_print_run_info");
		return 1;
	}
	if (write(fds[1], "x", 1) != 1)
		return 1;
	void *got = NULL;
	if (pa_join(r, &got) != 0 || got != (void *)1 || pa_join(n, NULL) != 0)
		return 1;
	printf("done\n");
	return 0;
}
