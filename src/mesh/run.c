/* The supervisor of `keel mesh up`: starts every component in its own process group
 * (so a terminal's Ctrl-C reaches only us, and we stop them in order), with
 * PR_SET_PDEATHSIG so nothing outlives us even after a SIGKILL; restarts a component
 * that dies, with exponential backoff; on SIGINT/SIGTERM or --for's end sends SIGTERM to
 * every group, waits, SIGKILLs what is left after a deadline, reaps all and exits 0.
 * Signals arrive through a signalfd polled by the one loop. */
#include "mesh/mesh.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP_DEADLINE_S 10.0 /* the proxies drain in 5 s by default */
#define BACKOFF_MAX_S 30.0
#define STABLE_S 10.0 /* a run this long resets the backoff */
#define READY_WAIT_S 20.0

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool tty;
static bool line_shown; /* the live status line is on screen: clear it before printing */

static void clear_line(void)
{
    if (tty && line_shown) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
        line_shown = false;
    }
}

static void spawn(struct keel_mesh_comp *c, const sigset_t *old)
{
    int fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0)
        dprintf(fd, "--- keel mesh: starting %s (%s)%s\n", c->name, c->workload,
                c->restarts ? " again" : "");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "keel mesh: cannot start %s: %s\n", c->name, strerror(errno));
        if (fd >= 0)
            close(fd);
        c->next_start = now() + c->backoff;
        return;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* die with the supervisor, even if it is SIGKILLed; if it is already gone, go */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(0);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, old, NULL);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        close_range(3, ~0U, 0);
        for (size_t i = 0; c->env && c->env[i]; i++)
            putenv(c->env[i]);
        execvp(c->argv[0], c->argv);
        dprintf(2, "keel mesh: cannot run %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* both sides, so a kill(-pid) right away reaches it */
    if (fd >= 0)
        close(fd);
    c->pid = pid;
    c->started_at = now();
    c->next_start = 0;
}

/* The last lines of a log, indented, for the death report. */
static void print_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f), from = size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    char *start = buf + n;
    for (int k = 0; k < lines && start > buf;) {
        start--;
        if (*start == '\n' && ++k == lines) {
            start++;
            break;
        }
    }
    for (char *s = start; *s;) {
        char *e = strchr(s, '\n');
        printf("    | %.*s\n", e ? (int)(e - s) : (int)strlen(s), s);
        s = e ? e + 1 : s + strlen(s);
    }
}

static struct keel_mesh_comp *by_pid(struct keel_mesh_plan *p, pid_t pid)
{
    for (size_t i = 0; i < p->n_comps; i++)
        if (p->comps[i].pid == pid)
            return &p->comps[i];
    return NULL;
}

static void describe(char *out, size_t cap, int status)
{
    if (WIFEXITED(status))
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, cap, "stopped (status %#x)", status);
}

/* Reap what exited; when not stopping, report it and schedule its restart. */
static size_t reap(struct keel_mesh_plan *p, bool stopping)
{
    size_t n = 0;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct keel_mesh_comp *c = by_pid(p, pid);
        if (c == NULL)
            continue;
        c->pid = 0;
        n++;
        if (stopping) {
            /* a clean stop is exit 0 or death by our SIGTERM; anything else is worth saying
             * (a sanitizer's report, a crash while draining) */
            bool clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                         (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
            if (!clean) {
                char how[128];
                describe(how, sizeof(how), status);
                printf("keel mesh: %s (pid %d) %s while stopping; see %s\n", c->name, (int)pid, how,
                       c->log_path);
            }
            continue;
        }
        double t = now(), ran = t - c->started_at;
        if (ran >= STABLE_S)
            c->backoff = 0.5;
        char how[128];
        describe(how, sizeof(how), status);
        clear_line();
        printf("keel mesh: %s (pid %d) %s after %.1f s; restarting in %.1f s. Last lines of %s:\n",
               c->name, (int)pid, how, ran, c->backoff, c->log_path);
        print_tail(c->log_path, 5);
        fflush(stdout);
        c->next_start = t + c->backoff;
        c->backoff = c->backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : c->backoff * 2;
    }
    return n;
}

