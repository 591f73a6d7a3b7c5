/* system("sleep 0.3") in one thread while another keeps counting: natively
 * the kernel runs both; under green threads the wait inside system() (wait4)
 * must park. Also popen/pclose of a slow command, read with fgets. */
#include "stdio_net.h"
#include <sys/wait.h>

static void *run_system(void *arg)
{
	(void)arg;
	int before = ticks;
	int rc = system("sleep 0.3; exit 3");
	printf("system: exited %d\n", WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
	printf("others ran during system: %s\n", ticks - before >= 20 ? "yes" : "no");

	before = ticks;
	FILE *p = popen("sleep 0.2; echo from popen", "r");
	char line[64] = "(nothing)\n";
	if (!p || !fgets(line, sizeof line, p))
		die("popen");
	printf("popen: %s", line);
	printf("pclose: %d\n", WEXITSTATUS(pclose(p)));
	printf("others ran during popen: %s\n", ticks - before >= 10 ? "yes" : "no");
	return NULL;
}

int main(void)
{
	pthread_t s, t = start_ticker();
	if (pthread_create(&s, NULL, run_system, NULL))
		die("pthread_create");
	pthread_join(s, NULL);
	stop_ticker(t);
	return 0;
}
