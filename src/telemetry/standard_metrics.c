/* Istio's standard metrics (telemetry v2, telemetry-api.md §6) with the Telemetry API's
 * overrides (§1-2): the merge runs once per plan; per report the 25 standard label values
 * are derived from the bag once and shared by every metric that uses them. */
#include "core/alloc.h"
#include "telemetry/engine_int.h"
#include "telemetry/response_flags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const tel_std_label_names[TL__COUNT] = {
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
};

static const struct {
    const char *name;
    enum keel_metric_type type;
    bool tcp;
    int cfg_metric; /* enum keel_config_std_metric */
    const char *help;
} std_metrics[TM__COUNT] = {
    [TM_REQUESTS_TOTAL] = { "istio_requests_total", KEEL_METRIC_COUNTER, false, KEEL_CONFIG_REQUEST_COUNT,
                            "Requests (HTTP/gRPC), by reporter." },
    [TM_REQUEST_DURATION] = { "istio_request_duration_milliseconds", KEEL_METRIC_HISTOGRAM, false,
                              KEEL_CONFIG_REQUEST_DURATION, "Request duration in milliseconds." },
    [TM_REQUEST_BYTES] = { "istio_request_bytes", KEEL_METRIC_HISTOGRAM, false, KEEL_CONFIG_REQUEST_SIZE,
                           "Request size in bytes (headers and body)." },
    [TM_RESPONSE_BYTES] = { "istio_response_bytes", KEEL_METRIC_HISTOGRAM, false, KEEL_CONFIG_RESPONSE_SIZE,
                            "Response size in bytes (headers and body)." },
    [TM_TCP_OPENED] = { "istio_tcp_connections_opened_total", KEEL_METRIC_COUNTER, true,
                        KEEL_CONFIG_TCP_OPENED_CONNECTIONS, "TCP connections opened." },
    [TM_TCP_CLOSED] = { "istio_tcp_connections_closed_total", KEEL_METRIC_COUNTER, true,
                        KEEL_CONFIG_TCP_CLOSED_CONNECTIONS, "TCP connections closed." },
    [TM_TCP_SENT] = { "istio_tcp_sent_bytes_total", KEEL_METRIC_COUNTER, true, KEEL_CONFIG_TCP_SENT_BYTES,
                      "Bytes sent to the downstream over TCP." },
    [TM_TCP_RECEIVED] = { "istio_tcp_received_bytes_total", KEEL_METRIC_COUNTER, true,
                          KEEL_CONFIG_TCP_RECEIVED_BYTES, "Bytes received from the downstream over TCP." },
    [TM_GRPC_REQUEST_MESSAGES] = { "istio_request_messages_total", KEEL_METRIC_COUNTER, false,
                                   KEEL_CONFIG_GRPC_REQUEST_MESSAGES, "gRPC messages sent by the client." },
    [TM_GRPC_RESPONSE_MESSAGES] = { "istio_response_messages_total", KEEL_METRIC_COUNTER, false,
                                    KEEL_CONFIG_GRPC_RESPONSE_MESSAGES, "gRPC messages sent by the server." },
};

/* the proxy's default histogram buckets (§6.1), for milliseconds and bytes alike */
static const double std_bounds[] = { 0.5,   1,     5,      10,     25,     50,      100,     250,     500,    1000,
                                     2500,  5000,  10000,  30000,  60000,  300000,  600000,  1800000, 3600000 };

static bool label_in_tcp(int l)
{
    return l != TL_RESPONSE_CODE && l != TL_GRPC_RESPONSE_STATUS;
}

/* ---- plan: Telemetry resources in scope and their merge (§1.1, §2.2) ---- */

#define MAX_TAGS 32
struct tag_ov {
    const char *tag;
    int op;
    const struct keel_expr *expr;
};
struct merge_state {
    bool all_disabled[2];
    int disabled[2][TM__COUNT];
    struct tag_ov tags[2][TM__COUNT][MAX_TAGS];
    size_t n_tags[2][TM__COUNT];
};

static bool has_prometheus(const struct keel_config_provider_ref *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].name && !strcasecmp(p[i].name, "prometheus"))
            return true;
    return false;
}

static bool defaults_have_prometheus(const struct keel_config_mesh *m)
{
    if (m->n_default_metrics_providers == 0)
        return true; /* the standard installation's defaultProviders.metrics: [prometheus] */
    for (size_t i = 0; i < m->n_default_metrics_providers; i++)
        if (!strcasecmp(m->default_metrics_providers[i], "prometheus"))
            return true;
    return false;
}

