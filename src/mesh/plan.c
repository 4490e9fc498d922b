/* What the local mesh runs: one app process per replica (its env PORT a free loopback
 * port, HTTP_PROXY its sidecar's outbound listener), one sidecar each unless the
 * namespace is ambient, the ingress gateway when a Gateway selects it, the waypoints;
 * and the config dir they all watch: the user's resources plus a WorkloadEntry per
 * replica, so that the registry routes service names to sidecars' inbound ports. */
#include "mesh/mesh.h"

#include "core/alloc.h"
#include "core/rand.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROW(arr, n) ((arr) = keel_realloc((arr), ((n) + 1) * sizeof(*(arr))), &(arr)[(n)++])

static int given[4096];
static size_t n_given;

static int bind_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int rc = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        rc = ntohs(a.sin_port);
    close(fd);
    return rc;
}

int keel_mesh_port_free(int port)
{
    return bind_port(port) == port ? 0 : -1;
}

/* The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range). */
static int ephemeral_low(void)
{
    int low = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d", &low) != 1)
            low = 32768;
        fclose(f);
    }
    return low;
}

static bool handed_out(int p)
{
    for (size_t i = 0; i < n_given; i++)
        if (given[i] == p)
            return true;
    return false;
}

/* Ports come from below the ephemeral range: one the kernel picks with bind(0) and takes
 * back can go to any outgoing connection (a sidecar's upstream connects, a probe) before
 * the process planned for it binds, which then fails with EADDRINUSE. Below the range
 * only a listener takes a port. The scan starts at a random place so that two meshes
 * planned at once rarely meet; a kernel whose range starts low gets bind(0). */
int keel_mesh_free_port(void)
{
    enum { LOW = 10000 };
    int high = ephemeral_low();
    if (high - LOW >= 1024 && n_given < sizeof(given) / sizeof(given[0])) {
        int span = high - LOW;
        int start = (int)(keel_rand64() % (uint64_t)span);
        for (int i = 0; i < span; i++) {
            int p = LOW + (start + i) % span;
            if (!handed_out(p) && bind_port(p) == p) {
                given[n_given++] = p;
                return p;
            }
        }
    }
    for (;;) {
        int p = bind_port(0);
        if (p < 0)
            return -1;
        if (handed_out(p))
            continue;
        if (n_given < sizeof(given) / sizeof(given[0]))
            given[n_given++] = p;
        return p;
    }
}

static char **strv_push(char **v, const char *s)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    v = keel_realloc(v, (n + 2) * sizeof(char *));
    v[n] = keel_strdup(s);
    v[n + 1] = NULL;
    return v;
}

static char **strv_pushf(char **v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char **strv_pushf(char **v, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return strv_push(v, buf);
}

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Kubernetes' $(VAR) expansion in command/args, over the container's env and PORT;
 * $$(VAR) escapes, an unknown $(VAR) stays as written (as kubelet does). */
static char *expand(const char *s, char **env)
{
    size_t cap = strlen(s) + 64, n = 0;
    char *out = keel_alloc(cap);
    for (const char *p = s; *p;) {
        const char *val = NULL;
        size_t skip = 1;
        if (p[0] == '$' && p[1] == '$' && p[2] == '(') {
            val = "$(";
            skip = 3;
        } else if (p[0] == '$' && p[1] == '(') {
            const char *close = strchr(p + 2, ')');
            size_t nl = close ? (size_t)(close - p - 2) : 0;
            for (size_t i = 0; close && env && env[i]; i++)
                if (!strncmp(env[i], p + 2, nl) && env[i][nl] == '=') {
                    val = env[i] + nl + 1;
                    skip = nl + 3;
                }
        }
        size_t add = val ? strlen(val) : 1;
        if (n + add + 1 > cap)
            out = keel_realloc(out, cap = (n + add + 1) * 2);
        memcpy(out + n, val ? val : p, add);
        n += add;
        p += skip;
    }
    out[n] = '\0';
    return out;
}

/* An executable by the rules execvp will use. */
static bool findable(const char *cmd)
{
    if (strchr(cmd, '/'))
        return access(cmd, X_OK) == 0;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    char buf[4096];
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)l, l ? p : ".", cmd);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
            return true;
        p += l + (e != NULL);
    }
    return false;
}

