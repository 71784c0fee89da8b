/*
 * standin-engine: a stand-in for the Dagger engine's entrypoint, for the VM scenarios.
 *
 * The real engine image cannot be downloaded in the test guest. This static program does
 * on cgroup v2 what matters about it: as the root of its cgroup namespace it moves every
 * process into /init, enables every controller and prepares /buildkit; it listens on a
 * unix socket and starts "build containers" in /buildkit/<id> that hog memory or burn CPU;
 * on SIGTERM it leaves a marker in the directory shared with the host, kills its builds and
 * exits 0. It runs as pid 1 of a pid namespace, where signals without a handler are
 * dropped, so SIGTERM/SIGINT/SIGCHLD get handlers.
 *
 * Usage: standin-engine [--socket PATH] [--ready-delay-s N] [--marker PATH]
 * Protocol: one command line per connection, one reply line:
 *   ping                    -> pong
 *   build mem MIB ID        -> child in /buildkit/ID touches MIB MiB and holds it
 *   build cpu SECONDS ID    -> child in /buildkit/ID burns CPU (0 = until killed)
 *   reply: build ID pid PID cgroup /buildkit/ID   (or: error TEXT)
 *
 * Built by tests/vm/image/customize: gcc -static -O2 -Wall -Wextra.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CG "/sys/fs/cgroup"
#define MAX_BUILDS 64
#define ID_MAX 64

struct build {
    pid_t pid;
    char id[ID_MAX + 1];
};

static struct build builds[MAX_BUILDS];
static volatile sig_atomic_t got_term, got_child;
/* Set once /sys/fs/cgroup is our own namespace's root: builds are refused otherwise, so
 * that a stand-in started in the host's cgroup namespace never writes the host's root. */
static int own_cgroups;

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dprintf(2, "standin: %s\n", line);
}

static void on_signal(int sig)
{
    if (sig == SIGCHLD)
        got_child = 1;
    else
        got_term = 1;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static ssize_t read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    ssize_t n;
    while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)n;
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* What the engine's entrypoint does when it owns the root of its cgroup namespace:
 * no process may stay in the root (no internal processes), then all controllers on. */
static void setup_cgroups(void)
{
    char buf[8192];
    if (read_file("/proc/self/cgroup", buf, sizeof buf) < 0 || strcmp(buf, "0::/\n") != 0) {
        say("not the root of a cgroup namespace (/proc/self/cgroup: %s); cgroups left alone",
            strtok(buf, "\n") ? buf : "?");
        return;
    }
    if (mkdir(CG "/init", 0755) < 0 && errno != EEXIST)
        say("mkdir /init: %s", strerror(errno));
    else
        say("created /init");
    /* Repeat: a process may fork while the others are being moved. */
    for (int round = 0; round < 5; round++) {
        if (read_file(CG "/cgroup.procs", buf, sizeof buf) <= 0)
            break;
        for (char *save, *pid = strtok_r(buf, "\n", &save); pid; pid = strtok_r(NULL, "\n", &save)) {
            if (write_file(CG "/init/cgroup.procs", pid) == 0)
                say("moved pid %s to /init", pid);
            else if (errno != ESRCH)
                say("moving pid %s to /init: %s", pid, strerror(errno));
        }
    }
    if (read_file(CG "/cgroup.controllers", buf, sizeof buf) < 0) {
        say("reading /cgroup.controllers: %s", strerror(errno));
        return;
    }
    for (char *save, *c = strtok_r(buf, " \n", &save); c; c = strtok_r(NULL, " \n", &save)) {
        char op[64];
        snprintf(op, sizeof op, "+%s", c);
        if (write_file(CG "/cgroup.subtree_control", op) == 0)
            say("enabled %s in /cgroup.subtree_control", c);
        else
            say("enabling %s in /cgroup.subtree_control: %s", c, strerror(errno));
    }
    if (mkdir(CG "/buildkit", 0755) < 0 && errno != EEXIST) {
        say("mkdir /buildkit: %s", strerror(errno));
        return;
    }
    say("created /buildkit");
    if (write_file(CG "/buildkit/cgroup.subtree_control", "+cpu +memory +pids") == 0)
        say("enabled cpu memory pids in /buildkit/cgroup.subtree_control");
    else
        say("enabling cpu memory pids in /buildkit: %s", strerror(errno));
    own_cgroups = 1;
}