static void tag_set(struct merge_state *ms, int mode, int k, const struct keel_config_tag_override *tg,
                    struct keel_diag *d)
{
    size_t n = ms->n_tags[mode][k];
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ms->tags[mode][k][i].tag, tg->tag)) {
            ms->tags[mode][k][i].op = tg->operation;
            ms->tags[mode][k][i].expr = tg->value.compiled;
            return;
        }
    if (n == MAX_TAGS) {
        if (d)
            keel_diag_warn(d, tg->pos.file, tg->pos.line, tg->pos.col, "more than %d tagOverrides; \"%s\" ignored",
                           MAX_TAGS, tg->tag);
        return;
    }
    ms->tags[mode][k][n] = (struct tag_ov){ tg->tag, tg->operation, tg->value.compiled };
    ms->n_tags[mode][k] = n + 1;
}

static void apply_override(struct merge_state *ms, const struct keel_config_metric_override *ov, struct keel_diag *d)
{
    int modes[2], nm = 0;
    int mode = ov->has_match ? ov->mode : KEEL_CONFIG_MODE_CLIENT_AND_SERVER;
    if (mode != KEEL_CONFIG_MODE_SERVER)
        modes[nm++] = TEL_CLIENT;
    if (mode != KEEL_CONFIG_MODE_CLIENT)
        modes[nm++] = TEL_SERVER;
    bool all = !ov->has_match || (ov->metric == KEEL_CONFIG_ALL_METRICS && !ov->custom_metric);
    if (all && ov->disabled == 1) {
        for (int i = 0; i < nm; i++)
            ms->all_disabled[modes[i]] = true;
        return;
    }
    /* customMetric names a metric as the stats plugin does, without "istio_"
     * ("requests_total"), or in full; keel defines no other metrics to match */
    int custom = -1;
    if (ov->custom_metric) {
        const char *cm = ov->custom_metric;
        for (int k = 0; k < TM__COUNT && custom < 0; k++)
            if (!strcmp(std_metrics[k].name, cm) || !strcmp(std_metrics[k].name + 6, cm))
                custom = k;
        if (custom < 0) {
            if (d)
                keel_diag_warn(d, ov->pos.file, ov->pos.line, ov->pos.col,
                               "customMetric \"%s\" names no metric of this proxy; override ignored", cm);
            return;
        }
    }
    for (int i = 0; i < nm; i++) {
        int m = modes[i];
        ms->all_disabled[m] = false;
        for (int k = 0; k < TM__COUNT; k++) {
            if (custom >= 0 ? k != custom : (!all && std_metrics[k].cfg_metric != ov->metric))
                continue;
            if (ov->disabled >= 0)
                ms->disabled[m][k] = ov->disabled;
            for (size_t j = 0; j < ov->n_tags; j++)
                tag_set(ms, m, k, &ov->tags[j], d);
        }
    }
}

size_t keel_telemetry_scope(const struct keel_config *cfg, const struct keel_telemetry_workload *self,
                            const struct keel_config_telemetry **out, size_t cap)
{
    const char *ns = self && self->namespace ? self->namespace : "default";
    const char *root = cfg->mesh.root_namespace ? cfg->mesh.root_namespace : "istio-system";
    size_t n = 0;
    const struct keel_config_telemetry *root_t = NULL, *ns_t = NULL;
    for (const struct keel_config_object *o = cfg->first[KEEL_CONFIG_TELEMETRY]; o; o = o->next) {
        const struct keel_config_telemetry *t = (const void *)o;
        const char *tns = o->namespace ? o->namespace : "default";
        if (t->n_selector || t->n_target_refs)
            continue;
        if (!root_t && !strcmp(tns, root))
            root_t = t;
        if (!ns_t && !strcmp(tns, ns))
            ns_t = t;
    }
    if (root_t && n < cap)
        out[n++] = root_t;
    if (ns_t && ns_t != root_t && n < cap)
        out[n++] = ns_t;
    for (const struct keel_config_object *o = cfg->first[KEEL_CONFIG_TELEMETRY]; o; o = o->next) {
        const struct keel_config_telemetry *t = (const void *)o;
        const char *tns = o->namespace ? o->namespace : "default";
        if (strcmp(tns, ns) || n >= cap)
            continue;
        if (t->n_selector && tel_selector_matches(t->selector, t->n_selector, self))
            out[n++] = t;
        else if (t->n_target_refs && self && self->gateway)
            for (size_t i = 0; i < t->n_target_refs; i++)
                if (t->target_refs[i].kind && !strcmp(t->target_refs[i].kind, "Gateway") &&
                    t->target_refs[i].name && !strcmp(t->target_refs[i].name, self->gateway)) {
                    out[n++] = t;
                    break;
                }
    }
    return n;
}

