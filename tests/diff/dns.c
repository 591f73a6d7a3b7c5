/* Name resolution that needs no network: "localhost" (from /etc/hosts),
 * numeric hosts and services, bad arguments; from threads too. Prints error
 * names and sorted families, never addresses that could vary. */
#include "diff.h"
#include <netdb.h>

static const char *eai(int e)
{
    switch (e) {
    case 0:
        return "0";
    case EAI_NONAME:
        return "EAI_NONAME";
    case EAI_SERVICE:
        return "EAI_SERVICE";
    case EAI_FAMILY:
        return "EAI_FAMILY";
    case EAI_SOCKTYPE:
        return "EAI_SOCKTYPE";
    case EAI_BADFLAGS:
        return "EAI_BADFLAGS";
    case EAI_AGAIN:
        return "EAI_AGAIN";
    case EAI_FAIL:
        return "EAI_FAIL";
    case EAI_MEMORY:
        return "EAI_MEMORY";
    case EAI_SYSTEM:
        return "EAI_SYSTEM";
    case EAI_ADDRFAMILY:
        return "EAI_ADDRFAMILY";
    case EAI_NODATA:
        return "EAI_NODATA";
    case EAI_OVERFLOW:
        return "EAI_OVERFLOW";
    default:
        return "EAI_?";
    }
}

/* "r=NAME families=[...] ports=[...] count=N", families and ports sorted. */
static const char *resolve(const char *host, const char *serv, int family, int socktype,
                           int flags)
{
    static __thread char out[256];
    struct addrinfo hints = {.ai_family = family, .ai_socktype = socktype, .ai_flags = flags};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host, serv, &hints, &res);
    if (r != 0) {
        snprintf(out, sizeof out, "%s", eai(r));
        return out;
    }
    int fam[2] = {0, 0}, n = 0;
    int port = -1;
    char canon[64] = "-";
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        n++;
        if (a->ai_family == AF_INET) {
            fam[0] = 1;
            port = ntohs(((struct sockaddr_in *)a->ai_addr)->sin_port);
        } else if (a->ai_family == AF_INET6) {
            fam[1] = 1;
            port = ntohs(((struct sockaddr_in6 *)a->ai_addr)->sin6_port);
        }
        if (a->ai_canonname)
            snprintf(canon, sizeof canon, "%s", a->ai_canonname);
    }
    freeaddrinfo(res);
    snprintf(out, sizeof out, "0 families=%s%s port=%d count=%d canon=%s",
             fam[0] ? "inet " : "", fam[1] ? "inet6" : "", port, n, canon);
    return out;
}

static void localhost_stream(void)
{
    say("localhost stream: %s", resolve("localhost", "80", AF_UNSPEC, SOCK_STREAM, 0));
    say("localhost inet: %s", resolve("localhost", NULL, AF_INET, SOCK_STREAM, 0));
    say("localhost canon: %s",
        resolve("localhost", "22", AF_INET, SOCK_STREAM, AI_CANONNAME));
}

static void numeric_hosts(void)
{
    say("127.0.0.1: %s", resolve("127.0.0.1", "8080", AF_UNSPEC, SOCK_STREAM, AI_NUMERICHOST));
    say("::1: %s", resolve("::1", "8080", AF_UNSPEC, SOCK_DGRAM, AI_NUMERICHOST));
    say("::1 as inet: %s", resolve("::1", "1", AF_INET, SOCK_STREAM, AI_NUMERICHOST));
    say("bad numeric: %s", resolve("not..a.number", "1", AF_UNSPEC, 0, AI_NUMERICHOST));
    say("NULL host passive: %s", resolve(NULL, "9", AF_INET, SOCK_STREAM, AI_PASSIVE));
    say("NULL host and service: %s", resolve(NULL, NULL, AF_UNSPEC, 0, 0));
}

