/* Imports only calls patchall makes cooperative or offloads, so `patchall
 * check` finds green threads safe to try. It never makes them (argc is never
 * that large). */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argv;
    if (argc < 1000) {
        puts("ran");
        return 0;
    }
    char buf[16];
    struct addrinfo *ai;
    struct pollfd p = {0, POLLIN, 0};
    long n = read(0, buf, sizeof buf);
    n += send(1, buf, sizeof buf, 0);
    n += poll(&p, 1, -1);
    n += usleep(10);
    n += getaddrinfo("localhost", NULL, NULL, &ai);
    return (int)n;
}
