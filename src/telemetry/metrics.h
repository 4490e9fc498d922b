/* Metric registry: counters, gauges and histograms, sharded per worker, merged at scrape
 * into Prometheus text format 0.0.4.
 *
 * The registry is process-wide and outlives config generations, so a reload never resets
 * a counter. A family is (name, type, help, label names, bucket bounds). Asking again for
 * the same definition returns the same family; asking for a name with another type or
 * other buckets is a conflict (NULL). Asking for a name with the same type and buckets but
 * other label names returns a *variant*: a separate family printed under the same
 * HELP/TYPE group (a Telemetry reload that adds a tag creates one; old series keep
 * their counts).
 *
 * Hot path (STYLE.md habit 9): each worker owns a shard; add/set/observe touch only that
 * shard — no lock and no atomic read-modify-write. Values are single-writer and are
 * stored with relaxed atomic stores so the scraping thread reads whole numbers. Finding a
 * series is a hash lookup in the shard; only a new series allocates, and its insertion is
 * guarded by the shard's mutex (which a scrape takes while it walks the shard).
 *
 * Cardinality guard: a family accepts at most `limit` series per shard-wide count (default
 * KEEL_METRICS_DEFAULT_SERIES_LIMIT; a label set seen by two workers counts twice). Past it
 * new series are not created and keel_metrics_series_overflow_total{metric="..."} counts
 * the dropped updates. */
#ifndef KEEL_TELEMETRY_METRICS_H
#define KEEL_TELEMETRY_METRICS_H

#include "core/buf.h"
#include "core/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEL_METRICS_DEFAULT_SERIES_LIMIT 10000
#define KEEL_METRICS_MAX_LABELS 64
#define KEEL_METRICS_MAX_BUCKETS 1024

enum keel_metric_type { KEEL_METRIC_COUNTER, KEEL_METRIC_GAUGE, KEEL_METRIC_HISTOGRAM };

struct keel_metrics;
struct keel_metrics_family;
struct keel_metrics_shard;

struct keel_metrics *keel_metrics_new(void);
/* Frees the registry, its families and every shard. No shard may be in use. */
void keel_metrics_free(struct keel_metrics *reg);
/* Series limit for families created after this call (0 = unlimited). */
void keel_metrics_set_series_limit(struct keel_metrics *reg, size_t limit);

/* Define (or find) a family. name and label names must match the Prometheus regexes
 * ([a-zA-Z_:][a-zA-Z0-9_:]*, [a-zA-Z_][a-zA-Z0-9_]*, no "le" for histograms); bounds
 * strictly increasing, histograms only (NULL/0 for the others). Labels are printed in
 * the order given. NULL on an invalid definition or a conflict, with a message in err
 * (err may be NULL). Thread-safe; strings are copied. */
struct keel_metrics_family *keel_metrics_family(struct keel_metrics *reg, const char *name, enum keel_metric_type type,
                                                const char *help, const char *const *label_names, size_t n_labels,
                                                const double *bounds, size_t n_bounds, char *err, size_t errlen);
size_t keel_metrics_family_n_labels(const struct keel_metrics_family *f);
const char *keel_metrics_family_name(const struct keel_metrics_family *f);

/* A worker's shard. It belongs to the registry (freed by keel_metrics_free): counts of a
 * worker that stops keep being exported. Create it on any thread, use it on one. */
struct keel_metrics_shard *keel_metrics_shard_new(struct keel_metrics *reg);

/* Hash of a label-value tuple; pass it to the *_h variants to hash once for several
 * families sharing the same values. */
uint64_t keel_metrics_hash(const struct keel_str *values, size_t n);
/* Equality of two label-value tuples of n values (bytewise). */
bool keel_metrics_values_eq(const struct keel_str *a, const struct keel_str *b, size_t n);

/* label_values: exactly keel_metrics_family_n_labels(f) slices (copied when a series is
 * created). Counter: v >= 0 added (negative/NaN rejected and counted). Gauge: set.
 * Histogram: observed. */