static int cmp_tag(const void *a, const void *b)
{
    return strcmp(((const struct tag_ov *)a)->tag, ((const struct tag_ov *)b)->tag);
}

static int std_label_id(const char *name)
{
    for (int i = 0; i < TL__COUNT; i++)
        if (!strcmp(tel_std_label_names[i], name))
            return i;
    return -1;
}

static void build_metric(struct keel_telemetry *t, struct tel_std_metric_plan *mp, int k, bool drop,
                         struct tag_ov *tags, size_t n_tags, struct keel_diag *d)
{
    mp->drop = drop;
    if (drop)
        return;
    struct tel_slot slots[TL__COUNT + MAX_TAGS];
    size_t n = 0;
    for (int l = 0; l < TL__COUNT; l++)
        if (!std_metrics[k].tcp || label_in_tcp(l))
            slots[n++] = (struct tel_slot){ l, NULL };
    qsort(tags, n_tags, sizeof(*tags), cmp_tag);
    bool is_default = true;
    for (size_t i = 0; i < n_tags; i++) {
        int id = std_label_id(tags[i].tag);
        size_t at = n;
        for (size_t j = 0; j < n && id >= 0; j++)
            if (slots[j].builtin == id)
                at = j;
        if (tags[i].op == KEEL_CONFIG_TAG_REMOVE) {
            if (at < n) { /* only standard tags can be removed */
                memmove(&slots[at], &slots[at + 1], (n - at - 1) * sizeof(*slots));
                n--;
                is_default = false;
            }
            continue;
        }
        if (!tags[i].expr)
            continue; /* failed to compile: ignored (§2.4) */
        is_default = false;
        if (at < n) {
            slots[at].expr = tags[i].expr; /* in place, keeps the label's position */
        } else {
            slots[n++] = (struct tel_slot){ -1, tags[i].expr };
            slots[n - 1].builtin = -1 - (int)i; /* remember the tag name: -1 - index */
        }
    }
    const char *names[TL__COUNT + MAX_TAGS];
    for (size_t j = 0; j < n; j++) {
        int b = slots[j].builtin;
        names[j] = b >= 0 ? tel_std_label_names[b] : tags[-1 - b].tag;
        if (b < 0)
            slots[j].builtin = -1;
        else if (slots[j].expr)
            slots[j].builtin = -1; /* upserted standard tag: evaluated, not derived */
    }
    char err[256];
    bool hist = std_metrics[k].type == KEEL_METRIC_HISTOGRAM;
    mp->fam = keel_metrics_family(t->reg, std_metrics[k].name, std_metrics[k].type, std_metrics[k].help, names, n,
                                  hist ? std_bounds : NULL, hist ? sizeof(std_bounds) / sizeof(std_bounds[0]) : 0,
                                  err, sizeof(err));
    if (!mp->fam) {
        if (d)
            keel_diag_warn(d, "telemetry", 0, 0, "%s: not recorded: %s", std_metrics[k].name, err);
        mp->drop = true;
        return;
    }
    mp->slots = tel_palloc(t, n * sizeof(*mp->slots));
    memcpy(mp->slots, slots, n * sizeof(*slots));
    mp->n = n;
    mp->is_default = is_default;
}

void tel_std_plan(struct keel_telemetry *t, const struct keel_telemetry_workload *self, struct keel_diag *d)
{
    const struct keel_config_telemetry *scope[64];
    size_t n_scope = keel_telemetry_scope(t->cfg, self, scope, 64);
    for (size_t i = 0; i < n_scope; i++) /* later (more specific) resources win */
        for (size_t j = 0; j < scope[i]->n_metrics; j++)
            if (scope[i]->metrics[j].reporting_interval_ms > 0)
                t->reporting_interval_ms = scope[i]->metrics[j].reporting_interval_ms;
    /* provider set: an entry with providers replaces it; the final set decides */
    bool cur = defaults_have_prometheus(&t->cfg->mesh), final = cur;
    for (size_t i = 0; i < n_scope; i++)
        for (size_t j = 0; j < scope[i]->n_metrics; j++)
            if (scope[i]->metrics[j].n_providers)
                final = has_prometheus(scope[i]->metrics[j].providers, scope[i]->metrics[j].n_providers);
    if (!final)
        return; /* prometheus not in scope: no standard metrics */
    struct merge_state *ms = keel_calloc(1, sizeof(*ms));
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < TM__COUNT; k++)
            ms->disabled[m][k] = -1;
    for (size_t i = 0; i < n_scope; i++)
        for (size_t j = 0; j < scope[i]->n_metrics; j++) {
            const struct keel_config_telemetry_metrics *e = &scope[i]->metrics[j];
            if (e->n_providers)
                cur = has_prometheus(e->providers, e->n_providers);
            if (!cur)
                continue;
            for (size_t o = 0; o < e->n_overrides; o++)
                apply_override(ms, &e->overrides[o], d);
        }
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < TM__COUNT; k++) {
            bool drop = ms->all_disabled[m] || ms->disabled[m][k] == 1;
            build_metric(t, &t->std.m[m][k], k, drop, ms->tags[m][k], ms->n_tags[m][k], d);
            if (!t->std.m[m][k].drop)
                t->std_enabled = true;
        }
    free(ms);
}

