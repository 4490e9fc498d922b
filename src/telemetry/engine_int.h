/* Engine internals shared by engine.c (plan + report order), attributegen.c,
 * standard_metrics.c, rules.c and stdio_handler.c. */
#ifndef KEEL_TELEMETRY_ENGINE_INT_H
#define KEEL_TELEMETRY_ENGINE_INT_H

#include "telemetry/engine.h"

#include "expr/expr.h"

#include <stdbool.h>

/* ---- plan memory: freed whole with the plan ---- */
struct plan_block;
void *tel_palloc(struct keel_telemetry *t, size_t n); /* zeroed */
char *tel_pstrdup(struct keel_telemetry *t, const char *s);

/* ---- attributegen ---- */
struct tel_attrgen_match {
    const struct keel_expr *cond; /* NULL = true */
    struct keel_str value;
};
struct tel_attrgen {
    struct keel_str key;    /* "wasm.<output_attribute>" */
    size_t slot;            /* index among distinct keys (last writer wins) */
    struct keel_str err_label; /* output attribute, for the error counter */
    struct tel_attrgen_match *m;
    size_t n;
};

/* ---- standard metrics ---- */
enum tel_std_label {
    TL_REPORTER, TL_SOURCE_WORKLOAD, TL_SOURCE_CANONICAL_SERVICE, TL_SOURCE_CANONICAL_REVISION,
    TL_SOURCE_WORKLOAD_NAMESPACE, TL_SOURCE_PRINCIPAL, TL_SOURCE_APP, TL_SOURCE_VERSION, TL_SOURCE_CLUSTER,
    TL_DESTINATION_WORKLOAD, TL_DESTINATION_WORKLOAD_NAMESPACE, TL_DESTINATION_PRINCIPAL, TL_DESTINATION_APP,
    TL_DESTINATION_VERSION, TL_DESTINATION_SERVICE, TL_DESTINATION_CANONICAL_SERVICE,
    TL_DESTINATION_CANONICAL_REVISION, TL_DESTINATION_SERVICE_NAME, TL_DESTINATION_SERVICE_NAMESPACE,
    TL_DESTINATION_CLUSTER, TL_REQUEST_PROTOCOL, TL_RESPONSE_CODE, TL_GRPC_RESPONSE_STATUS, TL_RESPONSE_FLAGS,
    TL_CONNECTION_SECURITY_POLICY, TL__COUNT
};
extern const char *const tel_std_label_names[TL__COUNT];

enum tel_std_metric {
    TM_REQUESTS_TOTAL, TM_REQUEST_DURATION, TM_REQUEST_BYTES, TM_RESPONSE_BYTES,
    TM_TCP_OPENED, TM_TCP_CLOSED, TM_TCP_SENT, TM_TCP_RECEIVED,
    TM_GRPC_REQUEST_MESSAGES, TM_GRPC_RESPONSE_MESSAGES, TM__COUNT
};

struct tel_slot {
    int builtin;                  /* enum tel_std_label, or -1: expr */
    const struct keel_expr *expr; /* tagOverrides UPSERT value (CEL) */
};

struct tel_std_metric_plan {
    bool drop;
    bool is_default;             /* slots are exactly the standard list: share the hash */
    struct keel_metrics_family *fam;
    struct tel_slot *slots;
    size_t n;
};

enum { TEL_CLIENT, TEL_SERVER };

struct tel_std_plan {
    struct tel_std_metric_plan m[2][TM__COUNT]; /* [mode][metric] */
};
/* The standard metric family of that name this plan records (either mode), or -1. */
int tel_std_family_active(const struct keel_telemetry *t, const char *name);

/* ---- Mixer rules ---- */
struct tel_named {
    const struct keel_expr *expr;
    const char *name;
    struct keel_str key_json;    /* ,"name": */
    struct keel_str key_console; /* "name": (", " is put between fields) */
};

struct tel_instance {
    const struct keel_config_object *obj;
    struct keel_str fqn;
    bool is_log;
    /* metric */
    const struct keel_expr *value;
    struct tel_named *dims; /* sorted by name (bytewise) */
    size_t n_dims;
    /* logentry */
    const struct keel_expr *severity;
    const struct keel_expr *timestamp; /* NULL = zero time */
    /* resolved at plan time: a severity that is one string literal, a timestamp that is
     * one attribute (the VM would only load it) */
    bool severity_is_const;
    struct keel_str severity_const;
    int timestamp_attr; /* attribute id, or -1: evaluate timestamp */
    struct tel_named *vars;            /* sorted by name (bytewise) */
    size_t n_vars;
};

struct tel_prom_target {
    struct keel_metrics_family *fam; /* NULL: samples rejected (counted) */
    int kind;                        /* enum keel_config_prom_kind */
    size_t *dim_of_label;            /* label i (family order) = dims[dim_of_label[i]] */
    size_t n_labels;
    struct keel_str err_label;       /* full metric name */
};

