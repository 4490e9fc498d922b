/* Metric registry storage and the per-worker hot path (see metrics.h). */
#include "telemetry/metrics.h"

#include "core/alloc.h"
#include "telemetry/metrics_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static struct keel_metrics_family *family_locked(struct keel_metrics *reg, const char *name,
                                                 enum keel_metric_type type, const char *help,
                                                 const char *const *labels, size_t n, const double *bounds,
                                                 size_t nb, char *err, size_t errlen);

struct keel_metrics *keel_metrics_new(void)
{
    struct keel_metrics *reg = keel_calloc(1, sizeof(*reg));
    pthread_mutex_init(&reg->mu, NULL);
    reg->limit = KEEL_METRICS_DEFAULT_SERIES_LIMIT;
    static const char *const metric_label[] = { "metric" };
    pthread_mutex_lock(&reg->mu);
    reg->overflow = family_locked(reg, "keel_metrics_series_overflow_total", KEEL_METRIC_COUNTER,
                                  "Updates dropped because a metric reached its series limit.", metric_label, 1,
                                  NULL, 0, NULL, 0);
    reg->rejected = family_locked(reg, "keel_metrics_rejected_samples_total", KEEL_METRIC_COUNTER,
                                  "Samples rejected (negative or NaN counter increments).", metric_label, 1, NULL,
                                  0, NULL, 0);
    reg->overflow->limit = reg->rejected->limit = 0; /* bounded by the number of families */
    pthread_mutex_unlock(&reg->mu);
    return reg;
}

static void table_free(struct keel_metrics_table *t)
{
    for (size_t i = 0; i < t->n_all; i++) {
        free(t->all[i]->buckets);
        free(t->all[i]);
    }
    free(t->all);
    free(t->slots);
}

void keel_metrics_free(struct keel_metrics *reg)
{
    if (!reg)
        return;
    for (struct keel_metrics_shard *sh = reg->shards, *next; sh; sh = next) {
        next = sh->next;
        for (size_t i = 0; i < sh->n_tabs; i++)
            table_free(&sh->tabs[i]);
        free(sh->tabs);
        pthread_mutex_destroy(&sh->mu);
        free(sh);
    }
    for (size_t i = 0; i < reg->n_fams; i++) {
        struct keel_metrics_family *f = reg->fams[i];
        for (size_t j = 0; j < f->n_labels; j++)
            free(f->labels[j]);
        free(f->labels);
        free(f->bounds);
        free(f->name);
        free(f->help);
        free(f);
    }
    free(reg->fams);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

void keel_metrics_set_series_limit(struct keel_metrics *reg, size_t limit)
{
    pthread_mutex_lock(&reg->mu);
    reg->limit = limit;
    pthread_mutex_unlock(&reg->mu);
}

static void seterr(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

static bool same_labels(const struct keel_metrics_family *f, const char *const *labels, size_t n)
{
    if (f->n_labels != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->labels[i], labels[i]))
            return false;
    return true;
}

static const char *type_name(enum keel_metric_type t)
{
    return t == KEEL_METRIC_COUNTER ? "counter" : t == KEEL_METRIC_GAUGE ? "gauge" : "histogram";
}

static struct keel_metrics_family *family_locked(struct keel_metrics *reg, const char *name,
                                                 enum keel_metric_type type, const char *help,
                                                 const char *const *labels, size_t n, const double *bounds,
                                                 size_t nb, char *err, size_t errlen)
{
    if (!valid_name(name, true)) {
        seterr(err, errlen, "invalid metric name \"%s\"%s", name ? name : "", "");
        return NULL;
    }
    if (n > KEEL_METRICS_MAX_LABELS || nb > KEEL_METRICS_MAX_BUCKETS) {
        seterr(err, errlen, "metric \"%s\": too many labels or buckets%s", name, "");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!valid_name(labels[i], false) || !strncmp(labels[i], "__", 2) ||
            (type == KEEL_METRIC_HISTOGRAM && !strcmp(labels[i], "le"))) {
            seterr(err, errlen, "metric \"%s\": invalid label name \"%s\"", name, labels[i] ? labels[i] : "");
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(labels[i], labels[j])) {
                seterr(err, errlen, "metric \"%s\": label \"%s\" given twice", name, labels[i]);
                return NULL;
            }
    }
    if (type != KEEL_METRIC_HISTOGRAM)
        nb = 0;
    for (size_t i = 0; i < nb; i++)
        if (isnan(bounds[i]) || (i && !(bounds[i] > bounds[i - 1]))) {
            seterr(err, errlen, "metric \"%s\": bucket bounds must increase%s", name, "");
            return NULL;
        }
    for (size_t i = 0; i < reg->n_fams; i++) {
        struct keel_metrics_family *f = reg->fams[i];
        if (strcmp(f->name, name))
            continue;
        if (f->type != type) {
            seterr(err, errlen, "metric \"%s\" is already defined as a %s", name, type_name(f->type));
            return NULL;
        }
        if (f->n_bounds != nb || (nb && memcmp(f->bounds, bounds, nb * sizeof(double)))) {
            seterr(err, errlen, "metric \"%s\" is already defined with other buckets%s", name, "");
            return NULL;
        }
        if (same_labels(f, labels, n))
            return f;
    }
    struct keel_metrics_family *f = keel_calloc(1, sizeof(*f));
    f->reg = reg;
    f->type = type;
    f->name = keel_strdup(name);
    f->help = help ? keel_strdup(help) : NULL;
    f->n_labels = n;
    f->labels = keel_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        f->labels[i] = keel_strdup(labels[i]);
    f->n_bounds = nb;
    f->bounds = keel_alloc((nb ? nb : 1) * sizeof(double));
    if (nb)
        memcpy(f->bounds, bounds, nb * sizeof(double));
    f->limit = reg->limit;
    f->overflow_fam = reg->overflow;
    if (reg->n_fams == reg->cap_fams) {
        reg->cap_fams = reg->cap_fams ? reg->cap_fams * 2 : 32;
        reg->fams = keel_realloc(reg->fams, reg->cap_fams * sizeof(*reg->fams));
    }
    f->id = (uint32_t)reg->n_fams;
    reg->fams[reg->n_fams++] = f;
    return f;
}