int tel_std_family_active(const struct keel_telemetry *t, const char *name)
{
    for (int k = 0; k < TM__COUNT; k++)
        if (!strcmp(std_metrics[k].name, name) && (!t->std.m[TEL_CLIENT][k].drop || !t->std.m[TEL_SERVER][k].drop) &&
            (t->std.m[TEL_CLIENT][k].fam || t->std.m[TEL_SERVER][k].fam))
            return k;
    return -1;
}

/* ---- report: derive the standard labels from the bag (§6.3) ---- */

static bool bag_str(const struct keel_attr_bag *bag, int id, struct keel_str *out)
{
    const struct keel_value *v = keel_attr_bag_get(bag, id);
    if (!v)
        return false;
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_URI:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_BYTES:
        *out = v->u.s;
        return true;
    default:
        return false;
    }
}

static bool bag_label(const struct keel_attr_bag *bag, int id, const char *key, size_t klen, struct keel_str *out)
{
    const struct keel_value *v = keel_attr_bag_get(bag, id);
    if (!v || v->type != KEEL_VALUE_STRING_MAP)
        return false;
    const struct keel_str *s = keel_value_map_get(v, key, klen);
    if (!s)
        return false;
    *out = *s;
    return true;
}
#define LABEL(bag, id, lit, out) bag_label((bag), (id), (lit), sizeof(lit) - 1, (out))

/* "spiffe://td/ns/<ns>/sa/<sa>" -> <ns> */
static bool san_namespace(struct keel_str san, struct keel_str *out)
{
    for (size_t i = 0; i + 4 <= san.len; i++)
        if (!memcmp(san.p + i, "/ns/", 4)) {
            size_t s = i + 4, e = s;
            while (e < san.len && san.p[e] != '/')
                e++;
            if (e == s)
                return false;
            *out = (struct keel_str){ san.p + s, e - s };
            return true;
        }
    return false;
}

struct side_ids {
    int labels, workload_name, workload_ns, ns, principal, metadata;
};
static const struct side_ids SRC = { KEEL_ATTR_SOURCE_LABELS, KEEL_ATTR_SOURCE_WORKLOAD_NAME,
                                     KEEL_ATTR_SOURCE_WORKLOAD_NAMESPACE, KEEL_ATTR_SOURCE_NAMESPACE,
                                     KEEL_ATTR_SOURCE_PRINCIPAL, KEEL_ATTR_SOURCE_METADATA };
static const struct side_ids DST = { KEEL_ATTR_DESTINATION_LABELS, KEEL_ATTR_DESTINATION_WORKLOAD_NAME,
                                     KEEL_ATTR_DESTINATION_WORKLOAD_NAMESPACE, KEEL_ATTR_DESTINATION_NAMESPACE,
                                     KEEL_ATTR_DESTINATION_PRINCIPAL, KEEL_ATTR_DESTINATION_METADATA };

#define K(lit) ((struct keel_str){ (lit), sizeof(lit) - 1 })

/* The workload labels the standard labels read, found in one pass over the map (the
 * first pair of each key wins, as keel_value_map_get); the keys have distinct lengths. */
enum { WL_APP, WL_VERSION, WL_K8S_NAME, WL_K8S_VERSION, WL_CANON_NAME, WL_CANON_REV, WL__COUNT };
struct side_labels {
    unsigned found; /* 1 << WL_* */
    struct keel_str v[WL__COUNT];
};

