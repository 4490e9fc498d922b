/* The model step: duplicate names, Mixer reference resolution (mixer-config.md §4.2),
 * cross-resource checks (prometheus instance_name, label_names, value types), bucket
 * bounds. Runs once every document is bound; its results are pointers inside the
 * generation, so the hot path never looks a name up. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#if defined(__has_include)
#if __has_include("expr/expr.h")
#define KEEL_CONFIG_HAVE_EXPR 1
#include "expr/expr.h"
#endif
#endif

void keel_config_add_object(struct keel_config_ctx *c, struct keel_config_object *o)
{
    struct keel_config_impl *im = c->cfg->impl;
    char *id = keel_config_arena_printf(c->a, "%s/%s/%s", o->kind_written, o->namespace, o->name);
    struct keel_config_object *prev = keel_config_index_put(&im->by_identity, id, o);
    if (prev != NULL) {
        keel_config_err_at(c, o->name_pos.line ? &o->name_pos : &o->pos,
                           "duplicate %s \"%s\" in namespace \"%s\" (first defined at %s:%d:%d)", o->kind_written,
                           o->name, o->namespace, prev->name_pos.file, prev->name_pos.line, prev->name_pos.col);
        return;
    }
    keel_config_index_put(&im->by_fqn, o->fqn, o);
    if (im->n_objs == im->cap_objs) {
        im->cap_objs = im->cap_objs ? 2 * im->cap_objs : 64;
        im->objs = keel_realloc(im->objs, im->cap_objs * sizeof(*im->objs));
    }
    im->objs[im->n_objs++] = o;
    c->cfg->count[o->kind]++;
}

#define IGNORED keel_config_ignored

/* §4.2: x -> x.K.ns; x.y -> x.y.ns then x.K.y; x.y.z as is. */
static struct keel_config_object *resolve_ref(struct keel_config_ctx *c, const char *ref, const char *K,
                                              const char *ns, char *tried, size_t tried_len, bool *ignored)
{
    struct keel_config_index *ix = &c->cfg->impl->by_fqn;
    int dots = 0;
    for (const char *p = ref; *p; p++)
        dots += *p == '.';
    char a[512], b[512];
    a[0] = b[0] = '\0';
    const char *dot = strchr(ref, '.');
    if (dots == 0) {
        snprintf(a, sizeof(a), "%s.%s.%s", ref, K, ns);
    } else if (dots == 1) {
        snprintf(a, sizeof(a), "%s.%s", ref, ns);
        snprintf(b, sizeof(b), "%.*s.%s.%s", (int)(dot - ref), ref, K, dot + 1);
    } else {
        snprintf(a, sizeof(a), "%s", ref);
    }
    if (b[0])
        snprintf(tried, tried_len, "%s or %s", a, b);
    else
        snprintf(tried, tried_len, "%s", a);
    *ignored = false;
    const char *cands[2] = { a, b };
    for (int i = 0; i < 2; i++) {
        if (!cands[i][0])
            continue;
        void *v = keel_config_index_get(ix, cands[i], strlen(cands[i]));
        if (v == IGNORED) {
            *ignored = true;
            return NULL;
        }
        if (v)
            return v;
    }
    return NULL;
}

static const char *template_of(const struct keel_config_object *o)
{
    return o->kind == KEEL_CONFIG_METRIC ? "metric" : o->kind == KEEL_CONFIG_LOGENTRY ? "logentry" : o->kind_written;
}