static bool comp_ready(const struct keel_mesh_comp *c)
{
    if (c->pid <= 0)
        return false;
    if (c->role == KEEL_MESH_COLLECTOR)
        return keel_mesh_http_status(c->app_port, "/health", 500) == 200;
    if (c->admin)
        return keel_mesh_http_status(c->admin, "/ready", 500) == 200;
    if (c->app_port)
        return keel_mesh_http_status(c->app_port, NULL, 500) == 0;
    return true;
}

static void print_table(const struct keel_mesh_plan *p)
{
    printf("keel mesh: %zu processes; config dir %s, logs in %s\n\n", p->n_comps, p->config_dir,
           p->log_dir);
    printf("%-32s %-36s %-16s %-14s %s\n", "COMPONENT", "WORKLOAD", "APP", "SIDECAR in/out",
           "ADMIN");
    for (size_t i = 0; i < p->n_comps; i++) {
        const struct keel_mesh_comp *c = &p->comps[i];
        char app[32] = "-", ports[32] = "-", admin[48] = "-", kind[300];
        const struct keel_mesh_comp *px = c;
        if (c->role == KEEL_MESH_SIDECAR)
            continue; /* shown on its app's row */
        if (c->role == KEEL_MESH_APP) {
            snprintf(app, sizeof(app), "127.0.0.1:%d", c->app_port);
            snprintf(kind, sizeof(kind), "%s%s", c->name, c->ambient ? " (ambient)" : "");
            px = c->ambient ? NULL : &p->comps[i + 1];
        } else if (c->role == KEEL_MESH_COLLECTOR) {
            snprintf(app, sizeof(app), "127.0.0.1:%d", c->app_port);
            snprintf(kind, sizeof(kind), "%s (collector)", c->name);
            px = NULL;
        } else {
            snprintf(kind, sizeof(kind), "%s (%s)", c->name,
                     c->role == KEEL_MESH_GATEWAY ? "gateway" : c->role == KEEL_MESH_MIXER ? "mixer" : "waypoint");
        }
        if (px) {
            if (px->inbound)
                snprintf(ports, sizeof(ports), "%d/%d", px->inbound, px->outbound);
            else
                snprintf(ports, sizeof(ports), "-/%d", px->outbound);
            snprintf(admin, sizeof(admin), "http://127.0.0.1:%d", px->admin);
        }
        printf("%-32s %-36s %-16s %-14s %s\n", kind, c->workload, app, ports, admin);
    }
    if (p->gateway_port || p->zipkin_port)
        printf("\n");
    if (p->gateway_port)
        printf("GW_URL=http://127.0.0.1:%d\n", p->gateway_port);
    if (p->zipkin_port)
        printf("ZIPKIN_URL=http://127.0.0.1:%d\n", p->zipkin_port);
    printf("\n");
    fflush(stdout);
}

static void status_line(const struct keel_mesh_plan *p, double up)
{
    size_t running = 0;
    int restarts = 0;
    for (size_t i = 0; i < p->n_comps; i++) {
        running += p->comps[i].pid > 0;
        restarts += p->comps[i].restarts;
    }
    printf("\r\033[Kkeel mesh: %zu/%zu running, %d restart%s, up %.0f s — Ctrl-C stops", running,
           p->n_comps, restarts, restarts == 1 ? "" : "s", up);
    fflush(stdout);
    line_shown = true;
}