struct tel_stdio {
    const struct keel_config_stdio *cfg;
    int stream;
    bool json;
};

struct tel_action {
    bool is_prom;
    const struct tel_stdio *stdio;
    struct tel_instance **inst;
    struct tel_prom_target **prom; /* per instance (prom handlers) */
    size_t n;
};

struct tel_rule {
    const struct keel_expr *match; /* NULL = always */
    struct keel_str ns;            /* len 0: default namespace, applies to every report */
    struct keel_str fqn;
    struct tel_action *actions;
    size_t n_actions;
};

/* ---- the plan ---- */
struct keel_telemetry {
    struct keel_config *cfg; /* referenced */
    struct keel_metrics *reg;
    struct plan_block *blocks;

    struct tel_attrgen *gens;
    size_t n_gens, n_gen_slots;

    bool std_enabled;
    struct tel_std_plan std;
    int64_t reporting_interval_ms; /* Telemetry metrics[].reportingInterval in scope */

    struct tel_rule *rules;
    size_t n_rules;
    bool any_ns_rules;

    struct keel_metrics_family *err_match, *err_instance, *err_attrgen, *err_sample;
    struct keel_metrics_family *dispatches; /* keel mixer only: per rule, NULL otherwise */
    bool fixed_reads; /* only the standard labels read a bag: no expression (see engine.h) */
};

/* Recently seen standard HTTP label tuples and their series in the (default-labelled)
 * HTTP families, so a report finds all four with one hash and one compare
 * (standard_metrics.c). Direct-mapped by tuple hash; an entry is a cache of lookups,
 * never the only record of anything, so replacing it is always safe. */
#define TEL_STD_CACHE 256
#define TEL_STD_HTTP 4 /* TM_REQUESTS_TOTAL .. TM_RESPONSE_BYTES */
struct tel_std_entry {
    uint64_t hash;
    const struct keel_str *vals; /* the tuple (a cached series' labels); NULL: none yet */
    struct keel_metrics_family *fam[TEL_STD_HTTP];
    struct keel_metrics_series *s[TEL_STD_HTTP]; /* valid for fam[k] only */
};

struct keel_telemetry_shard {
    struct keel_metrics_shard *ms;
    struct tel_std_entry *std_cache; /* TEL_STD_CACHE entries */
    struct tel_std_entry *std_last;  /* the entry of the previous HTTP report, or NULL */
    struct keel_buf scratch; /* label text of the current report */
    char std_code[24], std_flags[256]; /* response_code, response_flags of the current report */
    struct keel_str_pair *fs; /* filter_state entries handed to the bag */
    size_t fs_cap;
    struct keel_telemetry_output out[KEEL_TELEMETRY_N_STREAMS];
};

/* A label value under construction: a stable slice (p != NULL) or bytes in sh->scratch
 * at off (p == NULL) -- scratch may move while it grows. */
struct tel_lv {
    const char *p;
    size_t len, off;
};
static inline struct keel_str tel_lv_str(const struct keel_telemetry_shard *sh, struct tel_lv v)
{
    return (struct keel_str){ v.p ? v.p : sh->scratch.data + v.off, v.len };
}
/* Evaluate e and append its Stringify text to scratch; -1 on an evaluation error. */
int tel_eval_text(struct keel_telemetry_shard *sh, const struct keel_expr *e, const struct keel_attr_bag *bag,
                  struct tel_lv *out);
void tel_count_error(struct keel_telemetry_shard *sh, struct keel_metrics_family *f, struct keel_str label);

/* plan builders (keel_telemetry_new) */
void tel_attrgen_plan(struct keel_telemetry *t, const struct keel_telemetry_workload *self, struct keel_diag *d);
void tel_std_plan(struct keel_telemetry *t, const struct keel_telemetry_workload *self, struct keel_diag *d);
void tel_rules_plan(struct keel_telemetry *t, struct keel_diag *d);
void tel_stdio_plan(struct keel_telemetry *t, struct tel_stdio *s, const struct keel_config_stdio *cfg,
                    struct keel_diag *d);

/* report steps */
void tel_attrgen_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, struct keel_attr_bag *bag);
void tel_std_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, const struct keel_attr_bag *bag);
void tel_rules_run(const struct keel_telemetry *t, struct keel_telemetry_shard *sh, const struct keel_attr_bag *bag);
/* stdio: one line for a logentry / metric instance; -1 (nothing written) on an
 * evaluation error */
int tel_stdio_log(const struct tel_stdio *s, struct keel_telemetry_shard *sh, const struct tel_instance *in,
                  const struct keel_attr_bag *bag);
int tel_stdio_metric(const struct tel_stdio *s, struct keel_telemetry_shard *sh, const struct tel_instance *in,
                     const struct keel_attr_bag *bag);

/* selector (matchLabels) subset of self's labels */
bool tel_selector_matches(const struct keel_config_kv *sel, size_t n, const struct keel_telemetry_workload *self);

#endif