static void model_rule(struct keel_config_ctx *c, struct keel_config_rule *r)
{
    const char *ns = r->obj.namespace;
    r->in_default_namespace = !strcmp(ns, c->cfg->mesh.config_default_namespace);
    char tried[1100];
    for (size_t i = 0; i < r->n_actions; i++) {
        struct keel_config_action *a = &r->actions[i];
        bool ignored;
        struct keel_config_object *h = resolve_ref(c, a->handler.s, "handler", ns, tried, sizeof(tried), &ignored);
        if (h == NULL) {
            if (ignored)
                keel_config_warn_at(c, &a->handler.pos, "handler \"%s\" uses an unsupported adapter; action ignored",
                                    a->handler.s);
            else /* Mixer drops the action and applies the rest (mixer-config.md §4.3) */
                keel_config_warn_at(c, &a->handler.pos,
                                    "handler \"%s\" not found (looked for %s); action dropped", a->handler.s,
                                    tried);
        } else if (h->kind != KEEL_CONFIG_PROMETHEUS && h->kind != KEEL_CONFIG_STDIO) {
            keel_config_err_at(c, &a->handler.pos, "\"%s\" is a %s, not a handler", a->handler.s, h->kind_written);
            h = NULL;
        }
        a->handler_obj = h;
        a->instance_objs = keel_config_arena_alloc(c->a, (a->n_instances ? a->n_instances : 1) * sizeof(void *));
        for (size_t j = 0; j < a->n_instances; j++) {
            struct keel_config_name *in = &a->instances[j];
            struct keel_config_object *o = resolve_ref(c, in->s, "instance", ns, tried, sizeof(tried), &ignored);
            a->instance_objs[j] = NULL;
            if (o == NULL) {
                if (ignored)
                    keel_config_warn_at(c, &in->pos, "instance \"%s\" uses an unsupported template; ignored", in->s);
                else
                    keel_config_warn_at(c, &in->pos, "instance \"%s\" not found (looked for %s); dropped", in->s,
                                        tried);
                continue;
            }
            if (o->kind != KEEL_CONFIG_METRIC && o->kind != KEEL_CONFIG_LOGENTRY) {
                keel_config_err_at(c, &in->pos, "\"%s\" is a %s, not an instance", in->s, o->kind_written);
                continue;
            }
            for (size_t k = 0; k < j; k++)
                if (a->instance_objs[k] == o)
                    keel_config_warn_at(c, &in->pos, "instance \"%s\" listed twice in one action", in->s);
            if (h && h->kind == KEEL_CONFIG_PROMETHEUS && o->kind != KEEL_CONFIG_METRIC) {
                keel_config_err_at(c, &in->pos,
                                   "instance \"%s\" is of template \"%s\" which is not supported by handler \"%s\"",
                                   o->fqn, template_of(o), h->fqn);
                continue;
            }
            a->instance_objs[j] = o;
        }
    }
}

static bool numeric_value_type(int t)
{
#ifdef KEEL_CONFIG_HAVE_EXPR
    return t < 0 || t == KEEL_VALUE_INT64 || t == KEEL_VALUE_DOUBLE || t == KEEL_VALUE_DURATION ||
           t == KEEL_VALUE_STRING;
#else
    (void)t;
    return true;
#endif
}

static const char *type_name(int t)
{
#ifdef KEEL_CONFIG_HAVE_EXPR
    return t < 0 ? "unknown" : keel_value_type_name((enum keel_value_type)t);
#else
    (void)t;
    return "unknown";
#endif
}

static const double default_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };

