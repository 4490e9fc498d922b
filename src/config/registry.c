/* The service registry: Services, ServiceEntries and WorkloadEntries resolved into
 * services -> ports (with protocol) -> endpoints, and workloads -> services they back. */
#include "config/config_int.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- protocol selection (access-logs-and-tracing.md §6) ---- */

static const struct {
    const char *prefix;
    enum keel_proto p;
} proto_table[] = {
    { "http", KEEL_PROTO_HTTP }, { "http2", KEEL_PROTO_HTTP2 }, { "grpc", KEEL_PROTO_GRPC },
    { "grpc-web", KEEL_PROTO_GRPC_WEB }, { "http_proxy", KEEL_PROTO_HTTP_PROXY }, { "https", KEEL_PROTO_HTTPS },
    { "tls", KEEL_PROTO_TLS }, { "tcp", KEEL_PROTO_TCP }, { "mongo", KEEL_PROTO_MONGO },
    { "redis", KEEL_PROTO_REDIS }, { "mysql", KEEL_PROTO_MYSQL }, { "udp", KEEL_PROTO_UDP },
};

static const char *const proto_names[] = {
    [KEEL_PROTO_UNKNOWN] = "UNKNOWN", [KEEL_PROTO_HTTP] = "HTTP", [KEEL_PROTO_HTTP2] = "HTTP2",
    [KEEL_PROTO_GRPC] = "GRPC", [KEEL_PROTO_GRPC_WEB] = "GRPC-Web", [KEEL_PROTO_HTTP_PROXY] = "HTTP_PROXY",
    [KEEL_PROTO_HTTPS] = "HTTPS", [KEEL_PROTO_TLS] = "TLS", [KEEL_PROTO_TCP] = "TCP",
    [KEEL_PROTO_MONGO] = "Mongo", [KEEL_PROTO_REDIS] = "Redis", [KEEL_PROTO_MYSQL] = "MySQL",
    [KEEL_PROTO_UDP] = "UDP",
};

const char *keel_proto_name(enum keel_proto p)
{
    return (unsigned)p <= KEEL_PROTO_UDP ? proto_names[p] : "UNKNOWN";
}

bool keel_proto_is_http(enum keel_proto p)
{
    return p == KEEL_PROTO_HTTP || p == KEEL_PROTO_HTTP2 || p == KEEL_PROTO_GRPC || p == KEEL_PROTO_GRPC_WEB ||
           p == KEEL_PROTO_HTTP_PROXY;
}

/* "<protocol>" or "<protocol>-<suffix>", case-insensitive; grpc-web* is GRPC-Web. */
static enum keel_proto proto_of_name(const char *s)
{
    if (!strncasecmp(s, "grpc-web", 8))
        return KEEL_PROTO_GRPC_WEB;
    size_t n = strcspn(s, "-");
    for (size_t i = 0; i < sizeof(proto_table) / sizeof(proto_table[0]); i++)
        if (strlen(proto_table[i].prefix) == n && !strncasecmp(proto_table[i].prefix, s, n))
            return proto_table[i].p;
    return KEEL_PROTO_UNKNOWN;
}

enum keel_proto keel_proto_of_port(const char *name, const char *app_protocol, const char *l4_protocol, int port)
{
    if (l4_protocol && !strcasecmp(l4_protocol, "UDP"))
        return KEEL_PROTO_UDP;
    enum keel_proto p;
    if (app_protocol && app_protocol[0]) {
        if (!strcmp(app_protocol, "kubernetes.io/h2c"))
            return KEEL_PROTO_HTTP2;
        if (!strcmp(app_protocol, "kubernetes.io/ws"))
            return KEEL_PROTO_HTTP;
        if (!strcmp(app_protocol, "kubernetes.io/wss"))
            return KEEL_PROTO_HTTPS;
        p = proto_of_name(app_protocol);
    } else if (name && name[0]) {
        p = proto_of_name(name);
    } else {
        return KEEL_PROTO_TCP; /* an unnamed port is plain TCP (seed 003) */
    }
    if (p == KEEL_PROTO_UNKNOWN && (port == 25 || port == 53 || port == 3306 || port == 27017))
        return KEEL_PROTO_TCP;
    return p;
}

/* ---- building ---- */

static bool selects(const struct keel_config_kv *sel, size_t n_sel, const struct keel_config_kv *labels,
                    size_t n_labels)
{
    if (n_sel == 0)
        return false;
    for (size_t i = 0; i < n_sel; i++) {
        bool ok = false;
        for (size_t j = 0; j < n_labels && !ok; j++)
            ok = !strcmp(sel[i].key, labels[j].key) && !strcmp(sel[i].value, labels[j].value);
        if (!ok)
            return false;
    }
    return true;
}

