/* Prints what a launcher could leave behind in the program it starts: each
 * open fd ("fd N TARGET", TARGET as /proc/self/fd/N names it) and each
 * environment entry ("env NAME=VALUE"), one a line. tests/install.rs runs it
 * natively and under `patchall run` and compares. */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern char **environ;

int main(void)
{
	DIR *dir = opendir("/proc/self/fd");
	if (!dir) {
		perror("opendir /proc/self/fd");
		return 1;
	}
	int own = dirfd(dir);
	struct dirent *e;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == own)
			continue;
		char target[PATH_MAX];
		ssize_t n = readlinkat(own, e->d_name, target, sizeof target - 1);
		target[n < 0 ? 0 : n] = '\0';
		printf("fd %s %s\n", e->d_name, target);
	}
	closedir(dir);
	for (char **env = environ; *env; env++)
		printf("env %s\n", *env);
	return 0;
}
