/* The trace collector's model and store: Zipkin v2 spans as compact records (one
 * allocation each), and a bounded in-memory store of traces that answers Zipkin's query
 * API. Single-threaded: the collector's event loop owns the store. */
#ifndef KEEL_TRACING_STORE_H
#define KEEL_TRACING_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum keel_zipkin_kind {
    KEEL_ZIPKIN_KIND_NONE,
    KEEL_ZIPKIN_KIND_CLIENT,
    KEEL_ZIPKIN_KIND_SERVER,
    KEEL_ZIPKIN_KIND_PRODUCER,
    KEEL_ZIPKIN_KIND_CONSUMER,
};

/* Absent fields are NULL strings and a 0 port, as Zipkin omits them. */
struct keel_zipkin_endpoint {
    const char *service; /* lower-cased */
    const char *ipv4;
    const char *ipv6;
    int port;
};

struct keel_zipkin_annotation {
    int64_t timestamp;
    const char *value;
};

struct keel_zipkin_tag {
    const char *key;
    const char *value;
};

/* One span, normalised as Zipkin normalises it: ids lower-hex and padded, name and service
 * names lower-cased, empty strings and zero numbers absent, annotations sorted by
 * (timestamp, value) without duplicates, tags sorted by key. A packed span is one block:
 * every pointer points inside it, and free() releases it. */
struct keel_zipkin_span {
    char trace_id[33];
    char id[17];
    char parent_id[17]; /* "" = root */
    enum keel_zipkin_kind kind;
    bool debug, shared;
    bool has_local, has_remote;
    const char *name;
    int64_t timestamp; /* epoch µs, 0 = absent */
    int64_t duration;  /* µs, 0 = absent */
    struct keel_zipkin_endpoint local, remote;
    struct keel_zipkin_annotation *annotations;
    size_t n_annotations;
    struct keel_zipkin_tag *tags;
    size_t n_tags;
    size_t bytes; /* size of the block, for the store's byte cap */
};

const char *keel_zipkin_kind_name(enum keel_zipkin_kind k); /* NULL for NONE */

/* Copy s (whose pointers may point anywhere) into one block; sorts and dedups the
 * annotations and tags and lower-cases the name and service names on the way. */
struct keel_zipkin_span *keel_zipkin_span_pack(const struct keel_zipkin_span *s);
/* Zipkin's merge of two reports of the same span: fields absent in `early` are taken
 * from `late`, tags of `late` override, annotations are united, flags or-ed. */
struct keel_zipkin_span *keel_zipkin_span_merge(const struct keel_zipkin_span *early,
                                                const struct keel_zipkin_span *late);

/* ---- the store ---- */

struct keel_trace {
    char id[33];
    struct keel_zipkin_span **spans;
    size_t n_spans, cap_spans;
    int64_t timestamp; /* earliest span timestamp (µs), 0 = none */
    size_t bytes;
    struct keel_trace *older, *newer; /* arrival order: the oldest is evicted first */
    struct keel_trace *hnext;
};

struct keel_trace_store_limits {
    size_t max_spans;
    size_t max_bytes;
    size_t max_trace_spans; /* one trace cannot hold more; more are rejected */
};

struct keel_trace_store_stats {
    uint64_t accepted, rejected, evicted, merged;
    size_t traces, spans, bytes;
};

struct keel_trace_store;

struct keel_trace_store *keel_trace_store_new(const struct keel_trace_store_limits *lim);
void keel_trace_store_free(struct keel_trace_store *st);
/* Take ownership of a packed span. Returns 0, or KEEL_ELIMIT when its trace is full (the
 * span is freed and counted rejected). May evict the oldest traces. */
int keel_trace_store_add(struct keel_trace_store *st, struct keel_zipkin_span *s);
/* Spans refused before the store saw them (malformed reports). */
void keel_trace_store_count_rejected(struct keel_trace_store *st, uint64_t n);
void keel_trace_store_stats(const struct keel_trace_store *st, struct keel_trace_store_stats *out);

struct keel_trace *keel_trace_store_get(struct keel_trace_store *st, const char *trace_id);

/* Sorted distinct names; *n set; the array is the caller's (free it), the strings are the
 * store's, valid until the next add. */
const char **keel_trace_store_services(struct keel_trace_store *st, size_t *n);
const char **keel_trace_store_span_names(struct keel_trace_store *st, const char *service,
                                         size_t *n);
const char **keel_trace_store_remote_services(struct keel_trace_store *st, const char *service,
                                              size_t *n);

#define KEEL_TRACE_QUERY_MAX_TERMS 16

/* Zipkin's QueryRequest. Strings NULL = no filter; durations 0 = no bound. */
struct keel_trace_query {
    const char *service;
    const char *remote_service;
    const char *span_name;
    struct {
        const char *key;
        const char *value; /* NULL: the key alone (a tag key or an annotation value) */
    } terms[KEEL_TRACE_QUERY_MAX_TERMS];
    size_t n_terms;
    int64_t min_duration, max_duration; /* µs */
    int64_t end_ts, lookback;           /* ms */
    size_t limit;
};

/* Matching traces, newest first, at most q->limit; caller frees the array. */
struct keel_trace **keel_trace_store_query(struct keel_trace_store *st,
                                           const struct keel_trace_query *q, size_t *n);

struct keel_dependency_link {
    const char *parent, *child;
    uint64_t calls, errors;
};

/* Links parent service -> child service over the traces in [end_ts - lookback, end_ts]
 * (ms), as Zipkin's DependencyLinker derives them; sorted by (parent, child). */
struct keel_dependency_link *keel_trace_store_dependencies(struct keel_trace_store *st,
                                                           int64_t end_ts, int64_t lookback,
                                                           size_t *n);

#endif