/* Workload labels sorted by (namespace, key, value, workload): a selector's candidates
 * are the workloads carrying its first label, found by binary search instead of a scan
 * of every workload per service port (10,000 resources load in well under a second). */
struct label_ref {
    const char *ns, *key, *value;
    size_t w;
};

static int ref_cmp3(const char *ns, const char *key, const char *value, const struct label_ref *r)
{
    int c = strcmp(ns, r->ns);
    if (c == 0)
        c = strcmp(key, r->key);
    if (c == 0)
        c = strcmp(value, r->value);
    return c;
}

static int ref_cmp(const void *pa, const void *pb)
{
    const struct label_ref *a = pa, *b = pb;
    int c = ref_cmp3(a->ns, a->key, a->value, b);
    return c ? c : (a->w > b->w) - (a->w < b->w);
}

struct label_index {
    struct label_ref *refs;
    size_t n;
};

static void label_index_build(struct label_index *ix, const struct keel_config *cfg)
{
    size_t n = 0;
    for (size_t k = 0; k < cfg->n_workloads; k++)
        n += cfg->workloads[k].n_labels;
    ix->refs = keel_alloc((n ? n : 1) * sizeof(*ix->refs));
    ix->n = 0;
    for (size_t k = 0; k < cfg->n_workloads; k++) {
        const struct keel_registry_workload *w = &cfg->workloads[k];
        for (size_t j = 0; j < w->n_labels; j++)
            ix->refs[ix->n++] = (struct label_ref){ w->namespace, w->labels[j].key, w->labels[j].value, k };
    }
    qsort(ix->refs, ix->n, sizeof(*ix->refs), ref_cmp);
}

/* [*first, return) : the refs of workloads in ns labelled sel[0]. */
static size_t label_index_range(const struct label_index *ix, const char *ns,
                                const struct keel_config_kv *sel, size_t n_sel, size_t *first)
{
    *first = 0;
    if (n_sel == 0)
        return 0;
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ref_cmp3(ns, sel[0].key, sel[0].value, &ix->refs[mid]) > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *first = lo;
    while (hi < ix->n && ref_cmp3(ns, sel[0].key, sel[0].value, &ix->refs[hi]) == 0)
        hi++;
    return hi;
}

static int64_t we_port(const struct keel_config_workloadentry_spec *w, const char *name)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < w->n_ports; i++)
        if (!strcmp(w->ports[i].key, name))
            return w->ports_num[i];
    return 0;
}

/* The workload port for service port sp: the entry named like the service port, else
 * a named targetPort looked up in the workload, else the numeric targetPort / port. */
static int endpoint_port(const struct keel_config_workloadentry_spec *w, const struct keel_registry_port *sp)
{
    int64_t p = we_port(w, sp->name);
    if (p)
        return (int)p;
    if (sp->target_port_name)
        return (int)we_port(w, sp->target_port_name);
    return sp->target_port ? sp->target_port : sp->port;
}

struct builder {
    struct keel_config_ctx *c;
    struct keel_registry_endpoint *eps;
    size_t n_eps, cap_eps;
};

static void add_ep(struct builder *b, const struct keel_registry_workload *w, const char *addr, int port)
{
    if (b->n_eps == b->cap_eps) {
        b->cap_eps = b->cap_eps ? 2 * b->cap_eps : 16;
        b->eps = keel_realloc(b->eps, b->cap_eps * sizeof(*b->eps));
    }
    b->eps[b->n_eps++] = (struct keel_registry_endpoint){ w, addr, port };
}

static void flush_eps(struct builder *b, struct keel_registry_port *p)
{
    p->n_endpoints = b->n_eps;
    p->endpoints = keel_config_arena_alloc(b->c->a, (b->n_eps ? b->n_eps : 1) * sizeof(*b->eps));
    if (b->n_eps)
        memcpy(p->endpoints, b->eps, b->n_eps * sizeof(*b->eps));
    b->n_eps = 0;
}

static void backs(struct keel_config_ctx *c, struct keel_registry_workload *w, const struct keel_registry_service *s,
                  size_t *caps)
{
    (void)caps;
    for (size_t i = 0; i < w->n_services; i++)
        if (w->services[i] == s)
            return;
    const struct keel_registry_service **n = keel_config_arena_alloc(c->a, (w->n_services + 1) * sizeof(*n));
    if (w->n_services)
        memcpy(n, w->services, w->n_services * sizeof(*n));
    n[w->n_services++] = s;
    w->services = n;
}