static struct keel_mesh_comp *add_comp(struct keel_mesh_plan *p, const char *name,
                                       const char *workload, enum keel_mesh_role role)
{
    struct keel_mesh_comp *c = GROW(p->comps, p->n_comps);
    memset(c, 0, sizeof(*c));
    c->name = keel_strdup(name);
    c->workload = keel_strdup(workload);
    c->role = role;
    char buf[8192];
    snprintf(buf, sizeof(buf), "%s/%s.log", p->log_dir, name);
    c->log_path = keel_strdup(buf);
    c->backoff = 0.5;
    return c;
}

/* A keel proxy of any role: its listeners and the shared config dir. */
static void proxy_argv(struct keel_mesh_comp *c, const struct keel_mesh_plan *p, const char *self,
                       const char *role)
{
    c->argv = strv_push(c->argv, self);
    c->argv = strv_push(c->argv, "proxy");
    if (role) {
        c->argv = strv_push(c->argv, "--role");
        c->argv = strv_push(c->argv, role);
    }
    c->argv = strv_push(c->argv, "--workload");
    c->argv = strv_push(c->argv, c->workload);
    if (c->inbound) {
        c->argv = strv_push(c->argv, "--inbound");
        c->argv = strv_pushf(c->argv, "127.0.0.1:%d", c->inbound);
        c->argv = strv_push(c->argv, "--upstream");
        c->argv = strv_pushf(c->argv, "127.0.0.1:%d", c->app_port);
    } else {
        c->argv = strv_push(c->argv, "--inbound");
        c->argv = strv_push(c->argv, "off");
    }
    c->argv = strv_push(c->argv, "--outbound");
    c->argv = strv_pushf(c->argv, "127.0.0.1:%d", c->outbound);
    c->argv = strv_push(c->argv, "--admin");
    c->argv = strv_pushf(c->argv, "127.0.0.1:%d", c->admin);
    c->argv = strv_push(c->argv, "--config-dir");
    c->argv = strv_push(c->argv, p->config_dir);
    /* one worker each: a laptop mesh has many proxies and little traffic */
    c->argv = strv_push(c->argv, "--concurrency");
    c->argv = strv_push(c->argv, "1");
}

