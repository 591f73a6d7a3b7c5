/* A green thread waits 300 ms in flock(2), which patchall does not hook: it
 * blocks its OS thread without parking. A child process holds the lock and
 * lets go after 300 ms. Under PATCHALL_MONITOR=100ms the wait is reported,
 * its stack showing flock called from `wait_for_lock`. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *path;

static void *wait_for_lock(void *arg) {
    (void)arg;
    int fd = open(path, O_RDWR);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        perror("flock");
        exit(1);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    path = argv[1];
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        int fd = open(path, O_RDWR);
        if (fd < 0 || flock(fd, LOCK_EX) != 0)
            _exit(1);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        usleep(300 * 1000);
        _exit(0);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        return 1;
    pthread_t t;
    if (pthread_create(&t, NULL, wait_for_lock, NULL) != 0)
        return 1;
    pthread_join(t, NULL);
    int status;
    waitpid(child, &status, 0);
    printf("locked after the child let go\n");
    /* Parked, not held: time for a late monitor to finish its report. */
    sleep(1);
    return 0;
}
