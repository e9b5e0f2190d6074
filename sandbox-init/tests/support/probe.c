/* Attack/probe program for sandbox-init/tests/sandbox_init_*.rs, compiled with cc at test time.
 * Each subcommand tries one thing and prints "<op> ok" or "<op> errno=<n>"; a seccomp kill
 * shows as death by SIGSYS instead. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif

static int report(const char *op, long r) {
    if (r < 0) printf("%s errno=%d\n", op, errno);
    else printf("%s ok\n", op);
    return 0;
}

static int tcp(int port, int do_bind) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return report("socket", -1);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long r = do_bind ? bind(s, (struct sockaddr *)&a, sizeof a) : connect(s, (struct sockaddr *)&a, sizeof a);
    return report(do_bind ? "bind" : "connect", r);
}


static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* TCP Fast Open, each way a client can ask for it: the SYN would carry data and the connect
 * happens inside the send. "how" is sendto, sendmsg, sendmmsg or connect (TCP_FASTOPEN_CONNECT
 * then connect then write). */
static int fastopen(const char *how, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return report("socket", -1);
    struct sockaddr_in a = loopback(port);
    char data[] = "fastopen";
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
    long r;
    if (!strcmp(how, "sendto")) {
        r = sendto(s, data, sizeof data, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a);
    } else if (!strcmp(how, "sendmsg")) {
        r = sendmsg(s, &m, MSG_FASTOPEN);
    } else if (!strcmp(how, "sendmmsg")) {
        struct mmsghdr mm = {.msg_hdr = m};
        r = sendmmsg(s, &mm, 1, MSG_FASTOPEN);
    } else if (!strcmp(how, "connect")) {
        int on = 1;
        r = setsockopt(s, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof on);
        if (r == 0) r = connect(s, (struct sockaddr *)&a, sizeof a);
        if (r == 0) r = write(s, data, sizeof data);
    } else {
        return 2;
    }
    return report("fastopen", r);
}

/* socket(family, type, protocol), then for IP families connect to loopback:port. */
static int socket_connect(int family, int type, int protocol, int port) {
    int s = socket(family, type, protocol);
    if (s < 0 || (family != AF_INET && family != AF_INET6)) return report("socket", s);
    struct sockaddr_in a = loopback(port);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    long r = family == AF_INET ? connect(s, (struct sockaddr *)&a, sizeof a)
                               : connect(s, (struct sockaddr *)&a6, sizeof a6);
    return report("connect", r);
}

/* A raw system call through the i386 entry (int 0x80), which a 64-bit process may use: the
 * kernel then runs it as an i386 syscall and seccomp sees AUDIT_ARCH_I386. r8-r11 are zeroed
 * by that entry path. */
static long int80(long nr, long a, long b, long c) {
#if defined(__x86_64__)
    long r;
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "r8", "r9", "r10", "r11", "memory");
    return (int)r;
#else
    (void)nr, (void)a, (void)b, (void)c;
    return -ENOSYS;
#endif
}

/* One case of "each": "[i]nr[,a0[,a1...]]" (numbers in C notation): the syscall, in a child.
 * With the "i" prefix through int 0x80 (three arguments). */
static void one_case(const char *spec) {
    int i386 = spec[0] == 'i';
    char *p = (char *)spec + i386;
    long v[7] = {0};
    for (int k = 0; k < 7 && *p; k++) {
        v[k] = (long)strtoull(p, &p, 0);
        if (*p == ',') p++;
    }
    pid_t self = getpid();
    long r = i386 ? int80(v[0], v[1], v[2], v[3]) : syscall(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    (void)r;
    if (getpid() != self) _exit(0); /* the call forked: the copy leaves at once */
    _exit(0);
}

/* Runs every case in a child of its own and prints "case <n> killed <signal>" or "case <n>
 * exited <code>" for each, in order. */
static int each(int argc, char **argv) {
    for (int n = 0; n < argc; n++) {
        fflush(stdout);
        pid_t c = fork();
        if (c < 0) return report("fork", -1);
        if (c == 0) one_case(argv[n]);
        int st;
        if (waitpid(c, &st, 0) < 0) return report("waitpid", -1);
        if (WIFSIGNALED(st)) printf("case %d killed %d\n", n, WTERMSIG(st));
        else printf("case %d exited %d\n", n, WEXITSTATUS(st));
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *op = argv[1];
    const char *arg_s = argc > 2 ? argv[2] : "0";
    unsigned long arg = strtoul(arg_s, NULL, 0);
    if (!strcmp(op, "clone3")) return report(op, syscall(435, NULL, 0));
    if (!strcmp(op, "x32")) return report(op, syscall(0x40000000 | SYS_getpid));
    if (!strcmp(op, "personality")) return report(op, syscall(SYS_personality, arg));
    if (!strcmp(op, "unshare")) return report(op, syscall(SYS_unshare, arg));
    if (!strcmp(op, "clone")) {
        /* Like fork() plus `arg`; a child that ever exists leaves at once. */
        long r = syscall(SYS_clone, arg | SIGCHLD, 0, 0, 0, 0);
        if (r == 0) _exit(0);
        return report(op, r);
    }
    if (!strcmp(op, "fork")) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        return report(op, p);
    }
    if (!strcmp(op, "ptrace")) return report(op, syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
    if (!strcmp(op, "mount")) return report(op, syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    if (!strcmp(op, "connect")) return tcp((int)arg, 0);
    if (!strcmp(op, "bind")) return tcp((int)arg, 1);
    if (!strcmp(op, "write")) return report(op, open(arg_s, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    if (!strcmp(op, "kill")) return report(op, kill((pid_t)arg, 0));
    if (!strcmp(op, "abstract")) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        size_t n = strlen(arg_s);
        if (n + 1 > sizeof a.sun_path) return 2;
        memcpy(a.sun_path + 1, arg_s, n); /* sun_path[0] = 0: abstract */
        return report(op, connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n));
    }
    if (!strcmp(op, "fastopen")) return fastopen(arg_s, argc > 3 ? atoi(argv[3]) : 0);
    if (!strcmp(op, "socket") && argc > 5)
        return socket_connect((int)strtol(argv[2], NULL, 0), (int)strtol(argv[3], NULL, 0),
                              (int)strtol(argv[4], NULL, 0), atoi(argv[5]));
    if (!strcmp(op, "i386")) {
        long r = int80((long)arg, 0, 0, 0);
        if (r < 0) errno = (int)-r;
        return report(op, r);
    }
    if (!strcmp(op, "each")) return each(argc - 2, argv + 2);
    if (!strcmp(op, "fds")) {
        /* Every open fd above 2 except this listing's own. */
        DIR *d = opendir("/proc/self/fd");
        if (!d) return report(op, -1);
        struct dirent *e;
        printf("fds");
        while ((e = readdir(d))) {
            int fd = atoi(e->d_name);
            if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d)) printf(" %d", fd);
        }
        printf("\n");
        return 0;
    }
    fprintf(stderr, "probe: unknown op %s\n", op);
    return 2;
}