static int add_replica(struct keel_mesh_plan *p, const struct keel_mesh_manifest *m,
                       const struct keel_mesh_deploy *d, int i, const struct keel_mesh_opts *o,
                       const int *wp_ports)
{
    char name[512], wl[1024];
    if (d->replicas == 1)
        snprintf(name, sizeof(name), "%s", d->name);
    else
        snprintf(name, sizeof(name), "%s-%d", d->name, i);
    snprintf(wl, sizeof(wl), "%s.%s", name, d->ns);
    bool ambient = keel_mesh_ambient_waypoint(m, d->ns) != NULL;
    struct keel_mesh_comp *app = add_comp(p, name, wl, KEEL_MESH_APP);
    app->deploy = d;
    app->replica = i;
    app->ambient = ambient;
    app->app_port = keel_mesh_free_port();
    int in = 0, out = 0, adm = 0;
    if (!ambient) {
        in = keel_mesh_free_port();
        out = keel_mesh_free_port();
        adm = keel_mesh_free_port();
    }
    if (app->app_port < 0 || in < 0 || out < 0 || adm < 0) {
        fprintf(stderr, "keel mesh: no free loopback port: %s\n", strerror(errno));
        return -1;
    }
    for (size_t k = 0; k < d->n_env; k++)
        app->env = strv_pushf(app->env, "%s=%s", d->env[k].key, d->env[k].value);
    app->env = strv_pushf(app->env, "PORT=%d", app->app_port);
    /* ambient: no sidecar; its calls go through its namespace's waypoint when it runs */
    int proxy = out;
    for (size_t k = 0; ambient && k < m->n_waypoints; k++)
        if (!strcmp(m->waypoints[k].ns, d->ns) &&
            !strcmp(m->waypoints[k].name, keel_mesh_ambient_waypoint(m, d->ns)))
            proxy = wp_ports[k];
    if (proxy) {
        app->env = strv_pushf(app->env, "HTTP_PROXY=http://127.0.0.1:%d", proxy);
        app->env = strv_pushf(app->env, "http_proxy=http://127.0.0.1:%d", proxy);
        app->env = strv_push(app->env, "NO_PROXY=");
    }
    app->env = strv_pushf(app->env, "POD_NAME=%s", name);
    app->env = strv_pushf(app->env, "POD_NAMESPACE=%s", d->ns);
    for (size_t k = 0; k < d->argc; k++) {
        const char *a = d->argv[k];
        if (k == 0 && !strcmp(a, "keel")) {
            app->argv = strv_push(app->argv, o->self_exe);
            continue;
        }
        char *x = expand(a, app->env);
        app->argv = strv_push(app->argv, x);
        free(x);
    }
    if (!findable(app->argv[0])) {
        fprintf(stderr, "%s: error: Deployment %s: command \"%s\" not found%s\n", d->where, d->name,
                app->argv[0], strchr(app->argv[0], '/') ? " or not executable" : " in PATH");
        return -1;
    }
    if (ambient)
        return 0;
    char sname[600];
    snprintf(sname, sizeof(sname), "%s-sidecar", name);
    struct keel_mesh_comp *sc = add_comp(p, sname, wl, KEEL_MESH_SIDECAR);
    sc->app_port = p->comps[p->n_comps - 2].app_port;
    sc->inbound = in;
    sc->outbound = out;
    sc->admin = adm;
    proxy_argv(sc, p, o->self_exe, NULL);
    return 0;
}

int keel_mesh_plan_build(struct keel_mesh_plan *p, const struct keel_mesh_manifest *m,
                         const struct keel_mesh_opts *o)
{
    memset(p, 0, sizeof(*p));
    char buf[4096];
    p->state_dir = keel_strdup(o->state_dir);
    snprintf(buf, sizeof(buf), "%s/config", o->state_dir);
    p->config_dir = keel_strdup(buf);
    if (o->log_dir)
        p->log_dir = keel_strdup(o->log_dir);
    else {
        snprintf(buf, sizeof(buf), "%s/logs", o->state_dir);
        p->log_dir = keel_strdup(buf);
    }
    if (m->has_ingress) {
        if (o->gateway_port) {
            if (keel_mesh_port_free(o->gateway_port) < 0) {
                fprintf(stderr,
                        "keel mesh: error: --gateway-port %d: 127.0.0.1:%d is already in use\n",
                        o->gateway_port, o->gateway_port);
                return -1;
            }
            p->gateway_port = o->gateway_port;
        } else {
            p->gateway_port = keel_mesh_free_port();
        }
    }
    int *wp_ports = keel_calloc(m->n_waypoints + 1, sizeof(int));
    for (size_t i = 0; i < m->n_waypoints; i++)
        wp_ports[i] = keel_mesh_free_port();
    for (size_t i = 0; i < m->n_deploys; i++)
        for (int r = 0; r < m->deploys[i].replicas; r++)
            if (add_replica(p, m, &m->deploys[i], r, o, wp_ports) < 0) {
                free(wp_ports);
                return -1;
            }
    if (m->has_ingress) {
        struct keel_mesh_comp *g = add_comp(p, "istio-ingressgateway",
                                            "istio-ingressgateway.istio-system", KEEL_MESH_GATEWAY);
        g->outbound = p->gateway_port;
        g->admin = keel_mesh_free_port();
        proxy_argv(g, p, o->self_exe, "gateway");
    }
    for (size_t i = 0; i < m->n_waypoints; i++) {
        char wl[1024];
        snprintf(wl, sizeof(wl), "%s.%s", m->waypoints[i].name, m->waypoints[i].ns);
        struct keel_mesh_comp *w = add_comp(p, m->waypoints[i].name, wl, KEEL_MESH_WAYPOINT);
        w->outbound = wp_ports[i];
        w->admin = keel_mesh_free_port();
        proxy_argv(w, p, o->self_exe, "waypoint");
    }
    free(wp_ports);
    if (m->mixer_report_server) { /* the mesh names a mixer: run keel mixer there */
        struct keel_mesh_comp *x = add_comp(p, "istio-telemetry", "istio-telemetry.istio-system", KEEL_MESH_MIXER);
        x->admin = keel_mesh_free_port(); /* its monitoring port: /ready */
        x->argv = strv_push(x->argv, o->self_exe);
        x->argv = strv_push(x->argv, "mixer");
        x->argv = strv_push(x->argv, "--listen");
        x->argv = strv_push(x->argv, m->mixer_report_server);
        x->argv = strv_push(x->argv, "--prometheus");
        x->argv = strv_pushf(x->argv, "127.0.0.1:%d", keel_mesh_free_port());
        x->argv = strv_push(x->argv, "--monitoring");
        x->argv = strv_pushf(x->argv, "127.0.0.1:%d", x->admin);
        x->argv = strv_push(x->argv, "--config-dir");
        x->argv = strv_push(x->argv, p->config_dir);
    }
    return 0;
}

