/* STATE/mesh.state: what the running `keel mesh up` started, for `keel mesh status` and
 * `keel apply`. Plain lines, tab-separated, rewritten atomically at every change:
 *
 *   pid 1234
 *   config_dir /tmp/keel-mesh-root/config
 *   log_dir /tmp/keel-mesh-root/logs
 *   gateway_url http://127.0.0.1:41234         (when a gateway runs)
 *   zipkin_url http://127.0.0.1:41235          (when the trace collector runs)
 *   comp NAME ROLE WORKLOAD PID APP INBOUND OUTBOUND ADMIN RESTARTS LOG
 *
 * APP is an app's port, or the collector's. */
#include "mesh/mesh.h"

#include "core/buf.h"
#include "core/json.h"

#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *const ROLES[] = {"app", "sidecar", "gateway", "waypoint", "collector", "mixer"};

void keel_mesh_state_dir(char *out, size_t cap, const char *flag)
{
    const char *env = getenv("KEEL_MESH_DIR");
    if (flag && *flag)
        snprintf(out, cap, "%s", flag);
    else if (env && *env)
        snprintf(out, cap, "%s", env);
    else {
        const struct passwd *pw = getpwuid(getuid());
        snprintf(out, cap, "/tmp/keel-mesh-%s", pw ? pw->pw_name : "user");
    }
}

int keel_mesh_state_write(const struct keel_mesh_plan *p)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof(path), "%s/mesh.state", p->state_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "pid\t%d\nconfig_dir\t%s\nlog_dir\t%s\n", (int)getpid(), p->config_dir, p->log_dir);
    if (p->gateway_port)
        fprintf(f, "gateway_url\thttp://127.0.0.1:%d\n", p->gateway_port);
    if (p->zipkin_port)
        fprintf(f, "zipkin_url\thttp://127.0.0.1:%d\n", p->zipkin_port);
    for (size_t i = 0; i < p->n_comps; i++) {
        const struct keel_mesh_comp *c = &p->comps[i];
        fprintf(f, "comp\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", c->name, ROLES[c->role],
                c->workload, (int)c->pid,
                c->role == KEEL_MESH_APP || c->role == KEEL_MESH_COLLECTOR ? c->app_port : 0,
                c->inbound, c->outbound, c->admin, c->restarts, c->log_path);
    }
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

void keel_mesh_state_remove(const struct keel_mesh_plan *p)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/mesh.state", p->state_dir);
    unlink(path);
}

struct state_comp {
    char name[256], role[16], workload[512], log[4096];
    int pid, app, inbound, outbound, admin, restarts;
};

struct state {
    int pid;
    char config_dir[4096], log_dir[4096], gateway_url[128], zipkin_url[128];
    struct state_comp *comps;
    size_t n;
};

static char *field(char **s)
{
    char *f = *s, *t = strchr(f, '\t');
    if (t) {
        *t = '\0';
        *s = t + 1;
    } else {
        *s = f + strlen(f);
    }
    return f;
}

/* The pid is a `keel mesh up` (not a stranger that got a dead supervisor's pid). */
static bool is_mesh_up(int pid)
{
    char path[64], cmd[4096];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
    fclose(f);
    cmd[n] = '\0';
    /* argv[0] NUL "mesh" NUL "up" */
    size_t a0 = strlen(cmd);
    return a0 + 8 <= n && !memcmp(cmd + a0 + 1, "mesh\0up", 8);
}

/* 0 when the state file exists and its supervisor is alive. */
static int state_read(const char *state_dir, struct state *st)
{
    memset(st, 0, sizeof(*st));
    char path[4200];
    snprintf(path, sizeof(path), "%s/mesh.state", state_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[16384];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *s = line, *key = field(&s);
        if (!strcmp(key, "pid"))
            st->pid = atoi(s);
        else if (!strcmp(key, "config_dir"))
            snprintf(st->config_dir, sizeof(st->config_dir), "%s", s);
        else if (!strcmp(key, "log_dir"))
            snprintf(st->log_dir, sizeof(st->log_dir), "%s", s);
        else if (!strcmp(key, "gateway_url"))
            snprintf(st->gateway_url, sizeof(st->gateway_url), "%s", s);
        else if (!strcmp(key, "zipkin_url"))
            snprintf(st->zipkin_url, sizeof(st->zipkin_url), "%s", s);
        else if (!strcmp(key, "comp")) {
            st->comps = realloc(st->comps, (st->n + 1) * sizeof(*st->comps));
            if (st->comps == NULL)
                abort();
            struct state_comp *c = &st->comps[st->n++];
            snprintf(c->name, sizeof(c->name), "%s", field(&s));
            snprintf(c->role, sizeof(c->role), "%s", field(&s));
            snprintf(c->workload, sizeof(c->workload), "%s", field(&s));
            c->pid = atoi(field(&s));
            c->app = atoi(field(&s));
            c->inbound = atoi(field(&s));
            c->outbound = atoi(field(&s));
            c->admin = atoi(field(&s));
            c->restarts = atoi(field(&s));
            snprintf(c->log, sizeof(c->log), "%s", field(&s));
        }
    }
    fclose(f);
    if (st->pid <= 0 || (kill(st->pid, 0) < 0 && errno == ESRCH) || !is_mesh_up(st->pid)) {
        free(st->comps);
        st->comps = NULL;
        return -1;
    }
    return 0;
}