static void model_prom_metric(struct keel_config_ctx *c, struct keel_config_prometheus *p,
                              struct keel_config_prom_metric *m, struct keel_config_index *names)
{
    static const char *const kind_names[] = { "UNSPECIFIED", "GAUGE", "COUNTER", "DISTRIBUTION" };
    /* the Prometheus name must be unique across handlers */
    const char *nm = m->name && m->name[0] ? m->name : m->instance_name.s;
    char *full = keel_config_arena_printf(c->a, "%s_%s", m->namespace && m->namespace[0] ? m->namespace : "istio", nm);
    struct keel_config_prom_metric *prev = keel_config_index_put(names, full, m);
    if (prev)
        keel_config_err_at(c, &m->pos, "Prometheus metric \"%s\" defined twice (first at %s:%d:%d)", full,
                           prev->pos.file, prev->pos.line, prev->pos.col);
    if (m->kind == KEEL_CONFIG_PROM_UNSPECIFIED)
        keel_config_err_at(c, &m->pos, "metric \"%s\": kind must be GAUGE, COUNTER or DISTRIBUTION", nm);
    /* instance_name: a fully-qualified metric instance (short forms resolved as in rules) */
    char tried[1100];
    bool ignored;
    struct keel_config_object *o = keel_config_index_get(&c->cfg->impl->by_fqn, m->instance_name.s,
                                                         strlen(m->instance_name.s));
    if (o == NULL || (void *)o == IGNORED)
        o = resolve_ref(c, m->instance_name.s, "instance", p->obj.namespace, tried, sizeof(tried), &ignored);
    if (o == NULL) {
        keel_config_err_at(c, &m->instance_name.pos, "instance_name \"%s\": no such metric instance",
                           m->instance_name.s);
        return;
    }
    if (o->kind != KEEL_CONFIG_METRIC) {
        keel_config_err_at(c, &m->instance_name.pos, "instance_name \"%s\" is not a metric instance (it is a %s)",
                           m->instance_name.s, o->kind_written);
        return;
    }
    const struct keel_config_metric *mi = (const struct keel_config_metric *)o;
    m->instance = mi;
    for (size_t i = 0; i < m->n_label_names; i++) {
        bool found = false;
        for (size_t j = 0; j < mi->n_dimensions && !found; j++)
            found = !strcmp(mi->dimensions[j].name, m->label_names[i].s);
        if (!found)
            keel_config_err_at(c, &m->label_names[i].pos, "label \"%s\" is not a dimension of metric instance \"%s\"",
                               m->label_names[i].s, o->fqn);
    }
    for (size_t j = 0; j < mi->n_dimensions; j++) {
        bool found = false;
        for (size_t i = 0; i < m->n_label_names && !found; i++)
            found = !strcmp(mi->dimensions[j].name, m->label_names[i].s);
        if (!found)
            keel_config_warn_at(c, &m->instance_name.pos,
                                "dimension \"%s\" of \"%s\" is not in label_names; its samples will be rejected",
                                mi->dimensions[j].name, o->fqn);
    }
    if (mi->value.src == NULL || mi->value.src[0] == '\0') {
        keel_config_err_at(c, &m->instance_name.pos, "metric instance \"%s\" has no value", o->fqn);
    } else if (m->kind != KEEL_CONFIG_PROM_UNSPECIFIED && !numeric_value_type(mi->value.type)) {
        keel_config_err_at(c, &mi->value.pos, "%s metric \"%s\" needs a numeric value, but \"%s\" is %s",
                           kind_names[m->kind], nm, mi->value.src, type_name(mi->value.type));
    }
    /* buckets */
    int defs = (m->explicit_bounds != NULL) + (m->linear.pos.line != 0) + (m->exponential.pos.line != 0);
    if (defs > 1)
        keel_config_err_at(c, &m->pos, "metric \"%s\": give only one of explicit, linear or exponential buckets", nm);
    if (m->kind != KEEL_CONFIG_PROM_DISTRIBUTION) {
        if (defs)
            keel_config_warn_at(c, &m->pos, "metric \"%s\": buckets are ignored for kind %s", nm, kind_names[m->kind]);
        return;
    }
    if (m->explicit_bounds) {
        m->bounds = m->explicit_bounds;
        m->n_bounds = m->n_explicit_bounds;
        for (size_t i = 1; i < m->n_bounds; i++)
            if (!(m->bounds[i] > m->bounds[i - 1]))
                keel_config_err_at(c, &m->pos, "metric \"%s\": explicit bucket bounds must increase", nm);
    } else if (m->linear.pos.line) {
        int64_t n = m->linear.num_finite_buckets;
        if (n <= 0 || n > 1000 || m->linear.width <= 0) {
            keel_config_err_at(c, &m->linear.pos, "metric \"%s\": linear buckets need num_finite_buckets in 1..1000 "
                               "and width > 0", nm);
            return;
        }
        m->n_bounds = (size_t)n + 1;
        m->bounds = keel_config_arena_alloc(c->a, m->n_bounds * sizeof(double));
        for (size_t i = 0; i < m->n_bounds; i++)
            m->bounds[i] = m->linear.offset + (double)i * m->linear.width;
    } else if (m->exponential.pos.line) {
        int64_t n = m->exponential.num_finite_buckets;
        if (n <= 0 || n > 1000 || m->exponential.growth_factor <= 1 || m->exponential.scale <= 0) {
            keel_config_err_at(c, &m->exponential.pos, "metric \"%s\": exponential buckets need num_finite_buckets "
                               "in 1..1000, growth_factor > 1 and scale > 0", nm);
            return;
        }
        m->n_bounds = (size_t)n + 1;
        m->bounds = keel_config_arena_alloc(c->a, m->n_bounds * sizeof(double));
        for (size_t i = 0; i < m->n_bounds; i++)
            m->bounds[i] = m->exponential.scale * pow(m->exponential.growth_factor, (double)i);
    } else {
        m->n_bounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
        m->bounds = keel_config_arena_alloc(c->a, sizeof(default_bounds));
        memcpy(m->bounds, default_bounds, sizeof(default_bounds));
    }
}