void keel_metrics_add(struct keel_metrics_shard *sh, struct keel_metrics_family *f, const struct keel_str *label_values,
                      double v);
void keel_metrics_set(struct keel_metrics_shard *sh, struct keel_metrics_family *f, const struct keel_str *label_values,
                      double v);
void keel_metrics_observe(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                          const struct keel_str *label_values, double v);
/* The same with a precomputed keel_metrics_hash(label_values, n). */
void keel_metrics_update_h(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                           const struct keel_str *label_values, uint64_t hash, double v);

/* Series handles, for callers that update several families sharing one label tuple
 * (the standard HTTP metrics): find each series once, keep the handle, update it
 * directly. A handle stays valid as long as the registry (series are never freed) and
 * belongs to sh. find creates the series if new; NULL when f is at its series limit (the
 * overflow is counted, as by an update). series_update is keel_metrics_update_h without
 * the lookup (same checks, same effect); values are the series' n_labels label values. */
struct keel_metrics_series;
struct keel_metrics_series *keel_metrics_series_find(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                                                     const struct keel_str *label_values, uint64_t hash);
const struct keel_str *keel_metrics_series_values(const struct keel_metrics_series *s);
void keel_metrics_series_update(struct keel_metrics_shard *sh, struct keel_metrics_family *f,
                                struct keel_metrics_series *s, double v);

/* Append every family with at least one series, merged over all shards, in text format
 * 0.0.4: families sorted by name, `# HELP` then `# TYPE`, series sorted by label values,
 * histogram buckets cumulative with +Inf, _sum, _count; numbers in Go's shortest %g.
 * Thread-safe against concurrent updates. Content-Type: KEEL_METRICS_CONTENT_TYPE. */
void keel_metrics_scrape(struct keel_metrics *reg, struct keel_buf *out);
/* The same text in chunks, with memory bounded by the chunk and one family's series
 * (never the whole text): begin, then next until it returns true (each call appends until
 * out holds at least `want` bytes, or the end), then end. Any thread; series do not
 * expire while a scrape is open. */
struct keel_metrics_scrape;
struct keel_metrics_scrape *keel_metrics_scrape_begin(struct keel_metrics *reg);
bool keel_metrics_scrape_next(struct keel_metrics_scrape *it, struct keel_buf *out, size_t want);
void keel_metrics_scrape_end(struct keel_metrics_scrape *it);
/* Prometheus text escaping: label values (quote = true) or HELP text; invalid UTF-8 as
 * U+FFFD. */
void keel_metrics_escape(struct keel_buf *out, const char *s, size_t len, bool quote);

/* Expiry, on the shard's own thread: tick sets the shard's coarse clock (ns, any
 * monotonic origin) that updates stamp their series with; expire frees the series not
 * updated for max_age_ns and returns how many. */
void keel_metrics_shard_tick(struct keel_metrics_shard *sh, uint64_t now_ns);
size_t keel_metrics_shard_expire(struct keel_metrics_shard *sh, uint64_t max_age_ns);
uint64_t keel_metrics_shard_last_sweep(const struct keel_metrics_shard *sh);
/* A family's own max age (Mixer prometheus handler's metricsExpiryDuration): at every
 * sweep its series not updated for max_age_ns go, whatever the sweep's own max age (a
 * sweep with max_age_ns 0 expires only such families). 0 = follow the sweep. */
void keel_metrics_family_set_expiry(struct keel_metrics_family *f, uint64_t max_age_ns);
#define KEEL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Merged value of one series (tests and tools): counter/gauge value, histogram count.
 * 0 with *out set; -1 when no shard has that series. */
int keel_metrics_get(struct keel_metrics *reg, const char *name, const struct keel_str *label_values, size_t n,
                     double *out);

/* Go strconv.FormatFloat(v, 'g', -1, 64), with NaN/+Inf/-Inf as Prometheus spells them.
 * Returns the length written (dst of at least 32 bytes; NUL-terminated). */
size_t keel_metrics_fmt_float(double v, char *dst);

#endif