static void side_labels(const struct keel_attr_bag *bag, int id, struct side_labels *out)
{
    out->found = 0;
    const struct keel_value *m = keel_attr_bag_get(bag, id);
    if (!m || m->type != KEEL_VALUE_STRING_MAP)
        return;
    for (size_t i = 0; i < m->u.map.n; i++) {
        const struct keel_str_pair *kv = &m->u.map.kv[i];
        int w;
        const char *lit;
        switch (kv->k.len) {
        case 3: w = WL_APP, lit = "app"; break;
        case 7: w = WL_VERSION, lit = "version"; break;
        case 22: w = WL_K8S_NAME, lit = "app.kubernetes.io/name"; break;
        case 25: w = WL_K8S_VERSION, lit = "app.kubernetes.io/version"; break;
        case 31: w = WL_CANON_NAME, lit = "service.istio.io/canonical-name"; break;
        case 35: w = WL_CANON_REV, lit = "service.istio.io/canonical-revision"; break;
        default: continue;
        }
        if (!(out->found & (1u << w)) && keel_bytes_eq(kv->k.p, lit, kv->k.len)) {
            out->found |= 1u << w;
            out->v[w] = kv->v;
        }
    }
}

static bool side_get(const struct side_labels *l, int w, struct keel_str *out)
{
    if (!(l->found & (1u << w)))
        return false;
    *out = l->v[w];
    return true;
}

static struct keel_str canonical_service(const struct keel_attr_bag *bag, const struct side_ids *s,
                                         const struct side_labels *l)
{
    struct keel_str v;
    if (side_get(l, WL_CANON_NAME, &v) || side_get(l, WL_K8S_NAME, &v) || side_get(l, WL_APP, &v) ||
        bag_str(bag, s->workload_name, &v))
        return v;
    return K("unknown");
}

static struct keel_str canonical_revision(const struct side_labels *l)
{
    struct keel_str v;
    if (side_get(l, WL_CANON_REV, &v) || side_get(l, WL_K8S_VERSION, &v) || side_get(l, WL_VERSION, &v))
        return v;
    return K("latest");
}

static struct keel_str side_or_unknown(const struct side_labels *l, int w)
{
    struct keel_str v;
    return side_get(l, w, &v) ? v : K("unknown");
}

static struct keel_str workload_namespace(const struct keel_attr_bag *bag, const struct side_ids *s)
{
    struct keel_str v, ns;
    if (bag_str(bag, s->principal, &v) && san_namespace(v, &ns))
        return ns;
    if (bag_str(bag, s->workload_ns, &v) || bag_str(bag, s->ns, &v))
        return v;
    return K("unknown");
}

static struct keel_str or_unknown(const struct keel_attr_bag *bag, int id)
{
    struct keel_str v;
    return bag_str(bag, id, &v) ? v : K("unknown");
}

static struct keel_str label_or_unknown(const struct keel_attr_bag *bag, int id, const char *k, size_t klen)
{
    struct keel_str v;
    return bag_label(bag, id, k, klen, &v) ? v : K("unknown");
}

/* The standard labels are slices that stay put for the whole report (the bag's, string
 * literals, and the shard's two text fields below), so the tuple is built once, in place,
 * with no scratch offsets to resolve. */
static struct keel_str S(struct keel_str s)
{
    if (s.p == NULL)
        s.p = "";
    return s;
}