static void stop_all(struct keel_mesh_plan *p, int sfd)
{
    for (size_t i = 0; i < p->n_comps; i++) {
        struct keel_mesh_comp *c = &p->comps[i];
        c->next_start = 0;
        if (c->pid > 0 && kill(-c->pid, SIGTERM) < 0)
            kill(c->pid, SIGTERM);
    }
    double deadline = now() + STOP_DEADLINE_S;
    for (;;) {
        reap(p, true);
        size_t left = 0;
        for (size_t i = 0; i < p->n_comps; i++)
            left += p->comps[i].pid > 0;
        if (left == 0)
            return;
        if (now() >= deadline)
            break;
        struct pollfd pfd = {sfd, POLLIN, 0};
        poll(&pfd, 1, 100);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == sizeof(si))
            ;
    }
    for (size_t i = 0; i < p->n_comps; i++) {
        struct keel_mesh_comp *c = &p->comps[i];
        if (c->pid <= 0)
            continue;
        printf("keel mesh: %s (pid %d) did not stop within %.0f s: SIGKILL\n", c->name, (int)c->pid,
               STOP_DEADLINE_S);
        if (kill(-c->pid, SIGKILL) < 0)
            kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
}

int keel_mesh_run(struct keel_mesh_plan *p, double for_seconds)
{
    tty = isatty(STDOUT_FILENO);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        fprintf(stderr, "keel mesh: signalfd: %s\n", strerror(errno));
        return 1;
    }
    double t0 = now(), deadline = for_seconds > 0 ? t0 + for_seconds : 0, last_line = 0;
    for (size_t i = 0; i < p->n_comps; i++)
        spawn(&p->comps[i], &old);
    print_table(p);
    if (keel_mesh_state_write(p) < 0)
        fprintf(stderr, "keel mesh: warning: cannot write %s/mesh.state: %s\n", p->state_dir,
                strerror(errno));
    bool *ready = calloc(p->n_comps + 1, sizeof(bool));
    size_t n_ready = 0;
    bool announced = false;
    const char *why = NULL;
    while (why == NULL) {
        struct pollfd pfd = {sfd, POLLIN, 0};
        poll(&pfd, 1, announced ? 250 : 50);
        struct signalfd_siginfo si;
        bool changed = false;
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            if (si.ssi_signo == SIGCHLD)
                changed |= reap(p, false) > 0;
            else
                why = si.ssi_signo == SIGINT    ? "SIGINT"
                      : si.ssi_signo == SIGTERM ? "SIGTERM"
                                                : "SIGHUP";
        }
        if (why)
            break;
        double t = now();
        for (size_t i = 0; i < p->n_comps; i++) {
            struct keel_mesh_comp *c = &p->comps[i];
            if (c->pid == 0 && c->next_start > 0 && t >= c->next_start) {
                c->restarts++;
                spawn(c, &old);
                changed = true;
            }
        }
        if (changed)
            keel_mesh_state_write(p);
        if (!announced) {
            for (size_t i = 0; i < p->n_comps; i++)
                if (!ready[i] && comp_ready(&p->comps[i])) {
                    ready[i] = true;
                    n_ready++;
                }
            if (n_ready == p->n_comps) {
                clear_line();
                printf("keel mesh: %zu/%zu ready in %.2f s\n", n_ready, p->n_comps, t - t0);
                fflush(stdout);
                announced = true;
            } else if (t - t0 >= READY_WAIT_S) {
                clear_line();
                printf("keel mesh: warning: not ready after %.0f s:", READY_WAIT_S);
                for (size_t i = 0; i < p->n_comps; i++)
                    if (!ready[i])
                        printf(" %s", p->comps[i].name);
                printf(" (see their logs)\n");
                fflush(stdout);
                announced = true;
            }
        }
        if (deadline > 0 && t >= deadline) {
            why = "--for";
            break;
        }
        if (announced && tty && t - last_line >= 1.0) {
            status_line(p, t - t0);
            last_line = t;
        }
    }
    free(ready);
    clear_line();
    printf("keel mesh: stopping (%s)\n", why);
    fflush(stdout);
    stop_all(p, sfd);
    keel_mesh_state_remove(p);
    close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("keel mesh: stopped\n");
    fflush(stdout);
    return 0;
}