struct keel_metrics_family *keel_metrics_family(struct keel_metrics *reg, const char *name, enum keel_metric_type type,
                                                const char *help, const char *const *label_names, size_t n_labels,
                                                const double *bounds, size_t n_bounds, char *err, size_t errlen)
{
    pthread_mutex_lock(&reg->mu);
    struct keel_metrics_family *f =
        family_locked(reg, name, type, help, label_names, n_labels, bounds, n_bounds, err, errlen);
    pthread_mutex_unlock(&reg->mu);
    return f;
}

size_t keel_metrics_family_n_labels(const struct keel_metrics_family *f)
{
    return f->n_labels;
}

const char *keel_metrics_family_name(const struct keel_metrics_family *f)
{
    return f->name;
}

struct keel_metrics_shard *keel_metrics_shard_new(struct keel_metrics *reg)
{
    struct keel_metrics_shard *sh = keel_calloc(1, sizeof(*sh));
    sh->reg = reg;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_mutex_lock(&reg->mu);
    sh->next = reg->shards;
    reg->shards = sh;
    pthread_mutex_unlock(&reg->mu);
    return sh;
}

/* wyhash-style: each value costs one 64x64->128 multiply per 16 bytes (values up to 16
 * bytes -- most label values -- exactly one), read with overlapping loads so no byte is
 * read twice into the same lane and none outside the value. The value's length is folded
 * into its word, so ("ab","c") and ("a","bc") differ. Collisions only cost a compare. */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd4(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define HASH_S0 0xa0761d6478bd642full
#define HASH_S1 0xe7037ed1a0b428dbull
#define HASH_S2 0x8ebc6af09c88c6e3ull

/* one value (its length folded in) into the lane h */
static inline uint64_t hash_value(uint64_t h, const unsigned char *p, size_t len)
{
    uint64_t a, b;
    if (len <= 16) {
        if (len >= 4) {
            size_t o = (len >> 3) << 2;
            a = (rd4(p) << 32) | rd4(p + o);
            b = (rd4(p + len - 4) << 32) | rd4(p + len - 4 - o);
        } else if (len) {
            a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t rest = len;
        while (rest > 16) {
            h = mum(rd8(p) ^ HASH_S1, rd8(p + 8) ^ h);
            p += 16;
            rest -= 16;
        }
        a = rd8(p + rest - 16);
        b = rd8(p + rest - 8);
    }
    return mum(a ^ HASH_S1 ^ ((uint64_t)len << 32), b ^ h ^ HASH_S2);
}

/* Two lanes (even and odd values) halve the chain of dependent multiplies. */
uint64_t keel_metrics_hash(const struct keel_str *values, size_t n)
{
    uint64_t h0 = 0x243F6A8885A308D3ull ^ n, h1 = 0x13198A2E03707344ull;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        h0 = hash_value(h0, (const unsigned char *)values[i].p, values[i].len);
        h1 = hash_value(h1, (const unsigned char *)values[i + 1].p, values[i + 1].len);
    }
    if (i < n)
        h0 = hash_value(h0, (const unsigned char *)values[i].p, values[i].len);
    return mum(h0 ^ HASH_S0, h1 ^ HASH_S1);
}


/* One pass: a repeated tuple (the usual case) pays for each label once, and a
 * different one mostly differs in a label's length, found on the way. */
bool keel_metrics_values_eq(const struct keel_str *a, const struct keel_str *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].len != b[i].len || !keel_bytes_eq(a[i].p, b[i].p, a[i].len))
            return false;
    return true;
}