static struct keel_str shard_int(struct keel_telemetry_shard *sh, int64_t v)
{
    char *tmp = sh->std_code;
    size_t cap = sizeof(sh->std_code), n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[cap - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[cap - 1 - n++] = '-';
    return (struct keel_str){ tmp + cap - n, n };
}

static bool is_grpc_content_type(struct keel_str ct)
{
    static const char g[] = "application/grpc";
    size_t n = sizeof(g) - 1;
    return ct.len >= n && !strncasecmp(ct.p, g, n) && (ct.len == n || ct.p[n] == '+' || ct.p[n] == ';');
}

/* The attributes read here and in run_http / tel_std_run are all a lean bag holds (the
 * proxy's report.c leaves the rest out when nothing else reads the bag): reading another
 * one means adding it there too. */
static void derive_labels(struct keel_telemetry_shard *sh, const struct keel_attr_bag *bag, bool outbound, bool tcp,
                          struct keel_str *lv)
{
    struct keel_str v, v2;
    struct keel_str rk = { 0 };
    bool waypoint = bag_str(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, &rk) && rk.len == 8 && !memcmp(rk.p, "waypoint", 8);
    lv[TL_REPORTER] = S(outbound ? K("source") : waypoint ? K("waypoint") : K("destination"));
    lv[TL_SOURCE_WORKLOAD] = S(or_unknown(bag, KEEL_ATTR_SOURCE_WORKLOAD_NAME));
    struct side_labels sl, dl;
    side_labels(bag, KEEL_ATTR_SOURCE_LABELS, &sl);
    side_labels(bag, KEEL_ATTR_DESTINATION_LABELS, &dl);
    lv[TL_SOURCE_CANONICAL_SERVICE] = S(canonical_service(bag, &SRC, &sl));
    lv[TL_SOURCE_CANONICAL_REVISION] = S(canonical_revision(&sl));
    lv[TL_SOURCE_WORKLOAD_NAMESPACE] = S(workload_namespace(bag, &SRC));
    lv[TL_SOURCE_PRINCIPAL] = S(or_unknown(bag, KEEL_ATTR_SOURCE_PRINCIPAL));
    lv[TL_SOURCE_APP] = S(side_or_unknown(&sl, WL_APP));
    lv[TL_SOURCE_VERSION] = S(side_or_unknown(&sl, WL_VERSION));
    lv[TL_SOURCE_CLUSTER] = S(label_or_unknown(bag, KEEL_ATTR_SOURCE_METADATA, "CLUSTER_ID", 10));
    lv[TL_DESTINATION_WORKLOAD] = S(or_unknown(bag, KEEL_ATTR_DESTINATION_WORKLOAD_NAME));
    lv[TL_DESTINATION_WORKLOAD_NAMESPACE] = S(workload_namespace(bag, &DST));
    lv[TL_DESTINATION_PRINCIPAL] = S(or_unknown(bag, KEEL_ATTR_DESTINATION_PRINCIPAL));
    lv[TL_DESTINATION_APP] = S(side_or_unknown(&dl, WL_APP));
    lv[TL_DESTINATION_VERSION] = S(side_or_unknown(&dl, WL_VERSION));
    struct keel_str dcanon = canonical_service(bag, &DST, &dl);
    lv[TL_DESTINATION_CANONICAL_SERVICE] = S(dcanon);
    lv[TL_DESTINATION_CANONICAL_REVISION] = S(canonical_revision(&dl));
    /* destination_service: cluster metadata host; else Host (outbound only); else the
     * canonical name (inbound) */
    bool has_host = bag_str(bag, KEEL_ATTR_DESTINATION_SERVICE_HOST, &v) && v.len;
    struct keel_str req_host = { 0 };
    bool has_req_host = outbound && !tcp && bag_str(bag, KEEL_ATTR_REQUEST_HOST, &req_host) && req_host.len;
    if (has_host)
        lv[TL_DESTINATION_SERVICE] = S(v);
    else if (has_req_host)
        lv[TL_DESTINATION_SERVICE] = S(req_host);
    else
        lv[TL_DESTINATION_SERVICE] = S(outbound ? K("unknown") : dcanon);
    if (bag_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAME, &v2) && v2.len) {
        lv[TL_DESTINATION_SERVICE_NAME] = S(v2);
    } else if (has_host) {
        size_t e = 0;
        while (e < v.len && v.p[e] != '.' && v.p[e] != ':')
            e++;
        lv[TL_DESTINATION_SERVICE_NAME] = S((struct keel_str){ v.p, e });
    } else if (has_req_host) {
        lv[TL_DESTINATION_SERVICE_NAME] = S(req_host);
    } else {
        lv[TL_DESTINATION_SERVICE_NAME] = S(outbound ? K("unknown") : dcanon);
    }
    if (bag_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAMESPACE, &v) && v.len)
        lv[TL_DESTINATION_SERVICE_NAMESPACE] = S(v);
    else
        lv[TL_DESTINATION_SERVICE_NAMESPACE] = lv[TL_DESTINATION_WORKLOAD_NAMESPACE];
    lv[TL_DESTINATION_CLUSTER] = S(label_or_unknown(bag, KEEL_ATTR_DESTINATION_METADATA, "CLUSTER_ID", 10));
    /* protocol, status */
    if (tcp) {
        lv[TL_REQUEST_PROTOCOL] = S(K("tcp"));
        lv[TL_RESPONSE_CODE] = lv[TL_GRPC_RESPONSE_STATUS] = S(K("")); /* not TCP labels */
    } else {
        bool grpc = (LABEL(bag, KEEL_ATTR_REQUEST_HEADERS, "content-type", &v) && is_grpc_content_type(v)) ||
                    (bag_str(bag, KEEL_ATTR_CONTEXT_PROTOCOL, &v) && v.len >= 4 && !memcmp(v.p, "grpc", 4));
        lv[TL_REQUEST_PROTOCOL] = S(grpc ? K("grpc") : K("http"));
        const struct keel_value *rc = keel_attr_bag_get(bag, KEEL_ATTR_RESPONSE_CODE);
        lv[TL_RESPONSE_CODE] = shard_int(sh, rc && rc->type == KEEL_VALUE_INT64 ? rc->u.i : 0);
        lv[TL_GRPC_RESPONSE_STATUS] = bag_str(bag, KEEL_ATTR_RESPONSE_GRPC_STATUS, &v) ? S(v) : S(K(""));
    }
    const struct keel_value *rf = keel_attr_bag_get(bag, KEEL_ATTR_RESPONSE_FLAGS);
    if (rf && rf->type == KEEL_VALUE_INT64 && rf->u.i) {
        size_t n = keel_rf_format((uint32_t)rf->u.i, 0, sh->std_flags, sizeof(sh->std_flags));
        lv[TL_RESPONSE_FLAGS] = (struct keel_str){ sh->std_flags, n };
    } else {
        lv[TL_RESPONSE_FLAGS] = S(K("-"));
    }
    if (outbound) {
        lv[TL_CONNECTION_SECURITY_POLICY] = S(K("unknown"));
    } else {
        const struct keel_value *mtls = keel_attr_bag_get(bag, KEEL_ATTR_CONNECTION_MTLS);
        bool m = mtls && mtls->type == KEEL_VALUE_BOOL && mtls->u.b;
        if (!m && bag_str(bag, KEEL_ATTR_CONNECTION_URI_SAN_PEER, &v) && v.len &&
            bag_str(bag, KEEL_ATTR_CONNECTION_URI_SAN_LOCAL, &v2) && v2.len)
            m = true;
        lv[TL_CONNECTION_SECURITY_POLICY] = S(m ? K("mutual_tls") : K("none"));
    }
}

