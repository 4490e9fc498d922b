/* attributegen, natively (telemetry-api.md §7): for each generator, the first `match`
 * whose CEL condition is true sets filter_state['wasm.<output_attribute>'] to its value. */
#include "core/alloc.h"
#include "telemetry/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool plugin_applies(const struct keel_config *cfg, const struct keel_config_wasmplugin *w,
                           const struct keel_telemetry_workload *self)
{
    const char *ns = self && self->namespace ? self->namespace : "default";
    const char *root = cfg->mesh.root_namespace ? cfg->mesh.root_namespace : "istio-system";
    const char *wns = w->obj.namespace ? w->obj.namespace : "default";
    if (w->n_target_refs) {
        if (strcmp(wns, ns) || !self || !self->gateway)
            return false;
        for (size_t i = 0; i < w->n_target_refs; i++) {
            const struct keel_config_target_ref *r = &w->target_refs[i];
            if (r->kind && !strcmp(r->kind, "Gateway") && r->name && !strcmp(r->name, self->gateway))
                return true;
        }
        return false;
    }
    if (strcmp(wns, ns) && strcmp(wns, root))
        return false;
    return tel_selector_matches(w->selector, w->n_selector, self);
}

void tel_attrgen_plan(struct keel_telemetry *t, const struct keel_telemetry_workload *self, struct keel_diag *d)
{
    size_t n = 0;
    for (const struct keel_config_object *o = t->cfg->first[KEEL_CONFIG_WASMPLUGIN]; o; o = o->next) {
        const struct keel_config_wasmplugin *w = (const void *)o;
        if (w->is_attributegen && plugin_applies(t->cfg, w, self))
            n += w->n_attributes;
    }
    if (n == 0)
        return;
    t->gens = tel_palloc(t, n * sizeof(*t->gens));
    for (const struct keel_config_object *o = t->cfg->first[KEEL_CONFIG_WASMPLUGIN]; o; o = o->next) {
        const struct keel_config_wasmplugin *w = (const void *)o;
        if (!w->is_attributegen || !plugin_applies(t->cfg, w, self))
            continue;
        for (size_t i = 0; i < w->n_attributes; i++) {
            const struct keel_config_attrgen *a = &w->attributes[i];
            if (a->phase != 0 && d)
                keel_diag_warn(d, a->pos.file, a->pos.line, a->pos.col,
                               "attributegen \"%s\": phase ON_REQUEST runs at the end of the request here",
                               a->output_attribute);
            struct tel_attrgen *g = &t->gens[t->n_gens++];
            size_t klen = 5 + strlen(a->output_attribute);
            char *key = tel_palloc(t, klen + 1);
            snprintf(key, klen + 1, "wasm.%s", a->output_attribute);
            g->key = (struct keel_str){ key, klen };
            g->err_label = keel_str_c(a->output_attribute);
            g->slot = t->n_gen_slots;
            for (size_t j = 0; j + 1 < t->n_gens; j++)
                if (keel_str_eq(t->gens[j].key, g->key)) {
                    g->slot = t->gens[j].slot;
                    break;
                }
            if (g->slot == t->n_gen_slots)
                t->n_gen_slots++;
            g->m = tel_palloc(t, (a->n_match ? a->n_match : 1) * sizeof(*g->m));
            g->n = a->n_match;
            for (size_t j = 0; j < a->n_match; j++) {
                g->m[j].cond = a->match[j].condition.compiled;
                g->m[j].value = keel_str_c(a->match[j].value ? a->match[j].value : "");
            }
        }
    }
}

void tel_attrgen_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, struct keel_attr_bag *bag)
{
    const struct keel_value *old = keel_attr_bag_get(bag, KEEL_ATTR_FILTER_STATE);
    size_t n_old = old && old->type == KEEL_VALUE_STRING_MAP ? old->u.map.n : 0;
    size_t need = n_old + t->n_gen_slots;
    if (need > sh->fs_cap) { /* warm-up only */
        sh->fs_cap = need * 2;
        sh->fs = keel_realloc(sh->fs, sh->fs_cap * sizeof(*sh->fs));
    }
    if (n_old && old->u.map.kv != sh->fs)
        memmove(sh->fs, old->u.map.kv, n_old * sizeof(*sh->fs));
    /* where each slot's value goes: -1 = not set yet */
    long at[64];
    size_t n_slots = t->n_gen_slots < 64 ? t->n_gen_slots : 64;
    for (size_t i = 0; i < n_slots; i++)
        at[i] = -1;
    size_t n = n_old;
    for (size_t i = 0; i < t->n_gens; i++) {
        const struct tel_attrgen *g = &t->gens[i];
        const struct keel_str *value = NULL;
        for (size_t j = 0; j < g->n; j++) {
            if (g->m[j].cond) {
                struct keel_value v;
                if (keel_expr_eval(g->m[j].cond, bag, &v, NULL) < 0 || v.type != KEEL_VALUE_BOOL) {
                    tel_count_error(sh, t->err_attrgen, g->err_label);
                    break; /* aborts this generator */
                }
                if (!v.u.b)
                    continue;
            }
            value = &g->m[j].value;
            break;
        }
        if (!value)
            continue;
        long pos = g->slot < 64 ? at[g->slot] : -1;
        if (pos < 0) {
            /* an entry of the same name already in the bag is replaced */
            for (size_t k = 0; k < n_old; k++)
                if (keel_str_eq(sh->fs[k].k, g->key)) {
                    pos = (long)k;
                    break;
                }
        }
        if (pos < 0) {
            pos = (long)n++;
            sh->fs[pos].k = g->key;
        }
        if (g->slot < 64)
            at[g->slot] = pos;
        sh->fs[pos].v = *value;
    }
    if (n != n_old || n_old) {
        struct keel_value m = keel_value_map(sh->fs, n);
        keel_attr_bag_set(bag, KEEL_ATTR_FILTER_STATE, &m);
    }
}