static bool provider_known(const struct keel_config_mesh *m, const char *name)
{
    static const char *const builtins[] = { "prometheus", "stackdriver", "envoy", NULL };
    for (int i = 0; builtins[i]; i++)
        if (!strcasecmp(builtins[i], name))
            return true;
    for (size_t i = 0; i < m->n_extension_providers; i++)
        if (m->extension_providers[i].name && !strcasecmp(m->extension_providers[i].name, name))
            return true;
    return false;
}

static void check_providers(struct keel_config_ctx *c, const struct keel_config_provider_ref *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].name && !provider_known(&c->cfg->mesh, p[i].name))
            keel_config_warn_at(c, &p[i].pos, "provider \"%s\" is not defined in the mesh config extensionProviders",
                                p[i].name);
}

int keel_config_model(struct keel_config_ctx *c)
{
    struct keel_config *cfg = c->cfg;
    struct keel_config_impl *im = cfg->impl;
    int before = c->errors;
    /* per-kind lists, in load order */
    struct keel_config_object *last[KEEL_CONFIG_KIND_COUNT] = { 0 };
    for (size_t i = 0; i < im->n_objs; i++) {
        struct keel_config_object *o = im->objs[i];
        if (last[o->kind])
            last[o->kind]->next = o;
        else
            cfg->first[o->kind] = o;
        last[o->kind] = o;
    }
    struct keel_config_index prom_names = { 0 };
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_PROMETHEUS]; o; o = o->next) {
        struct keel_config_prometheus *p = (struct keel_config_prometheus *)o;
        if (o->invalid)
            continue;
        if (p->expiry_ms && !p->expiry_check_ms)
            p->expiry_check_ms = p->expiry_ms / 2;
        for (size_t i = 0; i < p->n_metrics; i++)
            model_prom_metric(c, p, &p->metrics[i], &prom_names);
    }
    keel_config_index_fini(&prom_names);
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_RULE]; o; o = o->next)
        if (!o->invalid)
            model_rule(c, (struct keel_config_rule *)o);
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_TELEMETRY]; o; o = o->next) {
        struct keel_config_telemetry *t = (struct keel_config_telemetry *)o;
        if (o->invalid)
            continue;
        if (t->target_ref != NULL && t->n_target_refs) {
            keel_config_err_at(c, &t->target_ref->pos, "Telemetry \"%s\": targetRef and targetRefs are mutually "
                               "exclusive", o->name);
        } else if (t->target_ref != NULL) { /* the one-element targetRefs: never namespace-wide */
            t->target_refs = t->target_ref;
            t->n_target_refs = 1;
        }
        if (t->n_selector && t->n_target_refs)
            keel_config_err_at(c, &t->target_refs[0].pos, "Telemetry \"%s\": selector and targetRefs are mutually exclusive",
                               o->name);
        for (size_t i = 0; i < t->n_metrics; i++)
            check_providers(c, t->metrics[i].providers, t->metrics[i].n_providers);
        for (size_t i = 0; i < t->n_access_logging; i++)
            check_providers(c, t->access_logging[i].providers, t->access_logging[i].n_providers);
        for (size_t i = 0; i < t->n_tracing; i++) {
            check_providers(c, t->tracing[i].providers, t->tracing[i].n_providers);
            double p = t->tracing[i].random_sampling_percentage;
            if (p > 100)
                keel_config_err_at(c, &t->tracing[i].pos, "randomSamplingPercentage %g is above 100", p);
        }
    }
    const struct keel_config_mesh *m = &cfg->mesh;
    if (m->tracing_sampling > 100)
        keel_config_warn_at(c, &m->pos, "defaultConfig.tracing.sampling %g > 100 is treated as 1%%",
                            m->tracing_sampling);
    return c->errors > before ? -1 : 0;
}