static bool bag_int(const struct keel_attr_bag *bag, int id, int64_t *out)
{
    const struct keel_value *v = keel_attr_bag_get(bag, id);
    if (!v || (v->type != KEEL_VALUE_INT64 && v->type != KEEL_VALUE_DURATION))
        return false;
    *out = v->u.i;
    return true;
}

/* Record one metric whose labels are not exactly the standard HTTP list (TCP metrics,
 * Telemetry tagOverrides): its label tuple from lv (+ evaluated tag expressions). */
static void record(const struct tel_std_metric_plan *mp, struct keel_telemetry_shard *sh,
                   const struct keel_attr_bag *bag, const struct keel_str *lv, double v)
{
    struct tel_lv tmp[TL__COUNT + MAX_TAGS];
    for (size_t i = 0; i < mp->n; i++)
        if (mp->slots[i].builtin < 0 && tel_eval_text(sh, mp->slots[i].expr, bag, &tmp[i]) < 0)
            tmp[i] = (struct tel_lv){ "unknown", 7, 0 };
    /* scratch has stopped growing: the expression values can be resolved */
    struct keel_str vals[TL__COUNT + MAX_TAGS];
    for (size_t i = 0; i < mp->n; i++)
        vals[i] = mp->slots[i].builtin >= 0 ? lv[mp->slots[i].builtin] : tel_lv_str(sh, tmp[i]);
    keel_metrics_update_h(sh->ms, mp->fam, vals, keel_metrics_hash(vals, mp->n), v);
}

/* One HTTP metric with the standard labels: through the shard's tuple cache. */
static void record_std(const struct tel_std_metric_plan *mp, int k, struct keel_telemetry_shard *sh,
                       struct tel_std_entry *e, const struct keel_str *vals, uint64_t h, double v)
{
    if (e->fam[k] != mp->fam || !e->s[k]) {
        e->fam[k] = mp->fam;
        e->s[k] = keel_metrics_series_find(sh->ms, mp->fam, vals, h); /* NULL: over the limit */
        if (!e->s[k])
            return;
        if (!e->vals)
            e->vals = keel_metrics_series_values(e->s[k]);
    }
    keel_metrics_series_update(sh->ms, mp->fam, e->s[k], v);
}