static void services(void)
{
    say("http: %s", resolve("127.0.0.1", "http", AF_INET, SOCK_STREAM, AI_NUMERICHOST));
    say("numericserv http: %s",
        resolve("127.0.0.1", "http", AF_INET, SOCK_STREAM, AI_NUMERICHOST | AI_NUMERICSERV));
    say("unknown service: %s",
        resolve("127.0.0.1", "no-such-service-x", AF_INET, SOCK_STREAM, AI_NUMERICHOST));
    say("port 70000: %s", resolve("127.0.0.1", "70000", AF_INET, SOCK_STREAM, AI_NUMERICHOST));
}

static void bad_hints(void)
{
    say("bad family: %s", resolve("127.0.0.1", "1", 12345, 0, AI_NUMERICHOST));
    say("bad socktype: %s", resolve("127.0.0.1", "1", AF_INET, 12345, AI_NUMERICHOST));
    say("bad flags: %s", resolve("127.0.0.1", "1", AF_INET, 0, 0x40000000));
    say("canonname without host: %s", resolve(NULL, "1", AF_INET, 0, AI_CANONNAME));
}

static void *resolver(void *arg)
{
    long id = (long)arg;
    static char results[8][256];
    snprintf(results[id], sizeof results[id], "%s",
             resolve(id % 2 ? "localhost" : "127.0.0.1", "443", AF_INET, SOCK_STREAM,
                     id % 2 ? 0 : AI_NUMERICHOST));
    return results[id];
}

static void from_threads(void)
{
    pthread_t t[8];
    for (long i = 0; i < 8; i++)
        t[i] = spawn(resolver, (void *)i);
    for (int i = 0; i < 8; i++)
        say("thread %d: %s", i, (char *)join(t[i]));
}

static int P[2];

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        MUST(write(P[1], "t", 1) == 1);
    return NULL;
}

static void resolve_while_threads_talk(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(ticker, NULL);
    say("localhost: %s", resolve("localhost", "80", AF_INET, SOCK_STREAM, 0));
    /* All three writes made first: a read racing the second would take one. */
    join(t);
    char buf[3];
    CALL("main: read ticks", read(P[0], buf, 3));
}

static void getnameinfo_numeric(void)
{
    struct sockaddr_in a = loopback(8080);
    char host[64] = "", serv[32] = "";
    int r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, serv, sizeof serv,
                        NI_NUMERICHOST | NI_NUMERICSERV);
    say("getnameinfo numeric: %s %s %s", eai(r), host, serv);
    r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0, NI_NAMEREQD);
    say("getnameinfo 127.0.0.1 NAMEREQD: %s %s", eai(r), r == 0 ? host : "-");
    r = getnameinfo((struct sockaddr *)&a, 3, host, sizeof host, NULL, 0, 0);
    say("getnameinfo short addrlen: %s", eai(r));
}

static void gethostbyname_localhost(void)
{
    struct hostent *h = gethostbyname("localhost");
    if (!h) {
        say("gethostbyname: NULL h_errno %d", h_errno);
        return;
    }
    struct in_addr a;
    memcpy(&a, h->h_addr_list[0], sizeof a);
    say("gethostbyname: type %s len %d first %s", h->h_addrtype == AF_INET ? "inet" : "?",
        h->h_length, inet_ntoa(a));
    struct hostent he, *res = NULL;
    char buf[1024];
    int err = 0;
    int r = gethostbyname_r("127.0.0.1", &he, buf, sizeof buf, &res, &err);
    say("gethostbyname_r numeric: %d found %d", r, res != NULL);
    r = gethostbyname2_r("localhost", AF_INET, &he, buf, 8, &res, &err);
    say("gethostbyname2_r tiny buffer: %s", ename(r));
}

static void *ghbn_thread(void *arg)
{
    (void)arg;
    struct hostent *h = gethostbyname("localhost");
    return (void *)(long)(h ? h->h_addrtype : -1);
}

static void gethostbyname_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn(ghbn_thread, NULL);
    for (int i = 0; i < 4; i++)
        say("thread %d: type %ld", i, (long)join(t[i]));
}

DIFF_MAIN(S(localhost_stream), S(numeric_hosts), S(services), S(bad_hints), S(from_threads),
          S(resolve_while_threads_talk), S(getnameinfo_numeric), S(gethostbyname_localhost),
          S(gethostbyname_threads))
