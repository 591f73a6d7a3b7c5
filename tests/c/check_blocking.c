/* Imports calls of every kind `patchall check` tells apart; it never makes
 * them (argc is never that large), so the imports are all that matters:
 * cooperative (read, connect, sleep), offloaded (getaddrinfo, waitpid), file
 * (open, fsync), green (pthread_mutex_lock, sem_wait), in some uses blocking
 * (fgets, fcntl, pthread_mutexattr_setpshared) and blocking (flock, msgrcv,
 * semop, mq_receive). */
#include <fcntl.h>
#include <mqueue.h>
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argv;
    if (argc < 1000)
        return 0;
    char buf[16];
    struct addrinfo *ai;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutexattr_t ma;
    sem_t s;
    struct sembuf op = {0, -1, 0};
    int fd = open("/dev/null", O_RDONLY);
    long n = read(fd, buf, sizeof buf);
    n += connect(fd, NULL, 0);
    n += sleep(1);
    n += getaddrinfo("localhost", NULL, NULL, &ai);
    n += waitpid(-1, NULL, 0);
    n += fsync(fd);
    n += pthread_mutex_lock(&m);
    n += sem_wait(&s);
    n += fgets(buf, sizeof buf, stdin) != NULL;
    n += fcntl(fd, F_GETFL);
    n += pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    n += flock(fd, LOCK_EX);
    n += msgrcv(0, buf, sizeof buf, 0, 0);
    n += semop(0, &op, 1);
    n += mq_receive(0, buf, sizeof buf, NULL);
    return (int)n;
}