static void run_http(const struct tel_std_metric_plan *mp, struct keel_telemetry_shard *sh,
                     const struct keel_attr_bag *bag, const struct keel_str *vals)
{
    double val[TEL_STD_HTTP];
    bool want[TEL_STD_HTTP], any_std = false;
    int64_t n;
    want[TM_REQUESTS_TOTAL] = !mp[TM_REQUESTS_TOTAL].drop;
    val[TM_REQUESTS_TOTAL] = 1;
    want[TM_REQUEST_DURATION] = !mp[TM_REQUEST_DURATION].drop && bag_int(bag, KEEL_ATTR_RESPONSE_DURATION, &n);
    val[TM_REQUEST_DURATION] = want[TM_REQUEST_DURATION] ? (double)(n / 1000000) : 0;
    want[TM_REQUEST_BYTES] = !mp[TM_REQUEST_BYTES].drop;
    if (!bag_int(bag, KEEL_ATTR_REQUEST_TOTAL_SIZE, &n) && !bag_int(bag, KEEL_ATTR_REQUEST_SIZE, &n))
        n = 0;
    val[TM_REQUEST_BYTES] = (double)n;
    want[TM_RESPONSE_BYTES] = !mp[TM_RESPONSE_BYTES].drop;
    if (!bag_int(bag, KEEL_ATTR_RESPONSE_TOTAL_SIZE, &n) && !bag_int(bag, KEEL_ATTR_RESPONSE_SIZE, &n))
        n = 0;
    val[TM_RESPONSE_BYTES] = (double)n;
    /* gRPC streams: messages each way (Istio's stats plugin counts them per stream) */
    if (!mp[TM_GRPC_REQUEST_MESSAGES].drop && bag_int(bag, KEEL_ATTR_REQUEST_GRPC_MESSAGES, &n))
        record(&mp[TM_GRPC_REQUEST_MESSAGES], sh, bag, vals, (double)n);
    if (!mp[TM_GRPC_RESPONSE_MESSAGES].drop && bag_int(bag, KEEL_ATTR_RESPONSE_GRPC_MESSAGES, &n))
        record(&mp[TM_GRPC_RESPONSE_MESSAGES], sh, bag, vals, (double)n);
    for (int k = 0; k < TEL_STD_HTTP; k++)
        any_std |= want[k] && mp[k].is_default;
    /* the shared standard tuple: hashed, and its cache entry found, once */
    struct tel_std_entry *e = NULL;
    uint64_t h = 0;
    if (any_std) {
        e = sh->std_last;
        if (e != NULL && e->vals != NULL && keel_metrics_values_eq(e->vals, vals, TL__COUNT)) {
            /* the previous report's tuple again (a sidecar's traffic is mostly a few
             * series): one compare and no hash; e->hash is these values' hash */
            h = e->hash;
        } else {
            h = keel_metrics_hash(vals, TL__COUNT);
            e = &sh->std_cache[h & (TEL_STD_CACHE - 1)];
            if (e->hash != h || !e->vals || !keel_metrics_values_eq(e->vals, vals, TL__COUNT)) {
                memset(e, 0, sizeof(*e));
                e->hash = h;
            }
            sh->std_last = e;
        }
    }
    /* in metric order, as the series were always created */
    for (int k = 0; k < TEL_STD_HTTP; k++) {
        if (!want[k])
            continue;
        if (mp[k].is_default)
            record_std(&mp[k], k, sh, e, vals, h, val[k]);
        else
            record(&mp[k], sh, bag, vals, val[k]);
    }
}

void tel_std_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, const struct keel_attr_bag *bag)
{
    struct keel_str s;
    bool outbound = bag_str(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, &s) && s.len == 8 && !memcmp(s.p, "outbound", 8);
    bool tcp = bag_str(bag, KEEL_ATTR_CONTEXT_PROTOCOL, &s) && !(s.len >= 4 && (!memcmp(s.p, "http", 4) ||
                                                                              !memcmp(s.p, "grpc", 4)));
    const struct tel_std_metric_plan *mp = t->std.m[outbound ? TEL_CLIENT : TEL_SERVER];
    struct keel_str lv[TL__COUNT];
    derive_labels(sh, bag, outbound, tcp, lv);
    if (!tcp) {
        run_http(mp, sh, bag, lv);
        return;
    }
    int64_t n;
    struct keel_str ev = { 0 };
    bag_str(bag, KEEL_ATTR_CONNECTION_EVENT, &ev);
    if (!mp[TM_TCP_OPENED].drop && ev.len == 4 && !memcmp(ev.p, "open", 4))
        record(&mp[TM_TCP_OPENED], sh, bag, lv, 1);
    if (!mp[TM_TCP_SENT].drop && bag_int(bag, KEEL_ATTR_CONNECTION_SENT_BYTES, &n) && n >= 0)
        record(&mp[TM_TCP_SENT], sh, bag, lv, (double)n);
    if (!mp[TM_TCP_RECEIVED].drop && bag_int(bag, KEEL_ATTR_CONNECTION_RECEIVED_BYTES, &n) && n >= 0)
        record(&mp[TM_TCP_RECEIVED], sh, bag, lv, (double)n);
    if (!mp[TM_TCP_CLOSED].drop && ev.len == 5 && !memcmp(ev.p, "close", 5))
        record(&mp[TM_TCP_CLOSED], sh, bag, lv, 1);
}