static bool series_eq(const struct keel_metrics_series *s, const struct keel_str *v, size_t n)
{
    return keel_metrics_values_eq(s->values, v, n);
}

static void table_rehash(struct keel_metrics_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    struct keel_metrics_series **slots = keel_calloc(cap, sizeof(*slots));
    for (size_t i = 0; i < t->n_all; i++) {
        size_t j = t->all[i]->hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = t->all[i];
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
}

static struct keel_metrics_series *series_new(struct keel_metrics_family *f, const struct keel_str *v, uint64_t hash)
{
    size_t bytes = 0;
    for (size_t i = 0; i < f->n_labels; i++)
        bytes += v[i].len;
    struct keel_metrics_series *s = keel_calloc(1, sizeof(*s) + f->n_labels * sizeof(struct keel_str) + bytes + 1);
    s->hash = hash;
    s->values = (struct keel_str *)(s + 1);
    char *p = (char *)(s->values + f->n_labels);
    for (size_t i = 0; i < f->n_labels; i++) {
        if (v[i].len)
            memcpy(p, v[i].p, v[i].len);
        s->values[i] = (struct keel_str){ p, v[i].len };
        p += v[i].len;
    }
    if (f->type == KEEL_METRIC_HISTOGRAM)
        s->buckets = keel_calloc(f->n_bounds + 1, sizeof(*s->buckets));
    return s;
}

static void count_to(struct keel_metrics_shard *sh, struct keel_metrics_family *counter, const char *metric);

/* The series of (f, values) in this shard; NULL when the family is at its limit. */
static struct keel_metrics_series *lookup(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                                          const struct keel_str *v, uint64_t hash)
{
    if (f->id < sh->n_tabs) {
        struct keel_metrics_table *t = &sh->tabs[f->id];
        if (t->cap) {
            size_t j = hash & (t->cap - 1);
            for (struct keel_metrics_series *s; (s = t->slots[j]) != NULL; j = (j + 1) & (t->cap - 1))
                if (s->hash == hash && series_eq(s, v, f->n_labels))
                    return s;
        }
    }
    /* a new series: the only allocating path */
    if (f->limit && atomic_load_explicit(&f->n_series, memory_order_relaxed) >= f->limit) {
        if (f->overflow_fam)
            count_to(sh, f->overflow_fam, f->name);
        return NULL;
    }
    atomic_fetch_add_explicit(&f->n_series, 1, memory_order_relaxed);
    struct keel_metrics_series *s = series_new(f, v, hash);
    s->touched = sh->now;
    pthread_mutex_lock(&sh->mu);
    if (f->id >= sh->n_tabs) {
        size_t n = f->id + 16;
        sh->tabs = keel_realloc(sh->tabs, n * sizeof(*sh->tabs));
        memset(sh->tabs + sh->n_tabs, 0, (n - sh->n_tabs) * sizeof(*sh->tabs));
        sh->n_tabs = n;
    }
    struct keel_metrics_table *t = &sh->tabs[f->id];
    if (t->n_all == t->cap_all) {
        t->cap_all = t->cap_all ? t->cap_all * 2 : 8;
        t->all = keel_realloc(t->all, t->cap_all * sizeof(*t->all));
    }
    t->all[t->n_all++] = s;
    if ((t->n_all) * 2 > t->cap) {
        table_rehash(t); /* inserts every series of t->all, s included */
    } else {
        size_t j = hash & (t->cap - 1);
        while (t->slots[j])
            j = (j + 1) & (t->cap - 1);
        t->slots[j] = s;
    }
    t->n = t->n_all;
    pthread_mutex_unlock(&sh->mu);
    return s;
}

static inline void store_add(_Atomic double *a, double v)
{
    double old = atomic_load_explicit(a, memory_order_relaxed);
    atomic_store_explicit(a, old + v, memory_order_relaxed);
}

static void count_to(struct keel_metrics_shard *sh, struct keel_metrics_family *counter, const char *metric)
{
    struct keel_str v = keel_str_c(metric);
    struct keel_metrics_series *s = lookup(sh, counter, &v, keel_metrics_hash(&v, 1));
    if (s)
        store_add(&s->v, 1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void series_update(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                          struct keel_metrics_series *s, double v)
{
    s->touched = sh->now;
    switch (f->type) {
    case KEEL_METRIC_COUNTER:
        store_add(&s->v, v);
        break;
    case KEEL_METRIC_GAUGE:
        atomic_store_explicit(&s->v, v, memory_order_relaxed);
        atomic_store_explicit(&s->stamp, now_ns(), memory_order_relaxed);
        break;
    case KEEL_METRIC_HISTOGRAM: {
        /* first bound >= v (le is inclusive); binary search */
        size_t lo = 0, hi = f->n_bounds;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (f->bounds[mid] >= v)
                hi = mid;
            else
                lo = mid + 1;
        }
        _Atomic uint64_t *b = &s->buckets[lo];
        atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1, memory_order_relaxed);
        store_add(&s->v, v);
        break;
    }
    }
}

void keel_metrics_update_h(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                           const struct keel_str *label_values, uint64_t hash, double v)
{
    if (f->type == KEEL_METRIC_COUNTER && !(v >= 0)) {
        count_to(sh, sh->reg->rejected, f->name);
        return;
    }
    struct keel_metrics_series *s = lookup(sh, f, label_values, hash);
    if (s)
        series_update(sh, f, s, v);
}

struct keel_metrics_series *keel_metrics_series_find(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                                                     const struct keel_str *label_values, uint64_t hash)
{
    return lookup(sh, f, label_values, hash);
}

const struct keel_str *keel_metrics_series_values(const struct keel_metrics_series *s)
{
    return s->values;
}

void keel_metrics_series_update(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                                struct keel_metrics_series *s, double v)
{
    if (f->type == KEEL_METRIC_COUNTER && !(v >= 0)) {
        count_to(sh, sh->reg->rejected, f->name);
        return;
    }
    series_update(sh, f, s, v);
}

void keel_metrics_add(struct keel_metrics_shard *sh, struct keel_metrics_family *f, const struct keel_str *label_values,
                      double v)
{
    keel_metrics_update_h(sh, f, label_values, keel_metrics_hash(label_values, f->n_labels), v);
}

void keel_metrics_set(struct keel_metrics_shard *sh, struct keel_metrics_family *f, const struct keel_str *label_values,
                      double v)
{
    keel_metrics_update_h(sh, f, label_values, keel_metrics_hash(label_values, f->n_labels), v);
}

void keel_metrics_observe(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                          const struct keel_str *label_values, double v)
{
    keel_metrics_update_h(sh, f, label_values, keel_metrics_hash(label_values, f->n_labels), v);
}

/* ---- expiry: series not updated for a while disappear (Mixer's metricsExpirationPolicy).
 * Only the owner thread removes series from its shard, so its own caches can be told
 * (the telemetry shard clears its series cache); the mutex keeps a concurrent scrape
 * from seeing the tables half rebuilt. */

void keel_metrics_shard_tick(struct keel_metrics_shard *sh, uint64_t now_ns)
{
    sh->now = now_ns;
}

size_t keel_metrics_shard_expire(struct keel_metrics_shard *sh, uint64_t max_age_ns)
{
    struct keel_metrics *reg = sh->reg;
    size_t removed = 0;
    sh->last_sweep = sh->now;
    pthread_mutex_lock(&sh->mu);
    /* A streamed scrape holds pointers to series between its chunks; expire at the next
     * sweep instead (an admin connection lives at most 10 s). Checked under sh->mu, which
     * the scrape takes after counting itself, so the two cannot interleave. */
    if (atomic_load_explicit(&reg->scrapes, memory_order_relaxed) > 0) {
        pthread_mutex_unlock(&sh->mu);
        return 0;
    }
    for (size_t id = 0; id < sh->n_tabs; id++) {
        struct keel_metrics_table *t = &sh->tabs[id];
        if (t->n_all == 0)
            continue;
        struct keel_metrics_family *f = reg->fams[id];
        if (f == reg->overflow || f == reg->rejected)
            continue; /* keel's own accounting stays */
        uint64_t own = atomic_load_explicit(&f->expiry_ns, memory_order_relaxed);
        uint64_t age = own ? own : max_age_ns;
        if (age == 0)
            continue;
        size_t kept = 0;
        for (size_t i = 0; i < t->n_all; i++) {
            struct keel_metrics_series *s = t->all[i];
            if (sh->now - s->touched <= age) {
                t->all[kept++] = s;
                continue;
            }
            free(s->buckets);
            free(s);
            atomic_fetch_sub_explicit(&f->n_series, 1, memory_order_relaxed);
            removed++;
        }
        if (kept == t->n_all)
            continue;
        t->n_all = t->n = kept;
        memset(t->slots, 0, t->cap * sizeof(*t->slots));
        for (size_t i = 0; i < kept; i++) {
            size_t j = t->all[i]->hash & (t->cap - 1);
            while (t->slots[j])
                j = (j + 1) & (t->cap - 1);
            t->slots[j] = t->all[i];
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return removed;
}

void keel_metrics_family_set_expiry(struct keel_metrics_family *f, uint64_t max_age_ns)
{
    atomic_store_explicit(&f->expiry_ns, max_age_ns, memory_order_relaxed);
}

uint64_t keel_metrics_shard_last_sweep(const struct keel_metrics_shard *sh)
{
    return sh->last_sweep;
}