static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ID_MAX || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 0;
    return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static void hold_memory(unsigned long mib)
{
    size_t bytes = (size_t)mib << 20;
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        say("build %d: mmap %lu MiB: %s", getpid(), mib, strerror(errno));
        _exit(1);
    }
    /* Touch every page so that it is charged to the build's group. */
    for (size_t off = 0; off < bytes; off += 4096)
        p[off] = 1;
    say("build %d: holding %lu MiB", getpid(), mib);
    for (;;)
        pause();
}

static void burn_cpu(unsigned long seconds)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    volatile unsigned long spin = 0;
    for (;;) {
        for (int i = 0; i < 1000000; i++)
            spin++;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (seconds && (unsigned long)(now.tv_sec - start.tv_sec) >= seconds)
            _exit(0);
    }
}

/* Forks a build in /buildkit/ID; the child reports over a pipe once it is in the group
 * so that the reply only names a build that really runs there. */
static void start_build(const char *kind, unsigned long amount, const char *id, char *reply, size_t size)
{
    int slot = -1;
    for (int i = 0; i < MAX_BUILDS; i++)
        if (builds[i].pid == 0) {
            slot = i;
            break;
        }
    if (slot < 0) {
        snprintf(reply, size, "error too many builds");
        return;
    }
    if (!own_cgroups) {
        snprintf(reply, size, "error not the root of a cgroup namespace");
        return;
    }
    char dir[256], procs[300];
    snprintf(dir, sizeof dir, CG "/buildkit/%s", id);
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        snprintf(reply, size, "error pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(reply, size, "error fork: %s", strerror(errno));
        close(sync[0]);
        close(sync[1]);
        return;
    }
    if (pid == 0) {
        /* Without exec, CLOEXEC does not apply: the client must see EOF when the engine
         * closes the connection, so the build keeps no descriptor but the pipe. */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != sync[1])
                close(fd);
        /* A build is an ordinary process: default signal dispositions, nothing blocked. */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char err[200] = "";
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            snprintf(err, sizeof err, "mkdir /buildkit/%.64s: %.100s", id, strerror(errno));
        else if (write_file(procs, "0") < 0)
            snprintf(err, sizeof err, "joining /buildkit/%.64s: %.100s", id, strerror(errno));
        if (write(sync[1], err, strlen(err) + 1) < 0 || err[0])
            _exit(1);
        close(sync[1]);
        if (strcmp(kind, "mem") == 0)
            hold_memory(amount);
        burn_cpu(amount);
    }
    close(sync[1]);
    char err[200] = "";
    ssize_t n = read(sync[0], err, sizeof err - 1);
    close(sync[0]);
    err[n > 0 ? n : 0] = '\0';
    if (n <= 0 || err[0]) {
        snprintf(reply, size, "error %s", n > 0 ? err : "build died before joining its group");
        return; /* the child exits; SIGCHLD reaps it */
    }
    builds[slot].pid = pid;
    snprintf(builds[slot].id, sizeof builds[slot].id, "%s", id);
    say("build %s started: pid %d, %s %lu, cgroup /buildkit/%s", id, pid, kind, amount, id);
    snprintf(reply, size, "build %s pid %d cgroup /buildkit/%s", id, pid, id);
}

static void handle_command(char *line, char *reply, size_t size)
{
    char *save, *words[5] = {0};
    int n = 0;
    for (char *w = strtok_r(line, " \t\r\n", &save); w && n < 5; w = strtok_r(NULL, " \t\r\n", &save))
        words[n++] = w;
    if (n == 1 && strcmp(words[0], "ping") == 0) {
        snprintf(reply, size, "pong");
        return;
    }
    if (n == 4 && strcmp(words[0], "build") == 0 &&
        (strcmp(words[1], "mem") == 0 || strcmp(words[1], "cpu") == 0)) {
        char *end;
        errno = 0;
        unsigned long amount = strtoul(words[2], &end, 10);
        if (errno || *end || words[2][0] == '-' || (strcmp(words[1], "mem") == 0 && amount == 0)) {
            snprintf(reply, size, "error bad amount: %s", words[2]);
            return;
        }
        if (!valid_id(words[3])) {
            snprintf(reply, size, "error bad id: %s", words[3]);
            return;
        }
        start_build(words[1], amount, words[3], reply, size);
        return;
    }
    snprintf(reply, size, "error unknown command");
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        const char *id = "?";
        for (int i = 0; i < MAX_BUILDS; i++)
            if (builds[i].pid == pid) {
                id = builds[i].id;
                builds[i].pid = 0;
            }
        /* The group stays: the host reads the build's memory.events after an OOM kill. */
        if (WIFSIGNALED(status))
            say("build %s exited (signal %d)", id, WTERMSIG(status));
        else
            say("build %s exited (status %d)", id, WEXITSTATUS(status));
    }
}