/* ---- the config dir ---- */

static void yq(FILE *f, const char *s) /* a YAML double-quoted scalar */
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static bool selects(const struct keel_mesh_service *s, const struct keel_mesh_deploy *d)
{
    if (s->n_selector == 0 || strcmp(s->ns, d->ns))
        return false;
    for (size_t i = 0; i < s->n_selector; i++) {
        bool found = false;
        for (size_t j = 0; j < d->n_labels; j++)
            found |= !strcmp(d->labels[j].key, s->selector[i].key) &&
                     !strcmp(d->labels[j].value, s->selector[i].value);
        if (!found)
            return false;
    }
    return true;
}

/* ports: every port name of the Services in `ns` that select d (all: d NULL), to port. */
static void we_ports(FILE *f, const struct keel_mesh_manifest *m, const char *ns,
                     const struct keel_mesh_deploy *d, int port)
{
    const char *seen[256];
    size_t n = 0;
    for (size_t i = 0; i < m->n_services; i++) {
        const struct keel_mesh_service *s = &m->services[i];
        if (d ? !selects(s, d) : strcmp(s->ns, ns) != 0)
            continue;
        for (size_t j = 0; j < s->n_ports && n < 256; j++) {
            const char *pn = s->ports[j].name;
            bool dup = !*pn;
            for (size_t k = 0; k < n; k++)
                dup |= !strcmp(seen[k], pn);
            if (!dup)
                seen[n++] = pn;
        }
    }
    if (n == 0)
        return;
    fprintf(f, "  ports:\n");
    for (size_t k = 0; k < n; k++) {
        fprintf(f, "    ");
        yq(f, seen[k]);
        fprintf(f, ": %d\n", port);
    }
}

