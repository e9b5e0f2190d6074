/* Attack/probe program for sandbox-init/tests/sandbox_init.rs, compiled with cc at test time.
 * Each subcommand tries one thing and prints "<op> ok" or "<op> errno=<n>"; a seccomp kill
 * shows as death by SIGSYS instead. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include <unistd.h>

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
