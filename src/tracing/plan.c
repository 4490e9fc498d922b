/* The tracing plan of a config generation, as Istio derives it: mesh enableTracing,
 * defaultConfig.tracing (sampling, zipkin.address), defaultProviders.tracing and
 * extensionProviders[].zipkin, then Telemetry tracing[] at root, namespace and workload
 * scope (later scopes override what they set, per match.mode). */
#include "tracing/tracing.h"

#include "core/alloc.h"
#include "telemetry/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_COLLECTOR "zipkin.istio-system:9411"

static const char *label(const struct keel_trace_plan_input *in, const char *key)
{
    for (size_t i = 0; i < in->n_labels; i++)
        if (in->labels[i].key && !strcmp(in->labels[i].key, key))
            return in->labels[i].value;
    return NULL;
}

static void identity(struct keel_trace_identity *id, const struct keel_trace_plan_input *in)
{
    const char *ns = in->ns ? in->ns : "default";
    const char *app = label(in, "app");
    const char *name = in->name ? in->name : "unknown";
    const char *svc = label(in, "service.istio.io/canonical-name");
    const char *rev = label(in, "service.istio.io/canonical-revision");
    if (svc == NULL)
        svc = app ? app : name;
    if (rev == NULL)
        rev = label(in, "version");
    snprintf(id->service_name, sizeof(id->service_name), "%s.%s", app ? app : name, ns);
    for (char *p = id->service_name; *p; p++) /* Zipkin: service names are lower case */
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    snprintf(id->node_id, sizeof(id->node_id), "%s~%s~%s.%s~%s.svc.cluster.local",
             in->role ? in->role : "sidecar", in->ip ? in->ip : "127.0.0.1", name, ns, ns);
    snprintf(id->canonical_service, sizeof(id->canonical_service), "%s", svc);
    snprintf(id->canonical_revision, sizeof(id->canonical_revision), "%s", rev ? rev : "latest");
    snprintf(id->namespace, sizeof(id->namespace), "%s", ns);
    if (in->ip != NULL && strchr(in->ip, ':') == NULL)
        snprintf(id->ipv4, sizeof(id->ipv4), "%s", in->ip);
}

static const struct keel_config_ext_provider *provider(const struct keel_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->mesh.n_extension_providers; i++)
        if (cfg->mesh.extension_providers[i].name && !strcmp(cfg->mesh.extension_providers[i].name, name))
            return &cfg->mesh.extension_providers[i];
    return NULL;
}

/* host:port to an address: an IP literal, localhost, or a service of the registry (its
 * first endpoint). No DNS: plans are built on the main thread, which must not stall. */
static bool resolve(const struct keel_config *cfg, const char *ns, const char *hostport,
                    struct keel_addr *a)
{
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL)
        return false;
    size_t hlen = (size_t)(colon - hostport);
    int port = atoi(colon + 1);
    char host[256];
    if (hlen == 0 || hlen >= sizeof(host) || port <= 0 || port > 65535)
        return false;
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    bool literal = strspn(host, "0123456789.") == hlen || host[0] == '[' || !strcmp(host, "localhost");
    if (literal)
        return keel_addr_parse(hostport, a) == 0;
    const struct keel_registry_port *rp = keel_registry_resolve(cfg, host, hlen, port, ns);
    if (rp == NULL || rp->n_endpoints == 0)
        return false;
    char addr[300];
    const struct keel_registry_endpoint *ep = &rp->endpoints[0];
    snprintf(addr, sizeof(addr), strchr(ep->address, ':') ? "[%s]:%d" : "%s:%d", ep->address,
             ep->port > 0 ? ep->port : port);
    return keel_addr_parse(addr, a) == 0;
}

static void set_tag(struct keel_trace_mode *m, const struct keel_config_custom_tag *ct)
{
    size_t i = 0;
    while (i < m->n_tags && strcmp(m->tags[i].name, ct->tag))
        i++;
    if (i == KEEL_TRACE_MAX_CUSTOM_TAGS)
        return;
    struct keel_trace_custom_tag *t = &m->tags[i];
    *t = (struct keel_trace_custom_tag){ 0 };
    snprintf(t->name, sizeof(t->name), "%s", ct->tag);
    if (ct->header_name) {
        t->kind = KEEL_TRACE_TAG_HEADER;
        snprintf(t->header, sizeof(t->header), "%s", ct->header_name);
        snprintf(t->dflt, sizeof(t->dflt), "%s", ct->header_default ? ct->header_default : "");
    } else if (ct->env_name) {
        const char *v = getenv(ct->env_name); /* read once per generation, as Envoy does at start */
        t->kind = KEEL_TRACE_TAG_LITERAL;
        snprintf(t->value, sizeof(t->value), "%s", v ? v : ct->env_default ? ct->env_default : "");
    } else {
        t->kind = KEEL_TRACE_TAG_LITERAL;
        snprintf(t->value, sizeof(t->value), "%s", ct->literal ? ct->literal : "");
    }
    if (i == m->n_tags)
        m->n_tags++;
}