/* The workloads the service's selector picks become endpoints of port p. */
static void add_selected(struct keel_config_ctx *c, struct builder *b, const struct label_index *lix,
                         const struct keel_registry_service *s, struct keel_registry_port *p)
{
    struct keel_config *cfg = c->cfg;
    size_t r, end = label_index_range(lix, s->namespace, s->selector, s->n_selector, &r);
    for (; r < end; r++) {
        struct keel_registry_workload *w = &cfg->workloads[lix->refs[r].w];
        if (!selects(s->selector, s->n_selector, w->labels, w->n_labels))
            continue;
        int port = endpoint_port(&w->source->spec, p);
        if (port > 0)
            add_ep(b, w, w->address, port);
        backs(c, w, s, NULL);
    }
}

int keel_config_build_registry(struct keel_config_ctx *c)
{
    struct keel_config *cfg = c->cfg;
    struct keel_config_impl *im = cfg->impl;
    struct builder b = { .c = c };
    /* workloads */
    cfg->n_workloads = cfg->count[KEEL_CONFIG_WORKLOADENTRY];
    cfg->workloads = keel_config_arena_alloc(c->a, (cfg->n_workloads ? cfg->n_workloads : 1) * sizeof(*cfg->workloads));
    size_t wi = 0;
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_WORKLOADENTRY]; o; o = o->next, wi++) {
        struct keel_config_workloadentry *we = (struct keel_config_workloadentry *)o;
        struct keel_registry_workload *w = &cfg->workloads[wi];
        w->name = o->name;
        w->namespace = o->namespace;
        w->key = keel_config_arena_printf(c->a, "%s.%s", o->name, o->namespace);
        w->address = we->spec.address ? we->spec.address : "";
        w->ports = we->spec.ports;
        w->ports_num = we->spec.ports_num;
        w->n_ports = we->spec.n_ports;
        w->labels = we->spec.labels;
        w->n_labels = we->spec.n_labels;
        w->service_account = we->spec.service_account ? we->spec.service_account : "default";
        w->source = we;
        keel_config_index_put(&im->workloads, w->key, w);
    }
    struct label_index lix;
    label_index_build(&lix, cfg);
    /* services: one per Service, one per ServiceEntry host */
    size_t n_svc = cfg->count[KEEL_CONFIG_SERVICE];
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_SERVICEENTRY]; o; o = o->next)
        n_svc += ((struct keel_config_serviceentry *)o)->n_hosts;
    cfg->services = keel_config_arena_alloc(c->a, (n_svc ? n_svc : 1) * sizeof(*cfg->services));
    size_t si = 0;
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_SERVICE]; o; o = o->next) {
        struct keel_config_service *sv = (struct keel_config_service *)o;
        struct keel_registry_service *s = &cfg->services[si];
        s->name = o->name;
        s->namespace = o->namespace;
        s->fqdn = keel_config_arena_printf(c->a, "%s.%s.svc.cluster.local", o->name, o->namespace);
        s->source = o;
        s->selector = sv->selector;
        s->n_selector = sv->n_selector;
        s->n_ports = sv->n_ports;
        s->ports = keel_config_arena_alloc(c->a, (sv->n_ports ? sv->n_ports : 1) * sizeof(*s->ports));
        for (size_t i = 0; i < sv->n_ports; i++) {
            const struct keel_config_service_port *cp = &sv->ports[i];
            struct keel_registry_port *p = &s->ports[i];
            p->service = s;
            p->name = cp->name ? cp->name : "";
            p->port = (int)cp->port;
            p->target_port = (int)cp->target_port;
            p->target_port_name = cp->target_port_name;
            p->app_protocol = cp->app_protocol;
            p->protocol = keel_proto_of_port(cp->name, cp->app_protocol, cp->protocol, (int)cp->port);
            if (cp->port <= 0 || cp->port > 65535)
                keel_config_err_at(c, &cp->pos, "port %lld out of range 1-65535", (long long)cp->port);
            if (sv->n_ports > 1 && (cp->name == NULL || cp->name[0] == '\0'))
                keel_config_err_at(c, &cp->pos, "Service \"%s\" has several ports: each needs a name", o->name);
            add_selected(c, &b, &lix, s, p);
            flush_eps(&b, p);
        }
        if (keel_config_index_put(&im->services, s->fqdn, s) == NULL)
            si++;
    }
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_SERVICEENTRY]; o; o = o->next) {
        struct keel_config_serviceentry *se = (struct keel_config_serviceentry *)o;
        for (size_t h = 0; h < se->n_hosts; h++) {
            struct keel_registry_service *s = &cfg->services[si];
            s->name = se->hosts[h].s;
            s->namespace = o->namespace;
            s->fqdn = se->hosts[h].s;
            s->source = o;
            s->selector = se->workload_selector;
            s->n_selector = se->n_workload_selector;
            s->n_ports = se->n_ports;
            s->ports = keel_config_arena_alloc(c->a, (se->n_ports ? se->n_ports : 1) * sizeof(*s->ports));
            for (size_t i = 0; i < se->n_ports; i++) {
                const struct keel_config_se_port *cp = &se->ports[i];
                struct keel_registry_port *p = &s->ports[i];
                p->service = s;
                p->name = cp->name ? cp->name : "";
                p->port = (int)cp->number;
                p->target_port = (int)cp->target_port;
                p->protocol = cp->protocol && cp->protocol[0] ? proto_of_name(cp->protocol)
                                                              : keel_proto_of_port(cp->name, NULL, NULL, p->port);
                if (cp->protocol && cp->protocol[0] && p->protocol == KEEL_PROTO_UNKNOWN)
                    keel_config_warn_at(c, &cp->pos, "unknown protocol \"%s\"; traffic will be sniffed",
                                        cp->protocol);
                for (size_t e = 0; e < se->n_endpoints; e++) {
                    int port = endpoint_port(&se->endpoints[e], p);
                    if (se->endpoints[e].address && port > 0)
                        add_ep(&b, NULL, se->endpoints[e].address, port);
                }
                add_selected(c, &b, &lix, s, p);
                flush_eps(&b, p);
            }
            struct keel_registry_service *prev = keel_config_index_put(&im->services, s->fqdn, s);
            if (prev)
                keel_config_warn_at(c, &se->hosts[h].pos, "host \"%s\" is already defined by %s %s/%s; ignored",
                                    s->fqdn, prev->source->kind_written, prev->namespace, prev->name);
            else
                si++;
        }
    }
    cfg->n_services = si;
    free(b.eps);
    free(lix.refs);
    return 0;
}