static void we_head(FILE *f, const char *name, const char *ns)
{
    fprintf(f, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: ");
    yq(f, name);
    fprintf(f, "\n  namespace: ");
    yq(f, ns);
    fprintf(f, "\nspec:\n  address: 127.0.0.1\n");
}

static int write_workloads(const struct keel_mesh_plan *p, const struct keel_mesh_manifest *m,
                           const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "# Generated by keel mesh up: one WorkloadEntry per replica, the gateway, the "
               "waypoints.\n");
    for (size_t i = 0; i < p->n_comps; i++) {
        const struct keel_mesh_comp *c = &p->comps[i];
        if (c->role == KEEL_MESH_APP) {
            const struct keel_mesh_deploy *d = c->deploy;
            /* ambient: traffic goes to the app itself (the waypoint sits in front) */
            int port = c->ambient ? c->app_port : p->comps[i + 1].inbound;
            we_head(f, c->name, d->ns);
            we_ports(f, m, d->ns, d, port);
            if (d->n_labels || d->replicas > 1) {
                fprintf(f, "  labels:\n");
                /* the entries are the pods (reviews-v1-0, -1): telemetry's workload is the
                 * Deployment, as in Istio (source_workload vs source.name) */
                if (d->replicas > 1) {
                    fprintf(f, "    service.istio.io/workload-name: ");
                    yq(f, d->name);
                    fprintf(f, "\n");
                }
                for (size_t k = 0; k < d->n_labels; k++) {
                    fprintf(f, "    ");
                    yq(f, d->labels[k].key);
                    fprintf(f, ": ");
                    yq(f, d->labels[k].value);
                    fprintf(f, "\n");
                }
            }
            if (d->service_account[0]) {
                fprintf(f, "  serviceAccount: ");
                yq(f, d->service_account);
                fprintf(f, "\n");
            }
        } else if (c->role == KEEL_MESH_GATEWAY) {
            we_head(f, "istio-ingressgateway", "istio-system");
            fprintf(f, "  labels: {istio: ingressgateway, app: istio-ingressgateway}\n"
                       "  serviceAccount: istio-ingressgateway-service-account\n");
        } else if (c->role == KEEL_MESH_WAYPOINT) {
            const char *dot = strchr(c->workload, '.');
            we_head(f, c->name, dot + 1);
            we_ports(f, m, dot + 1, NULL, c->outbound);
            fprintf(f, "  labels:\n    gateway.networking.k8s.io/gateway-name: ");
            yq(f, c->name);
            fprintf(f, "\n  serviceAccount: ");
            yq(f, c->name);
            fprintf(f, "\n");
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int mkdirs(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", dir);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* The previous run's files go: the dir is this mesh's, regenerated at every start. */
static void clear_yaml(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char buf[4400];
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if ((n > 5 && !strcmp(e->d_name + n - 5, ".yaml")) ||
            (n > 4 && !strcmp(e->d_name + n - 4, ".yml"))) {
            snprintf(buf, sizeof(buf), "%s/%s", dir, e->d_name);
            unlink(buf);
        }
    }
    closedir(d);
}

int keel_mesh_plan_write_config(const struct keel_mesh_plan *p, const struct keel_mesh_manifest *m)
{
    if (mkdirs(p->config_dir) < 0 || mkdirs(p->log_dir) < 0) {
        fprintf(stderr, "keel mesh: error: cannot create %s or %s: %s\n", p->config_dir, p->log_dir,
                strerror(errno));
        return -1;
    }
    clear_yaml(p->config_dir);
    char path[8192];
    for (size_t i = 0; i < m->n_files; i++) {
        const struct keel_mesh_file *mf = &m->files[i];
        if (!mf->has_resources)
            continue;
        char *copy = keel_strdup(mf->path);
        /* numbered: two inputs may share a base name */
        snprintf(path, sizeof(path), "%s/%02zu-%s", p->config_dir, i, basename(copy));
        free(copy);
        FILE *f = fopen(path, "w");
        if (f == NULL || fwrite(mf->text, 1, mf->len, f) != mf->len || fclose(f) != 0) {
            fprintf(stderr, "keel mesh: error: cannot write %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    snprintf(path, sizeof(path), "%s/zz-mesh-workloads.yaml", p->config_dir);
    if (write_workloads(p, m, path) < 0) {
        fprintf(stderr, "keel mesh: error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* what the proxies will load must load */
    struct keel_diag diag;
    keel_diag_init(&diag);
    const char *dir = p->config_dir;
    struct keel_config *cfg = keel_config_load_paths(&dir, 1, &diag);
    int rc = 0;
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.msgs[i]);
    if (cfg == NULL) {
        rc = -1;
    } else {
        keel_config_unref(cfg);
    }
    keel_diag_fini(&diag);
    return rc;
}

void keel_mesh_plan_free(struct keel_mesh_plan *p)
{
    for (size_t i = 0; i < p->n_comps; i++) {
        struct keel_mesh_comp *c = &p->comps[i];
        free(c->name);
        free(c->workload);
        free(c->log_path);
        strv_free(c->argv);
        strv_free(c->env);
    }
    free(p->comps);
    free(p->state_dir);
    free(p->config_dir);
    free(p->log_dir);
    memset(p, 0, sizeof(*p));
}