int keel_mesh_state_config_dir(const char *state_dir, char *out, size_t cap)
{
    struct state st;
    if (state_read(state_dir, &st) < 0)
        return -1;
    snprintf(out, cap, "%s", st.config_dir);
    free(st.comps);
    return 0;
}

/* GET path on 127.0.0.1:port: the status code, or -1 (nothing listens, timeout). */
int keel_mesh_http_status(int port, const char *path, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int code = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        if (path == NULL) {
            code = 0; /* a TCP probe */
        } else {
            char req[512], resp[64];
            int n =
                snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
            ssize_t got = 0;
            if (write(fd, req, (size_t)n) == n)
                got = read(fd, resp, sizeof(resp) - 1);
            if (got > 12) {
                resp[got] = '\0';
                if (!strncmp(resp, "HTTP/1.", 7))
                    code = atoi(resp + 9);
            }
        }
    }
    close(fd);
    return code;
}

static bool comp_healthy(const struct state_comp *c, const char **why)
{
    if (c->pid <= 0 || kill(c->pid, 0) < 0) {
        *why = "not running";
        return false;
    }
    if (!strcmp(c->role, "collector")) {
        int code = keel_mesh_http_status(c->app, "/health", 1000);
        *why = code == 200 ? "ready" : "collector /health not 200";
        return code == 200;
    }
    if (c->admin) {
        int code = keel_mesh_http_status(c->admin, "/ready", 1000);
        *why = code == 200 ? "ready" : "admin /ready not 200";
        return code == 200;
    }
    if (c->app) {
        bool up = keel_mesh_http_status(c->app, NULL, 1000) == 0;
        *why = up ? "listening" : "app port not listening";
        return up;
    }
    *why = "running";
    return true;
}

int keel_mesh_status(const char *state_dir, bool json)
{
    struct state st;
    if (state_read(state_dir, &st) < 0) {
        fprintf(stderr, "keel mesh status: no mesh running (no live %s/mesh.state)\n", state_dir);
        return 1;
    }
    size_t healthy = 0;
    bool *ok = calloc(st.n + 1, sizeof(bool));
    const char **why = calloc(st.n + 1, sizeof(char *));
    if (ok == NULL || why == NULL)
        abort();
    for (size_t i = 0; i < st.n; i++)
        healthy += ok[i] = comp_healthy(&st.comps[i], &why[i]);
    if (json) {
        struct keel_buf b = {0};
        keel_buf_printf(&b, "{\"pid\":%d,\"config_dir\":", st.pid);
        keel_json_str(&b, st.config_dir);
        keel_buf_append_str(&b, ",\"log_dir\":");
        keel_json_str(&b, st.log_dir);
        keel_buf_append_str(&b, ",\"gateway_url\":");
        keel_json_str(&b, st.gateway_url);
        keel_buf_append_str(&b, ",\"zipkin_url\":");
        keel_json_str(&b, st.zipkin_url);
        keel_buf_printf(&b, ",\"healthy\":%s,\"components\":[", healthy == st.n ? "true" : "false");
        for (size_t i = 0; i < st.n; i++) {
            const struct state_comp *c = &st.comps[i];
            keel_buf_append_str(&b, i ? ",{\"name\":" : "{\"name\":");
            keel_json_str(&b, c->name);
            keel_buf_append_str(&b, ",\"role\":");
            keel_json_str(&b, c->role);
            keel_buf_append_str(&b, ",\"workload\":");
            keel_json_str(&b, c->workload);
            keel_buf_printf(&b,
                            ",\"pid\":%d,\"app_port\":%d,\"inbound_port\":%d,\"outbound_port\":%d,"
                            "\"admin_port\":%d,\"restarts\":%d,\"healthy\":%s,\"health\":",
                            c->pid, c->app, c->inbound, c->outbound, c->admin, c->restarts,
                            ok[i] ? "true" : "false");
            keel_json_str(&b, why[i]);
            keel_buf_append_str(&b, ",\"log\":");
            keel_json_str(&b, c->log);
            keel_buf_append_str(&b, "}");
        }
        keel_buf_append_str(&b, "]}\n");
        fwrite(keel_buf_rptr(&b), 1, keel_buf_len(&b), stdout);
        keel_buf_release(&b);
    } else {
        printf("mesh pid %d, config dir %s, logs in %s\n", st.pid, st.config_dir, st.log_dir);
        if (st.gateway_url[0])
            printf("GW_URL=%s\n", st.gateway_url);
        if (st.zipkin_url[0])
            printf("ZIPKIN_URL=%s\n", st.zipkin_url);
        printf("%-28s %-9s %-7s %-9s %-22s %-8s %s\n", "COMPONENT", "ROLE", "PID", "RESTARTS",
               "ADDRESS", "HEALTH", "DETAIL");
        for (size_t i = 0; i < st.n; i++) {
            const struct state_comp *c = &st.comps[i];
            char addr[64];
            if (c->admin)
                snprintf(addr, sizeof(addr), "admin 127.0.0.1:%d", c->admin);
            else
                snprintf(addr, sizeof(addr), "127.0.0.1:%d", c->app);
            printf("%-28s %-9s %-7d %-9d %-22s %-8s %s\n", c->name, c->role, c->pid, c->restarts,
                   addr, ok[i] ? "ok" : "FAIL", why[i]);
        }
        printf("%zu/%zu healthy\n", healthy, st.n);
    }
    int rc = healthy == st.n ? 0 : 1;
    free(ok);
    free(why);
    free(st.comps);
    return rc;
}