/* ---- lookups ---- */

const struct keel_registry_port *keel_registry_resolve(const struct keel_config *cfg, const char *host, size_t len,
                                                       int port, const char *default_ns)
{
    if (default_ns == NULL || default_ns[0] == '\0')
        default_ns = "default";
    /* split host:port */
    for (size_t i = len; i-- > 0;) {
        if (host[i] == ':') {
            int p = 0;
            bool digits = i + 1 < len;
            for (size_t j = i + 1; j < len; j++) {
                if (host[j] < '0' || host[j] > '9' || p > 65535) {
                    digits = false;
                    break;
                }
                p = p * 10 + (host[j] - '0');
            }
            if (digits) {
                port = p;
                len = i;
            }
            break;
        }
        if (host[i] < '0' || host[i] > '9')
            break;
    }
    if (len > 0 && host[len - 1] == '.')
        len--;
    const struct keel_config_index *ix = &cfg->impl->services;
    const struct keel_registry_service *s = keel_config_index_get(ix, host, len);
    if (s == NULL) {
        char buf[512];
        size_t n = len;
        static const char *const suffixes[] = { ".svc.cluster.local", ".svc" };
        for (int k = 0; k < 2; k++) {
            size_t sl = strlen(suffixes[k]);
            if (n > sl && !strncasecmp(host + n - sl, suffixes[k], sl)) {
                n -= sl;
                break;
            }
        }
        size_t dots = 0;
        for (size_t i = 0; i < n; i++)
            dots += host[i] == '.';
        int w = -1;
        if (dots == 0)
            w = snprintf(buf, sizeof(buf), "%.*s.%s.svc.cluster.local", (int)n, host, default_ns);
        else if (dots == 1)
            w = snprintf(buf, sizeof(buf), "%.*s.svc.cluster.local", (int)n, host);
        if (w > 0 && (size_t)w < sizeof(buf))
            s = keel_config_index_get(ix, buf, (size_t)w);
    }
    if (s == NULL || s->n_ports == 0)
        return NULL;
    if (port <= 0)
        return &s->ports[0];
    for (size_t i = 0; i < s->n_ports; i++)
        if (s->ports[i].port == port)
            return &s->ports[i];
    return NULL;
}

