/* The mesh's trace collector: when tracing is on, `keel mesh up` runs `keel collector`
 * on a free loopback port and points every proxy at it (`--zipkin`), so a laptop mesh
 * has traces with no Zipkin server. It plays the part of the mesh config's Zipkin
 * (`zipkin.istio-system:9411` or whatever address is set): that name resolves nowhere
 * on 127.0.0.1, and spans sent nowhere would be a silent loss. */
#include "mesh/mesh.h"

#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char **push(char **v, const char *s)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    v = keel_realloc(v, (n + 2) * sizeof(char *));
    v[n] = keel_strdup(s);
    v[n + 1] = NULL;
    return v;
}

/* Istio's rules as keel reads them (src/tracing/plan.c): enableTracing (default true),
 * then a Zipkin to send to — defaultConfig.tracing (zipkin.address, or sampling alone,
 * whose default address is zipkin.istio-system:9411) or a zipkin extensionProvider chosen
 * by defaultProviders.tracing. A mesh config that says nothing about tracing starts no
 * collector: Istio's demo profile has one, its default profile does not. */
static bool configured(const struct keel_config *cfg)
{
    const struct keel_config_mesh *mesh = &cfg->mesh;
    if (!mesh->enable_tracing)
        return false;
    if ((mesh->zipkin_address && *mesh->zipkin_address) || mesh->tracing_sampling >= 0)
        return true;
    for (size_t i = 0; i < mesh->n_default_tracing_providers; i++)
        for (size_t k = 0; k < mesh->n_extension_providers; k++) {
            const struct keel_config_ext_provider *ep = &mesh->extension_providers[k];
            if (ep->name && !strcmp(ep->name, mesh->default_tracing_providers[i]) &&
                ep->type == KEEL_CONFIG_PROVIDER_ZIPKIN)
                return true;
        }
    return false;
}

int keel_mesh_plan_add_collector(struct keel_mesh_plan *p, const struct keel_mesh_opts *o)
{
    if (o->tracing == 0)
        return 0;
    /* write_config has loaded this dir already and printed its diagnostics */
    struct keel_diag diag;
    keel_diag_init(&diag);
    const char *dir = p->config_dir;
    struct keel_config *cfg = keel_config_load_paths(&dir, 1, &diag);
    keel_diag_fini(&diag);
    bool enabled = cfg == NULL || cfg->mesh.enable_tracing;
    bool on = o->tracing > 0 || (cfg != NULL && configured(cfg));
    if (cfg != NULL)
        keel_config_unref(cfg);
    if (!on)
        return 0;
    if (!enabled)
        fprintf(stderr, "keel mesh: warning: --tracing, but the mesh config says enableTracing: "
                        "false; the proxies send no spans until it is true\n");
    int port = o->zipkin_port;
    if (port) {
        if (keel_mesh_port_free(port) < 0) {
            fprintf(stderr, "keel mesh: error: --zipkin-port %d: 127.0.0.1:%d is already in use\n",
                    port, port);
            return -1;
        }
    } else if ((port = keel_mesh_free_port()) < 0) {
        fprintf(stderr, "keel mesh: no free loopback port for the trace collector\n");
        return -1;
    }
    char addr[64], log[8192];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (size_t i = 0; i < p->n_comps; i++) {
        struct keel_mesh_comp *c = &p->comps[i];
        if (c->role == KEEL_MESH_APP)
            continue;
        c->argv = push(c->argv, "--zipkin");
        c->argv = push(c->argv, addr);
    }
    p->comps = keel_realloc(p->comps, (p->n_comps + 1) * sizeof(*p->comps));
    struct keel_mesh_comp *c = &p->comps[p->n_comps++];
    memset(c, 0, sizeof(*c));
    /* Istio's addon: Service zipkin in istio-system */
    c->name = keel_strdup("zipkin");
    c->workload = keel_strdup("zipkin.istio-system");
    c->role = KEEL_MESH_COLLECTOR;
    c->app_port = port;
    snprintf(log, sizeof(log), "%s/zipkin.log", p->log_dir);
    c->log_path = keel_strdup(log);
    c->backoff = 0.5;
    c->argv = push(c->argv, o->self_exe);
    c->argv = push(c->argv, "collector");
    c->argv = push(c->argv, "--listen");
    c->argv = push(c->argv, addr);
    p->zipkin_port = port;
    return 0;
}
