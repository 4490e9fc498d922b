/* Registry internals shared by metrics.c (storage, hot path) and prom_text.c (scrape). */
#ifndef KEEL_TELEMETRY_METRICS_INT_H
#define KEEL_TELEMETRY_METRICS_INT_H

#include "telemetry/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct keel_metrics_family {
    struct keel_metrics *reg;
    uint32_t id; /* index in reg->fams and in every shard's tables */
    enum keel_metric_type type;
    char *name;
    char *help;
    char **labels;
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    size_t limit;                 /* 0 = unlimited */
    _Atomic size_t n_series;      /* over all shards */
    struct keel_metrics_family *overflow_fam; /* where overflows are counted */
    _Atomic uint64_t expiry_ns;   /* its own max age (a handler's expiration policy), 0 = the sweep's */
};

/* One series in one shard. Allocated once with its label bytes; lives as long as the
 * registry. Values: single writer (the shard's worker), relaxed atomics. */
struct keel_metrics_series {
    uint64_t hash;
    _Atomic double v;        /* counter/gauge value; histogram sum */
    _Atomic uint64_t stamp;  /* gauge: time of the last set (merge: latest wins) */
    _Atomic uint64_t *buckets; /* histogram: n_bounds + 1 non-cumulative counts (last = +Inf) */
    uint64_t touched;        /* shard clock at the last update (owner only): expiry */
    struct keel_str *values; /* n_labels slices into the same allocation */
};

struct keel_metrics_table {
    struct keel_metrics_series **slots; /* open addressing, cap a power of two */
    size_t cap, n;
    /* insertion order, for the scrape */
    struct keel_metrics_series **all;
    size_t n_all, cap_all;
};

struct keel_metrics_shard {
    struct keel_metrics *reg;
    pthread_mutex_t mu; /* held by the owner while inserting, by a scrape while reading */
    struct keel_metrics_table *tabs; /* indexed by family id; grown on first use */
    size_t n_tabs;
    struct keel_metrics_shard *next;
    uint64_t now;         /* coarse clock (ns) the owner sets each loop turn: expiry */
    uint64_t last_sweep;
};

struct keel_metrics {
    pthread_mutex_t mu; /* families and the shard list */
    struct keel_metrics_family **fams;
    size_t n_fams, cap_fams;
    struct keel_metrics_shard *shards;
    size_t limit;
    struct keel_metrics_family *overflow; /* keel_metrics_series_overflow_total{metric} */
    struct keel_metrics_family *rejected; /* keel_metrics_rejected_samples_total{metric} */
    _Atomic size_t scrapes; /* scrapes in progress: expiry waits (see prom_text.c) */
};

#endif