const struct keel_registry_workload *keel_registry_workload(const struct keel_config *cfg, const char *key)
{
    const struct keel_registry_workload *w = keel_config_index_get(&cfg->impl->workloads, key, strlen(key));
    if (w == NULL && strchr(key, '.') == NULL) {
        char buf[512];
        int n = snprintf(buf, sizeof(buf), "%s.default", key);
        if (n > 0 && (size_t)n < sizeof(buf))
            w = keel_config_index_get(&cfg->impl->workloads, buf, (size_t)n);
    }
    return w;
}

/* ---- /config_dump ---- */


static void json_kv(struct keel_buf *out, const struct keel_config_kv *kv, size_t n)
{
    keel_buf_append_str(out, "{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            keel_buf_append_str(out, ",");
        keel_json_str(out, kv[i].key);
        keel_buf_append_str(out, ":");
        keel_json_str(out, kv[i].value);
    }
    keel_buf_append_str(out, "}");
}

void keel_config_dump_json(const struct keel_config *cfg, struct keel_buf *out)
{
    keel_buf_printf(out, "{\"generation\":%llu,\"counts\":{", (unsigned long long)cfg->generation);
    for (int k = 0; k < KEEL_CONFIG_KIND_COUNT; k++)
        keel_buf_printf(out, "%s\"%s\":%zu", k ? "," : "", keel_config_kind_name(k), cfg->count[k]);
    keel_buf_append_str(out, "},\"services\":[");
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct keel_registry_service *s = &cfg->services[i];
        keel_buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        keel_json_str(out, s->name);
        keel_buf_append_str(out, ",\"namespace\":");
        keel_json_str(out, s->namespace);
        keel_buf_append_str(out, ",\"host\":");
        keel_json_str(out, s->fqdn);
        keel_buf_append_str(out, ",\"kind\":");
        keel_json_str(out, s->source->kind_written);
        keel_buf_append_str(out, ",\"ports\":[");
        for (size_t j = 0; j < s->n_ports; j++) {
            const struct keel_registry_port *p = &s->ports[j];
            keel_buf_append_str(out, j ? ",{\"name\":" : "{\"name\":");
            keel_json_str(out, p->name);
            keel_buf_printf(out, ",\"port\":%d,\"targetPort\":", p->port);
            if (p->target_port_name)
                keel_json_str(out, p->target_port_name);
            else
                keel_buf_printf(out, "%d", p->target_port ? p->target_port : p->port);
            keel_buf_append_str(out, ",\"protocol\":");
            keel_json_str(out, keel_proto_name(p->protocol));
            keel_buf_append_str(out, ",\"endpoints\":[");
            for (size_t e = 0; e < p->n_endpoints; e++) {
                keel_buf_append_str(out, e ? ",{\"address\":" : "{\"address\":");
                keel_json_str(out, p->endpoints[e].address);
                keel_buf_printf(out, ",\"port\":%d", p->endpoints[e].port);
                if (p->endpoints[e].workload) {
                    keel_buf_append_str(out, ",\"workload\":");
                    keel_json_str(out, p->endpoints[e].workload->key);
                }
                keel_buf_append_str(out, "}");
            }
            keel_buf_append_str(out, "]}");
        }
        keel_buf_append_str(out, "]}");
    }
    keel_buf_append_str(out, "],\"workloads\":[");
    for (size_t i = 0; i < cfg->n_workloads; i++) {
        const struct keel_registry_workload *w = &cfg->workloads[i];
        keel_buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        keel_json_str(out, w->name);
        keel_buf_append_str(out, ",\"namespace\":");
        keel_json_str(out, w->namespace);
        keel_buf_append_str(out, ",\"address\":");
        keel_json_str(out, w->address);
        keel_buf_append_str(out, ",\"serviceAccount\":");
        keel_json_str(out, w->service_account);
        keel_buf_append_str(out, ",\"labels\":");
        json_kv(out, w->labels, w->n_labels);
        keel_buf_append_str(out, ",\"ports\":");
        json_kv(out, w->ports, w->n_ports);
        keel_buf_append_str(out, ",\"services\":[");
        for (size_t j = 0; j < w->n_services; j++) {
            if (j)
                keel_buf_append_str(out, ",");
            keel_json_str(out, w->services[j]->fqdn);
        }
        keel_buf_append_str(out, "]}");
    }
    keel_buf_append_str(out, "]}");
}