struct keel_trace_plan *keel_trace_plan_new(const struct keel_trace_plan_input *in,
                                            struct keel_diag *diags)
{
    struct keel_trace_plan *p = keel_calloc(1, sizeof(*p));
    const struct keel_config *cfg = in->cfg;
    const struct keel_config_mesh *mesh = &cfg->mesh;
    double sampling = mesh->tracing_sampling >= 0 ? mesh->tracing_sampling : 1.0;
    for (int k = 0; k < 2; k++)
        p->mode[k] = (struct keel_trace_mode){ .sampling = sampling, .report = true };
    p->max_tag_len = 256;
    snprintf(p->path, sizeof(p->path), "/api/v2/spans");
    identity(&p->id, in);
    const char *prov = mesh->n_default_tracing_providers ? mesh->default_tracing_providers[0] : NULL;

    const struct keel_config_telemetry *scope[64];
    struct keel_telemetry_workload tw = { in->name, in->ns, in->labels, in->n_labels, in->gateway };
    size_t n = keel_telemetry_scope(cfg, &tw, scope, 64);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < scope[i]->n_tracing; j++) {
            const struct keel_config_telemetry_tracing *tr = &scope[i]->tracing[j];
            if (tr->n_providers > 0 && tr->providers[0].name)
                prov = tr->providers[0].name;
            for (int k = 0; k < 2; k++) {
                int want = k == KEEL_TRACE_CLIENT ? KEEL_CONFIG_MODE_CLIENT : KEEL_CONFIG_MODE_SERVER;
                if (tr->mode != KEEL_CONFIG_MODE_CLIENT_AND_SERVER && tr->mode != want)
                    continue;
                struct keel_trace_mode *m = &p->mode[k];
                if (tr->random_sampling_percentage >= 0)
                    m->sampling = tr->random_sampling_percentage;
                if (tr->disable_span_reporting >= 0)
                    m->report = !tr->disable_span_reporting;
                for (size_t t = 0; t < tr->n_custom_tags; t++)
                    set_tag(m, &tr->custom_tags[t]);
            }
        }
    }

    const char *collector = mesh->zipkin_address && *mesh->zipkin_address ? mesh->zipkin_address
                                                                             : DEFAULT_COLLECTOR;
    char buf[300];
    if (prov != NULL) {
        const struct keel_config_ext_provider *ep = provider(cfg, prov);
        if (ep == NULL || ep->type != KEEL_CONFIG_PROVIDER_ZIPKIN) {
            if (diags)
                keel_diag_warn(diags, "mesh", 0, 0,
                               "tracing provider \"%s\" is not a zipkin extensionProvider: no spans",
                               prov);
            collector = NULL;
        } else {
            snprintf(buf, sizeof(buf), "%s:%lld", ep->zipkin_service ? ep->zipkin_service : "",
                     (long long)ep->zipkin_port);
            collector = buf;
            if (ep->zipkin_max_tag_length > 0)
                p->max_tag_len = (size_t)ep->zipkin_max_tag_length;
            if (ep->zipkin_path != NULL && ep->zipkin_path[0] == '/')
                snprintf(p->path, sizeof(p->path), "%s", ep->zipkin_path);
            p->trace64 = ep->zipkin_enable_64bit_trace_id;
        }
    }
    if (in->zipkin_override != NULL)
        collector = in->zipkin_override;
    if (collector != NULL) {
        snprintf(p->collector, sizeof(p->collector), "%s", collector);
        p->addr_ok = resolve(cfg, in->ns ? in->ns : "default", collector, &p->addr);
        if (!p->addr_ok && diags)
            keel_diag_warn(diags, "mesh", 0, 0,
                           "zipkin collector %s: not an address nor a service with endpoints; "
                           "trace headers are propagated, no spans are sent", collector);
    }
    /* without a collector, context still flows (the app's spans and the next proxy's) */
    p->enabled = mesh->enable_tracing;
    if (!p->addr_ok)
        p->mode[0].report = p->mode[1].report = false;
    return p;
}

void keel_trace_plan_free(struct keel_trace_plan *p)
{
    free(p);
}
