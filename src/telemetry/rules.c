/* Mixer v1alpha2 rules in the proxy (mixer-config.md §3.6, §4, §6): match, build the
 * instances, dispatch to the prometheus and stdio handlers. */
#include "core/alloc.h"
#include "core/json.h"
#include "telemetry/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plan ---- */

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const struct tel_named *)a)->name, ((const struct tel_named *)b)->name);
}

static void named_fill(struct keel_telemetry *t, struct tel_named *out, const struct keel_config_named_expr *in,
                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i].name = in[i].name;
        out[i].expr = in[i].expr.compiled;
        /* the key as a JSON string, by the one escaper: names come from the config */
        struct keel_buf q = { 0 };
        keel_json_str(&q, in[i].name);
        size_t len = keel_buf_len(&q);
        char *kj = tel_palloc(t, len + 3), *kc = tel_palloc(t, len + 3);
        kj[0] = ',';
        memcpy(kj + 1, keel_buf_rptr(&q), len);
        kj[len + 1] = ':';
        memcpy(kc, keel_buf_rptr(&q), len);
        memcpy(kc + len, ": ", 2);
        keel_buf_release(&q);
        out[i].key_json = (struct keel_str){ kj, len + 2 };
        out[i].key_console = (struct keel_str){ kc, len + 2 };
    }
    qsort(out, n, sizeof(*out), cmp_named); /* byte-wise ascending (stdio §6.4) */
}

struct inst_cache {
    struct tel_instance **v;
    size_t n, cap;
};

static bool exprs_ok(const struct keel_config_named_expr *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!e[i].expr.compiled)
            return false;
    return true;
}

/* A source that is one string literal without escapes ('"warning"'): its value, checked
 * against the compiled expression's own result. */
static bool const_string(struct keel_telemetry *t, const struct keel_config_expr *x, struct keel_str *out)
{
    if (!x->src || !x->compiled)
        return false;
    size_t n = strlen(x->src);
    if (n < 2 || x->src[0] != '"' || x->src[n - 1] != '"' || strpbrk(x->src + 1, "\\\"") != x->src + n - 1)
        return false;
    struct keel_attr_bag empty;
    keel_attr_bag_clear(&empty);
    struct keel_value v;
    if (keel_expr_eval(x->compiled, &empty, &v, NULL) < 0 || v.type != KEEL_VALUE_STRING || v.u.s.len != n - 2 ||
        memcmp(v.u.s.p, x->src + 1, n - 2))
        return false;
    char *p = tel_palloc(t, n - 1);
    memcpy(p, v.u.s.p, n - 2);
    *out = (struct keel_str){ p, n - 2 };
    return true;
}

/* A source that is exactly one attribute name of type t: the VM would only load it
 * (absent or another type -> an evaluation error). */
static int bare_attribute(const struct keel_config_expr *x, enum keel_value_type t)
{
    if (!x->src || !x->compiled)
        return -1;
    int id = keel_attr_lookup(x->src, strlen(x->src));
    return id >= 0 && keel_attr_type(id) == t && keel_expr_result_type(x->compiled) == t ? id : -1;
}

static struct tel_instance *instance_plan(struct keel_telemetry *t, struct inst_cache *c,
                                          const struct keel_config_object *o, struct keel_diag *d)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i]->obj == o)
            return c->v[i];
    struct tel_instance *in = tel_palloc(t, sizeof(*in));
    in->obj = o;
    in->fqn = keel_str_c(o->fqn);
    in->timestamp_attr = -1;
    if (o->kind == KEEL_CONFIG_METRIC) {
        const struct keel_config_metric *m = (const void *)o;
        if (!m->value.compiled || !exprs_ok(m->dimensions, m->n_dimensions))
            goto invalid;
        in->value = m->value.compiled;
        in->dims = tel_palloc(t, (m->n_dimensions ? m->n_dimensions : 1) * sizeof(*in->dims));
        in->n_dims = m->n_dimensions;
        named_fill(t, in->dims, m->dimensions, m->n_dimensions);
    } else if (o->kind == KEEL_CONFIG_LOGENTRY) {
        const struct keel_config_logentry *l = (const void *)o;
        if (!exprs_ok(l->variables, l->n_variables) || (l->severity.src && l->severity.src[0] && !l->severity.compiled) ||
            (l->timestamp.src && l->timestamp.src[0] && !l->timestamp.compiled))
            goto invalid;
        in->is_log = true;
        in->severity = l->severity.compiled;
        in->timestamp = l->timestamp.compiled;
        in->severity_is_const = const_string(t, &l->severity, &in->severity_const);
        in->timestamp_attr = bare_attribute(&l->timestamp, KEEL_VALUE_TIMESTAMP);
        in->vars = tel_palloc(t, (l->n_variables ? l->n_variables : 1) * sizeof(*in->vars));
        in->n_vars = l->n_variables;
        named_fill(t, in->vars, l->variables, l->n_variables);
    } else {
        goto invalid;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = keel_realloc(c->v, c->cap * sizeof(*c->v));
    }
    c->v[c->n++] = in;
    return in;
