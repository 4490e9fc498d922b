/* keel mesh up FILE|DIR... / keel mesh status: a local mesh from Kubernetes manifests
 * (src/mesh/). Everything is checked (manifests, commands, ports) before anything starts. */
#include "cli/commands.h"

#include "mesh/mesh.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int usage(FILE *out)
{
    fprintf(
        out,
        "usage: keel mesh up [OPTIONS] FILE|DIR...\n"
        "       keel mesh status [-o json] [--state-dir DIR]\n\n"
        "up: run the Deployments of Kubernetes manifests as local processes, each replica with\n"
        "its own keel sidecar (env PORT = its port, HTTP_PROXY = its sidecar), plus the ingress\n"
        "gateway when a Gateway selects istio: ingressgateway, and the waypoints. Services and\n"
        "Istio resources go into the mesh's config dir, which every proxy watches.\n\n"
        "  --state-dir DIR     config dir, logs and state file ($KEEL_MESH_DIR, "
        "/tmp/keel-mesh-USER)\n"
        "  --log-dir DIR       each component's stdout/stderr in DIR/NAME.log (STATE/logs)\n"
        "  --gateway-port N    the ingress gateway's port (a free one)\n"
        "  --tracing           run the trace collector (keel collector) and send every proxy's\n"
        "                      spans to it; without this flag: when the mesh config turns\n"
        "                      tracing on (defaultConfig.tracing, defaultProviders.tracing)\n"
        "  --no-tracing        no collector; spans go where the mesh config says\n"
        "  --zipkin-port N     the trace collector's port (a free one; Zipkin's is 9411)\n"
        "  --for SECONDS       stop everything after SECONDS (default: until Ctrl-C / SIGTERM)\n\n"
        "status: the running mesh's components, pids, ports and health (admin /ready, app port);\n"
        "exit 0 when all are healthy.\n");
    return out == stderr ? 2 : 0;
}

static int ensure_dir(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", dir);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(buf, 0755);
            *s = '/';
        }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int up(int argc, char **argv)
{
    const char *state_flag = NULL, *log_dir = NULL;
    int gw_port = 0, zipkin_port = 0, tracing = -1;
    double for_s = 0;
    const char **paths = calloc((size_t)argc + 1, sizeof(char *));
    size_t n = 0;
    if (paths == NULL)
        abort();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--state-dir") && has)
            state_flag = argv[++i];
        else if (!strcmp(a, "--log-dir") && has)
            log_dir = argv[++i];
        else if (!strcmp(a, "--tracing"))
            tracing = 1;
        else if (!strcmp(a, "--no-tracing"))
            tracing = 0;
        else if ((!strcmp(a, "--gateway-port") || !strcmp(a, "--zipkin-port")) && has) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 65535) {
                fprintf(stderr, "keel mesh: %s: not a port: %s\n", a, argv[i]);
                free(paths);
                return 2;
            }
            if (!strcmp(a, "--gateway-port"))
                gw_port = (int)v;
            else
                zipkin_port = (int)v;
        } else if (!strcmp(a, "--for") && has) {
            char *end;
            for_s = strtod(argv[++i], &end);
            if (*end || for_s <= 0) {
                fprintf(stderr, "keel mesh: --for: not a positive number of seconds: %s\n",
                        argv[i]);
                free(paths);
                return 2;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            free(paths);
            return usage(stdout);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "keel mesh: unknown option %s\n\n", a);
            free(paths);
            return usage(stderr);
        } else
            paths[n++] = a;
    }
    if (n == 0) {
        free(paths);
        return usage(stderr);
    }
    char state_dir[4096], self[4096], running[4096];
    keel_mesh_state_dir(state_dir, sizeof(state_dir), state_flag);
    if (keel_mesh_state_config_dir(state_dir, running, sizeof(running)) == 0) {
        fprintf(stderr,
                "keel mesh: error: a mesh already runs from %s (keel mesh status); stop it or use "
                "--state-dir\n",
                state_dir);
        free(paths);
        return 1;
    }
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0) {
        fprintf(stderr, "keel mesh: /proc/self/exe: %s\n", strerror(errno));
        free(paths);
        return 1;
    }
    self[sl] = '\0';

    struct keel_diag diag;
    keel_diag_init(&diag);
    struct keel_mesh_manifest m;
    int rc = keel_mesh_manifest_read(&m, paths, n, &diag);
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.msgs[i]);
    if (rc < 0) {
        fprintf(stderr, "keel mesh: nothing started (%zu error%s)\n", diag.errors,
                diag.errors == 1 ? "" : "s");
        keel_diag_fini(&diag);
        keel_mesh_manifest_free(&m);
        free(paths);
        return 1;
    }
    keel_diag_fini(&diag);
    struct keel_mesh_opts o = {.state_dir = state_dir,
                               .log_dir = log_dir,
                               .gateway_port = gw_port,
                               .self_exe = self,
                               .tracing = tracing,
                               .zipkin_port = zipkin_port};
    struct keel_mesh_plan p = {0};
    rc = 1;
    if (ensure_dir(state_dir) < 0)
        fprintf(stderr, "keel mesh: error: cannot create %s: %s\n", state_dir, strerror(errno));
    else if (keel_mesh_plan_build(&p, &m, &o) < 0 || keel_mesh_plan_write_config(&p, &m) < 0 ||
             keel_mesh_plan_add_collector(&p, &o) < 0)
        fprintf(stderr, "keel mesh: nothing started\n");
    else
        rc = keel_mesh_run(&p, for_s);
    keel_mesh_plan_free(&p);
    keel_mesh_manifest_free(&m);
    free(paths);
    return rc;
}

static int status(int argc, char **argv)
{
    const char *state_flag = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            json = !strcmp(argv[++i], "json");
            if (!json && strcmp(argv[i], "wide") && strcmp(argv[i], "table")) {
                fprintf(stderr, "keel mesh status: -o json (or table)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "-ojson") || !strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--state-dir") && i + 1 < argc)
            state_flag = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return usage(stdout);
        else
            return usage(stderr);
    }
    char state_dir[4096];
    keel_mesh_state_dir(state_dir, sizeof(state_dir), state_flag);
    return keel_mesh_status(state_dir, json);
}

int keel_cmd_mesh(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "up"))
        return up(argc - 1, argv + 1);
    if (!strcmp(argv[1], "status"))
        return status(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return usage(stdout);
    fprintf(stderr, "keel mesh: unknown subcommand '%s'\n\n", argv[1]);
    return usage(stderr);
}
