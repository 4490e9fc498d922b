/* The engine's frame: plan lifecycle, per-worker shards, and the report order of
 * DESIGN.md (attributegen, standard metrics, Mixer rules). The steps live in
 * attributegen.c, standard_metrics.c, rules.c and stdio_handler.c. */
#include "telemetry/engine.h"

#include "core/alloc.h"
#include "telemetry/engine_int.h"

#include <stdlib.h>
#include <string.h>

struct plan_block {
    struct plan_block *next;
    max_align_t data[];
};

void *tel_palloc(struct keel_telemetry *t, size_t n)
{
    struct plan_block *b = keel_calloc(1, sizeof(*b) + (n ? n : 1));
    b->next = t->blocks;
    t->blocks = b;
    return b->data;
}

char *tel_pstrdup(struct keel_telemetry *t, const char *s)
{
    size_t n = strlen(s);
    char *d = tel_palloc(t, n + 1);
    memcpy(d, s, n);
    return d;
}

bool tel_selector_matches(const struct keel_config_kv *sel, size_t n, const struct keel_telemetry_workload *self)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; self && j < self->n_labels && !found; j++)
            found = self->labels[j].key && !strcmp(self->labels[j].key, sel[i].key) &&
                    !strcmp(self->labels[j].value ? self->labels[j].value : "", sel[i].value ? sel[i].value : "");
        if (!found)
            return false;
    }
    return true;
}

static struct keel_metrics_family *err_family(struct keel_telemetry *t, const char *name, const char *label,
                                              const char *help)
{
    const char *labels[1] = { label };
    return keel_metrics_family(t->reg, name, KEEL_METRIC_COUNTER, help, labels, 1, NULL, 0, NULL, 0);
}

struct keel_telemetry *keel_telemetry_new(const struct keel_config *cfg, struct keel_metrics *reg,
                                          const struct keel_telemetry_workload *self, struct keel_diag *diags)
{
    return keel_telemetry_new_role(cfg, reg, self, KEEL_TELEMETRY_PROXY, diags);
}

struct keel_telemetry *keel_telemetry_new_role(const struct keel_config *cfg, struct keel_metrics *reg,
                                               const struct keel_telemetry_workload *self,
                                               enum keel_telemetry_role role, struct keel_diag *diags)
{
    struct keel_telemetry *t = keel_calloc(1, sizeof(*t));
    t->cfg = keel_config_ref((struct keel_config *)cfg);
    t->reg = reg;
    t->err_match = err_family(t, "keel_telemetry_match_errors_total", "rule",
                              "Rule match expressions that failed to evaluate (the rule did not apply).");
    t->err_instance = err_family(t, "keel_telemetry_instance_errors_total", "instance",
                                 "Instances dropped because an expression failed to evaluate.");
    t->err_attrgen = err_family(t, "keel_telemetry_attributegen_errors_total", "attribute",
                                "attributegen generators aborted by a condition error or a non-bool result.");
    t->err_sample = err_family(t, "keel_telemetry_sample_errors_total", "metric",
                               "Metric samples rejected by the prometheus handler (value or labels).");
    tel_attrgen_plan(t, self, diags);
    if (role != KEEL_TELEMETRY_MIXER)
        tel_std_plan(t, self, diags);
    else
        t->dispatches = err_family(t, "keel_telemetry_rule_dispatches_total", "rule",
                                   "Reports a Mixer rule matched and dispatched to its handlers.");
    if (role != KEEL_TELEMETRY_PROXY_NO_RULES)
        tel_rules_plan(t, diags);
    t->fixed_reads = t->n_gens == 0 && t->n_rules == 0;
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < TM__COUNT; k++)
            for (size_t i = 0; t->fixed_reads && !t->std.m[m][k].drop && i < t->std.m[m][k].n; i++)
                if (t->std.m[m][k].slots[i].builtin < 0) /* a tagOverrides expression */
                    t->fixed_reads = false;
    return t;
}

bool keel_telemetry_reads_fixed(const struct keel_telemetry *t)
{
    return t == NULL || t->fixed_reads;
}

void keel_telemetry_free(struct keel_telemetry *t)
{
    if (!t)
        return;
    for (struct plan_block *b = t->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    keel_config_unref(t->cfg);
    free(t);
}

struct keel_telemetry_shard *keel_telemetry_shard_new(struct keel_metrics *reg)
{
    struct keel_telemetry_shard *sh = keel_calloc(1, sizeof(*sh));
    sh->ms = keel_metrics_shard_new(reg);
    sh->std_cache = keel_calloc(TEL_STD_CACHE, sizeof(*sh->std_cache));
    return sh;
}

void keel_telemetry_shard_free(struct keel_telemetry_shard *sh)
{
    if (!sh)
        return;
    /* sh->ms belongs to the registry: its counts stay exported */
    keel_buf_release(&sh->scratch);
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++)
        keel_buf_release(&sh->out[i].buf);
    free(sh->fs);
    free(sh->std_cache);
    free(sh);
}

struct keel_telemetry_output *keel_telemetry_shard_output(struct keel_telemetry_shard *sh, int stream)
{
    return stream >= 0 && stream < KEEL_TELEMETRY_N_STREAMS ? &sh->out[stream] : NULL;
}

int tel_eval_text(struct keel_telemetry_shard *sh, const struct keel_expr *e, const struct keel_attr_bag *bag,
                  struct tel_lv *out)
{
    struct keel_value v;
    if (keel_expr_eval(e, bag, &v, NULL) < 0)
        return -1;
    size_t start = sh->scratch.wpos;
    keel_value_format(&v, &sh->scratch);
    out->p = NULL;
    out->off = start;
    out->len = sh->scratch.wpos - start;
    return 0;
}

void tel_count_error(struct keel_telemetry_shard *sh, struct keel_metrics_family *f, struct keel_str label)
{
    if (f)
        keel_metrics_add(sh->ms, f, &label, 1);
}

void keel_telemetry_report(const struct keel_telemetry *t, struct keel_telemetry_shard *sh,
                           struct keel_attr_bag *bag)
{
    keel_buf_attach(&sh->scratch);
    sh->scratch.rpos = sh->scratch.wpos = 0;
    if (t->n_gens)
        tel_attrgen_run(t, sh, bag);
    if (t->std_enabled)
        tel_std_run(t, sh, bag);
    if (t->n_rules)
        tel_rules_run(t, sh, bag);
}

int64_t keel_telemetry_reporting_interval_ms(const struct keel_telemetry *t)
{
    return t != NULL && t->reporting_interval_ms > 0 ? t->reporting_interval_ms
                                                      : KEEL_TELEMETRY_REPORTING_INTERVAL_MS;
}

void keel_telemetry_shard_tick(struct keel_telemetry_shard *sh, uint64_t now_ns, uint64_t max_age_ns)
{
    keel_metrics_shard_tick(sh->ms, now_ns);
    if (max_age_ns == 0 || now_ns - keel_metrics_shard_last_sweep(sh->ms) < max_age_ns / 2)
        return;
    if (keel_metrics_shard_expire(sh->ms, max_age_ns) > 0) /* the cache may point at them */
        memset(sh->std_cache, 0, TEL_STD_CACHE * sizeof(*sh->std_cache));
}

void keel_telemetry_shard_sweep(struct keel_telemetry_shard *sh, uint64_t max_age_ns)
{
    if (keel_metrics_shard_expire(sh->ms, max_age_ns) > 0)
        memset(sh->std_cache, 0, TEL_STD_CACHE * sizeof(*sh->std_cache));
}