invalid:
    if (d)
        keel_diag_warn(d, o->pos.file, o->pos.line, o->pos.col, "instance \"%s\" has expressions that did not compile; "
                       "dropped", o->fqn);
    return NULL;
}

/* safe() of mixer-config.md §6.2 */
static void prom_safe(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (*s == '/')
        s++;
    for (; *s && o + 1 < cap; s++) {
        if (*s == '-')
            continue;
        out[o++] = (*s == '/' || *s == '.' || *s == ' ') ? '_' : *s;
    }
    out[o] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static struct tel_prom_target *prom_plan(struct keel_telemetry *t, const struct keel_config_prometheus *h,
                                         const struct tel_instance *in, struct keel_diag *d)
{
    const struct keel_config_prom_metric *m = NULL;
    for (size_t i = 0; i < h->n_metrics && !m; i++)
        if (h->metrics[i].instance == (const struct keel_config_metric *)in->obj)
            m = &h->metrics[i];
    if (!m) {
        if (d)
            keel_diag_warn(d, h->obj.pos.file, h->obj.pos.line, h->obj.pos.col,
                           "could not find metric info from adapter config for %s", in->obj->fqn);
        return NULL;
    }
    struct tel_prom_target *pt = tel_palloc(t, sizeof(*pt));
    pt->kind = m->kind;
    char prefix[256], name[512], full[800];
    prom_safe(m->namespace && m->namespace[0] ? m->namespace : "istio", prefix, sizeof(prefix));
    prom_safe(m->name && m->name[0] ? m->name : m->instance_name.s, name, sizeof(name));
    snprintf(full, sizeof(full), "%s_%s", prefix, name);
    /* one family, one definition: a Mixer metric may not feed a family the standard
     * metrics record (Mixer's default requestcount -> istio_requests_total): that would
     * count every request twice. (Two handler metrics of one name are a load error.) */
    if (tel_std_family_active(t, full) >= 0) {
        if (d)
            keel_diag_warn(d, m->pos.file, m->pos.line, m->pos.col,
                           "%s is a standard metric of this proxy (Telemetry v2); this Mixer metric "
                           "(instance %s) is not recorded, so no request is counted twice",
                           full, in->obj->fqn);
        return NULL;
    }
    pt->err_label = keel_str_c(tel_pstrdup(t, full));
    /* labels: sanitised names sorted (Go client order); each bound to its dimension */
    size_t n = m->n_label_names;
    char **labels = tel_palloc(t, (n ? n : 1) * sizeof(char *));
    const char **raw = tel_palloc(t, (n ? n : 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        char tmp[256];
        prom_safe(m->label_names[i].s, tmp, sizeof(tmp));
        /* keep the raw name right after the sanitised one for the dimension lookup */
        size_t l1 = strlen(tmp), l2 = strlen(m->label_names[i].s);
        labels[i] = tel_palloc(t, l1 + l2 + 2);
        memcpy(labels[i], tmp, l1 + 1);
        memcpy(labels[i] + l1 + 1, m->label_names[i].s, l2 + 1);
    }
    qsort(labels, n, sizeof(*labels), cmp_str);
    pt->n_labels = n;
    pt->dim_of_label = tel_palloc(t, (n ? n : 1) * sizeof(size_t));
    bool ok = n == in->n_dims;
    for (size_t i = 0; i < n; i++) {
        raw[i] = labels[i];
        const char *dim = labels[i] + strlen(labels[i]) + 1;
        size_t j = 0;
        while (j < in->n_dims && strcmp(in->dims[j].name, dim))
            j++;
        if (j == in->n_dims)
            ok = false;
        pt->dim_of_label[i] = j;
    }
    if (!ok) {
        if (d)
            keel_diag_warn(d, m->pos.file, m->pos.line, m->pos.col,
                           "%s: label_names differ from the dimensions of %s; its samples will be rejected", full,
                           in->obj->fqn);
        return pt; /* fam NULL: every sample counted as rejected */
    }
    static const enum keel_metric_type types[] = { KEEL_METRIC_COUNTER, KEEL_METRIC_GAUGE, KEEL_METRIC_COUNTER,
                                                   KEEL_METRIC_HISTOGRAM };
    char err[256];
    pt->fam = keel_metrics_family(t->reg, full, types[m->kind & 3], m->description && m->description[0] ?
                                  m->description : (m->name && m->name[0] ? m->name : m->instance_name.s),
                                  raw, n, m->bounds, m->kind == KEEL_CONFIG_PROM_DISTRIBUTION ? m->n_bounds : 0, err,
                                  sizeof(err));
    if (!pt->fam && d)
        keel_diag_warn(d, m->pos.file, m->pos.line, m->pos.col, "%s: not recorded: %s", full, err);
    if (pt->fam) /* the handler's metricsExpirationPolicy (0: none; the last handler wins) */
        keel_metrics_family_set_expiry(pt->fam, (uint64_t)h->expiry_ms * 1000000);
    return pt;
}

static void rule_plan(struct keel_telemetry *t, struct tel_rule *r, const struct keel_config_rule *cr,
                      struct inst_cache *c, struct keel_diag *d)
{
    r->fqn = keel_str_c(cr->obj.fqn);
    r->ns = cr->in_default_namespace ? (struct keel_str){ "", 0 } : keel_str_c(cr->obj.namespace);
    r->match = cr->match.src && cr->match.src[0] ? cr->match.compiled : NULL;
    r->actions = tel_palloc(t, (cr->n_actions ? cr->n_actions : 1) * sizeof(*r->actions));
    for (size_t i = 0; i < cr->n_actions; i++) {
        const struct keel_config_action *a = &cr->actions[i];
        const struct keel_config_object *h = a->handler_obj;
        if (!h || (h->kind != KEEL_CONFIG_PROMETHEUS && h->kind != KEEL_CONFIG_STDIO))
            continue;
        struct tel_action *ta = &r->actions[r->n_actions];
        ta->is_prom = h->kind == KEEL_CONFIG_PROMETHEUS;
        if (!ta->is_prom) {
            struct tel_stdio *s = tel_palloc(t, sizeof(*s));
            tel_stdio_plan(t, s, (const struct keel_config_stdio *)h, d);
            ta->stdio = s;
        }
        ta->inst = tel_palloc(t, (a->n_instances ? a->n_instances : 1) * sizeof(*ta->inst));
        ta->prom = tel_palloc(t, (a->n_instances ? a->n_instances : 1) * sizeof(*ta->prom));
        for (size_t j = 0; j < a->n_instances; j++) {
            const struct keel_config_object *io = a->instance_objs ? a->instance_objs[j] : NULL;
            if (!io)
                continue;
            if (ta->is_prom && io->kind != KEEL_CONFIG_METRIC)
                continue; /* template not supported by the handler */
            struct tel_instance *in = instance_plan(t, c, io, d);
            if (!in)
                continue;
            if (ta->is_prom) {
                ta->prom[ta->n] = prom_plan(t, (const struct keel_config_prometheus *)h, in, d);
                if (!ta->prom[ta->n])
                    continue;
            }
            ta->inst[ta->n++] = in;
        }
        if (ta->n)
            r->n_actions++;
    }
}

void tel_rules_plan(struct keel_telemetry *t, struct keel_diag *d)
{
    size_t n = t->cfg->count[KEEL_CONFIG_RULE];
    if (n == 0)
        return;
    t->rules = tel_palloc(t, n * sizeof(*t->rules));
    struct inst_cache c = { 0 };
    for (int pass = 0; pass < 2; pass++) /* default-namespace rules first (§4.4) */
        for (const struct keel_config_object *o = t->cfg->first[KEEL_CONFIG_RULE]; o; o = o->next) {
            const struct keel_config_rule *cr = (const void *)o;
            if (cr->in_default_namespace != (pass == 0) || t->n_rules == n)
                continue;
            if (cr->match.src && cr->match.src[0] && !cr->match.compiled)
                continue;
            struct tel_rule *r = &t->rules[t->n_rules];
            rule_plan(t, r, cr, &c, d);
            if (r->n_actions) {
                t->n_rules++;
                if (r->ns.len)
                    t->any_ns_rules = true;
            }
        }
    free(c.v);
}

/* ---- report ---- */

static int numeric(const struct keel_value *v, double *out)
{
    switch (v->type) {
    case KEEL_VALUE_INT64:
        *out = (double)v->u.i;
        return 0;
    case KEEL_VALUE_UINT64:
        *out = (double)v->u.u;
        return 0;
    case KEEL_VALUE_DOUBLE:
        *out = v->u.d;
        return 0;
    case KEEL_VALUE_DURATION:
        *out = (double)v->u.i / 1e9;
        return 0;
    case KEEL_VALUE_STRING:
        return keel_value_parse_double(v->u.s.p, v->u.s.len, out) == 0 ? 0 : -1;
    default:
        return -1;
    }
}

static void prom_dispatch(const struct keel_telemetry *t, struct keel_telemetry_shard *sh,
                          const struct tel_instance *in, const struct tel_prom_target *pt,
                          const struct keel_attr_bag *bag)
{
    struct keel_value v;
    if (keel_expr_eval(in->value, bag, &v, NULL) < 0) {
        tel_count_error(sh, t->err_instance, in->fqn);
        return;
    }
    double dv;
    int bad = numeric(&v, &dv);
    struct tel_lv lv[KEEL_METRICS_MAX_LABELS];
    size_t nd = in->n_dims < KEEL_METRICS_MAX_LABELS ? in->n_dims : KEEL_METRICS_MAX_LABELS;
    for (size_t i = 0; i < nd; i++)
        if (tel_eval_text(sh, in->dims[i].expr, bag, &lv[i]) < 0) {
            tel_count_error(sh, t->err_instance, in->fqn);
            return;
        }
    if (bad || !pt->fam) {
        tel_count_error(sh, t->err_sample, pt->err_label);
        return;
    }
    struct keel_str vals[KEEL_METRICS_MAX_LABELS];
    for (size_t i = 0; i < pt->n_labels; i++)
        vals[i] = tel_lv_str(sh, lv[pt->dim_of_label[i]]);
    keel_metrics_update_h(sh->ms, pt->fam, vals, keel_metrics_hash(vals, pt->n_labels), dv);
}

static struct keel_str identity_ns(const struct keel_attr_bag *bag)
{
    const struct keel_value *k = keel_attr_bag_get(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND);
    bool outbound = k && k->type == KEEL_VALUE_STRING && k->u.s.len == 8 && !memcmp(k->u.s.p, "outbound", 8);
    const struct keel_value *ns =
        keel_attr_bag_get(bag, outbound ? KEEL_ATTR_SOURCE_NAMESPACE : KEEL_ATTR_DESTINATION_NAMESPACE);
    return ns && ns->type == KEEL_VALUE_STRING ? ns->u.s : (struct keel_str){ "", 0 };
}

void tel_rules_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, const struct keel_attr_bag *bag)
{
    struct keel_str ident = { "", 0 };
    if (t->any_ns_rules)
        ident = identity_ns(bag);
    for (size_t i = 0; i < t->n_rules; i++) {
        const struct tel_rule *r = &t->rules[i];
        if (r->ns.len && !keel_str_eq(r->ns, ident))
            continue;
        if (r->match) {
            struct keel_value v;
            if (keel_expr_eval(r->match, bag, &v, NULL) < 0) {
                tel_count_error(sh, t->err_match, r->fqn);
                continue;
            }
            if (v.type != KEEL_VALUE_BOOL || !v.u.b)
                continue;
        }
        if (t->dispatches)
            keel_metrics_add(sh->ms, t->dispatches, &r->fqn, 1);
        for (size_t a = 0; a < r->n_actions; a++) {
            const struct tel_action *ta = &r->actions[a];
            for (size_t j = 0; j < ta->n; j++) {
                const struct tel_instance *in = ta->inst[j];
                if (ta->is_prom) {
                    prom_dispatch(t, sh, in, ta->prom[j], bag);
                    continue;
                }
                int rc = in->is_log ? tel_stdio_log(ta->stdio, sh, in, bag) : tel_stdio_metric(ta->stdio, sh, in, bag);
                if (rc < 0)
                    tel_count_error(sh, t->err_instance, in->fqn);
            }
        }
    }
}