/* Serves one connection: one line in, one line out; a silent client is dropped. */
static void serve(int conn)
{
    char line[256];
    size_t got = 0;
    struct pollfd p = {.fd = conn, .events = POLLIN};
    while (got < sizeof line - 1 && !memchr(line, '\n', got)) {
        if (poll(&p, 1, 5000) <= 0)
            return;
        ssize_t n = read(conn, line + got, sizeof line - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    line[got] = '\0';
    char reply[400];
    handle_command(line, reply, sizeof reply);
    dprintf(conn, "%s\n", reply);
}

static void terminate(const char *socket_path, const char *marker)
{
    int fd = open(marker, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dprintf(fd, "SIGTERM pid=%d\n", getpid());
        close(fd);
    } else {
        say("writing %s: %s", marker, strerror(errno));
    }
    say("SIGTERM: stopping");
    for (int i = 0; i < MAX_BUILDS; i++)
        if (builds[i].pid)
            kill(builds[i].pid, SIGKILL);
    for (int i = 0; i < MAX_BUILDS; i++) {
        if (!builds[i].pid)
            continue;
        int status;
        waitpid(builds[i].pid, &status, 0);
        say("build %s exited (signal %d)", builds[i].id, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    /* Remove every build group, also those of builds that ended earlier; rmdir fails with
     * EBUSY while a killed process is still leaving, so retry for a while. */
    DIR *d = own_cgroups ? opendir(CG "/buildkit") : NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        char dir[300];
        snprintf(dir, sizeof dir, CG "/buildkit/%s", e->d_name);
        int tries = 0;
        while (rmdir(dir) < 0 && errno == EBUSY && tries++ < 50)
            usleep(100000);
        say("removed /buildkit/%s%s", e->d_name, access(dir, F_OK) == 0 ? ": FAILED" : "");
    }
    if (d)
        closedir(d);
    unlink(socket_path);
    say("exiting");
    exit(0);
}

int main(int argc, char **argv)
{
    const char *socket_path = "/run/dagger/engine.sock";
    const char *marker = "/run/dagger/standin-terminated";
    long ready_delay_s = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            socket_path = argv[++i];
        else if (strcmp(argv[i], "--marker") == 0 && i + 1 < argc)
            marker = argv[++i];
        else if (strcmp(argv[i], "--ready-delay-s") == 0 && i + 1 < argc)
            ready_delay_s = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--socket PATH] [--ready-delay-s N] [--marker PATH]\n", argv[0]);
            return 2;
        }
    }
    say("pid %d starting", getpid());

    /* Signals are blocked except inside ppoll(): no race between a check and a wait. */
    sigset_t handled, none;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGCHLD);
    sigprocmask(SIG_BLOCK, &handled, NULL);
    sigemptyset(&none);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    setup_cgroups();

    if (ready_delay_s > 0) {
        say("waiting %ld s before listening", ready_delay_s);
        struct timespec end, now;
        clock_gettime(CLOCK_MONOTONIC, &end);
        end.tv_sec += ready_delay_s;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
                break;
            struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
            if (left.tv_nsec < 0) {
                left.tv_sec--;
                left.tv_nsec += 1000000000L;
            }
            ppoll(NULL, 0, &left, &none);
            if (got_child) {
                got_child = 0;
                reap();
            }
            if (got_term)
                terminate(socket_path, marker);
        }
    }

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof addr.sun_path) {
        say("socket path too long: %s", socket_path);
        return 1;
    }
    strcpy(addr.sun_path, socket_path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(socket_path); /* a previous run's socket */
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 16) < 0) {
        say("listening on %s: %s", socket_path, strerror(errno));
        return 1;
    }
    say("listening on %s", socket_path);

    for (;;) {
        struct pollfd p = {.fd = listener, .events = POLLIN};
        int ready = ppoll(&p, 1, NULL, &none);
        if (got_child) {
            got_child = 0;
            reap();
        }
        if (got_term) {
            close(listener);
            terminate(socket_path, marker);
        }
        if (ready > 0 && (p.revents & POLLIN)) {
            int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (conn >= 0) {
                serve(conn);
                close(conn);
            }
        }
    }
}
