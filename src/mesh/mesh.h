/* The local mesh: Kubernetes manifests -> processes on 127.0.0.1 (keel mesh up/status).
 *
 * manifest.c reads Deployments, Services, ServiceAccounts, Namespaces and every Istio
 * resource from ordinary YAML (errors as FILE:LINE:COL); plan.c turns them into a list
 * of components (apps, sidecars, gateway, waypoints) with their ports and writes the
 * config dir the proxies share; tracing.c adds the trace collector when tracing is on;
 * run.c starts, supervises and stops them; state.c is the file `keel mesh status` and
 * `keel apply` read to find the running mesh. */
#ifndef KEEL_MESH_MESH_H
#define KEEL_MESH_MESH_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct keel_mesh_kv {
    char *key, *value;
};

struct keel_mesh_service_port {
    char *name;
    int port;
};

struct keel_mesh_service {
    char *name, *ns;
    struct keel_mesh_service_port *ports;
    size_t n_ports;
    struct keel_mesh_kv *selector;
    size_t n_selector;
};

struct keel_mesh_deploy {
    char *name, *ns, *service_account;
    char *where; /* FILE:LINE:COL of the Deployment, for messages */
    int replicas;
    struct keel_mesh_kv *labels; /* the pod template's */
    size_t n_labels;
    char **argv; /* command + args of the first container, NULL-terminated */
    size_t argc;
    struct keel_mesh_kv *env;
    size_t n_env;
};

struct keel_mesh_waypoint {
    char *name, *ns;
};

struct keel_mesh_ambient_ns { /* a Namespace labelled istio.io/use-waypoint */
    char *ns, *waypoint;
};

/* One input file, as written into the config dir: the documents keel's loader reads
 * kept byte for byte, the Kubernetes-only ones blanked to newlines so that lines match. */
struct keel_mesh_file {
    char *path; /* as given */
    char *text;
    size_t len;
    bool has_resources;
};

struct keel_mesh_manifest {
    struct keel_mesh_service *services;
    size_t n_services;
    struct keel_mesh_deploy *deploys;
    size_t n_deploys;
    struct keel_mesh_waypoint *waypoints;
    size_t n_waypoints;
    struct keel_mesh_ambient_ns *ambient;
    size_t n_ambient;
    struct keel_mesh_file *files;
    size_t n_files;
    bool has_ingress; /* a networking.istio.io Gateway selecting istio: ingressgateway */
    char *mixer_report_server; /* ConfigMap istio's mesh mixerReportServer, or NULL */
};

/* Read files and directories (their *.yaml, *.yml files, sorted; not subdirectories). 0, or -1
 * with every problem in diag as FILE:LINE:COL: error: ... */
int keel_mesh_manifest_read(struct keel_mesh_manifest *m, const char *const *paths, size_t n,
                            struct keel_diag *diag);
void keel_mesh_manifest_free(struct keel_mesh_manifest *m);
/* The namespace's waypoint name, or NULL when its workloads have sidecars. */
const char *keel_mesh_ambient_waypoint(const struct keel_mesh_manifest *m, const char *ns);

/* ---- components ---- */

enum keel_mesh_role {
    KEEL_MESH_APP,
    KEEL_MESH_SIDECAR,
    KEEL_MESH_GATEWAY,
    KEEL_MESH_WAYPOINT,
    KEEL_MESH_COLLECTOR, /* keel collector: app_port is where it listens */
    KEEL_MESH_MIXER,
};

struct keel_mesh_comp {
    char *name;     /* "details-v1" (app), "details-v1-sidecar", "istio-ingressgateway" */
    char *workload; /* NAME.NAMESPACE */
    enum keel_mesh_role role;
    char **argv; /* NULL-terminated; argv[0] an absolute path or a PATH name */
    char **env;  /* extra NAME=VALUE, NULL-terminated */
    int app_port, inbound, outbound, admin; /* 0 = none */
    char *log_path;
    const struct keel_mesh_deploy *deploy; /* apps: what they run */
    int replica;
    bool ambient; /* apps without a sidecar (their namespace uses a waypoint) */
    /* run state */
    pid_t pid;
    int restarts;
    double started_at, next_start; /* monotonic seconds; next_start > 0 = waiting to restart */
    double backoff;
};

struct keel_mesh_plan {
    struct keel_mesh_comp *comps;
    size_t n_comps;
    int gateway_port; /* 0 when no gateway */
    int zipkin_port;  /* the trace collector's; 0 when none runs */
    char *state_dir, *config_dir, *log_dir;
};

struct keel_mesh_opts {
    const char *state_dir;
    const char *log_dir;  /* NULL: STATE/logs */
    int gateway_port;     /* 0: a free one */
    const char *self_exe; /* what `keel` in a command means */
    int tracing;          /* trace collector: -1 when the mesh config has tracing, 0 no, 1 yes */
    int zipkin_port;      /* the collector's port; 0: a free one */
};

/* Components, ports and env for the manifest. 0, or -1 after printing the reason. */
int keel_mesh_plan_build(struct keel_mesh_plan *p, const struct keel_mesh_manifest *m,
                         const struct keel_mesh_opts *o);
/* Write the config dir: the user's files, then generated WorkloadEntries. 0 or -1. */
int keel_mesh_plan_write_config(const struct keel_mesh_plan *p, const struct keel_mesh_manifest *m);
void keel_mesh_plan_free(struct keel_mesh_plan *p);
/* A free 127.0.0.1 TCP port below the ephemeral range (bound and released), never one
 * already handed out. */
int keel_mesh_free_port(void);
/* 0 if 127.0.0.1:port can be bound now. */
int keel_mesh_port_free(int port);

/* ---- the trace collector (tracing.c) ---- */

/* After keel_mesh_plan_write_config: when o->tracing says so (-1: when the config dir's
 * mesh config turns tracing on and names a Zipkin), add the collector component and
 * `--zipkin 127.0.0.1:PORT` to every proxy. 0, or -1 after printing the reason. */
int keel_mesh_plan_add_collector(struct keel_mesh_plan *p, const struct keel_mesh_opts *o);

/* ---- running ---- */

/* Start everything, print the table, supervise until a signal or for_seconds (> 0),
 * then stop everything. Returns the exit code. */
int keel_mesh_run(struct keel_mesh_plan *p, double for_seconds);

/* ---- state file (STATE/mesh.state) ---- */

/* The state dir by the usual rules: the flag, $KEEL_MESH_DIR, /tmp/keel-mesh-USER. */
void keel_mesh_state_dir(char *out, size_t cap, const char *flag);
int keel_mesh_state_write(const struct keel_mesh_plan *p);
void keel_mesh_state_remove(const struct keel_mesh_plan *p);
/* The config dir of the mesh running from state_dir (its supervisor alive): 0 and out
 * filled, or -1 when none runs. */
int keel_mesh_state_config_dir(const char *state_dir, char *out, size_t cap);
/* GET path from 127.0.0.1:port (path NULL: only connect): the status code, 0 for a
 * connect-only probe that connected, -1 when nothing answers within timeout_ms. */
int keel_mesh_http_status(int port, const char *path, int timeout_ms);
/* Print the running mesh's components with their health; json: one JSON object. */
int keel_mesh_status(const char *state_dir, bool json);

#endif
