/* Zipkin v2 JSON: the parser of POST /api/v2/spans bodies (json-c underneath, then
 * Zipkin's model checked field by field) and the writer of spans for the query API. */
#ifndef KEEL_TRACING_ZIPKIN_JSON_H
#define KEEL_TRACING_ZIPKIN_JSON_H

#include "core/buf.h"
#include "tracing/store.h"

#include <stddef.h>

/* Bounds on one report, beyond which it is refused (a span is for humans to read). */
#define KEEL_ZIPKIN_MAX_DEPTH 8          /* JSON nesting: the model needs 4 */
#define KEEL_ZIPKIN_MAX_ANNOTATIONS 1024 /* per span */
#define KEEL_ZIPKIN_MAX_TAGS 1024        /* per span */

struct keel_zipkin_list {
    struct keel_zipkin_span **spans; /* packed, owned */
    size_t n, cap;
};

/* Parse a JSON array of spans. On success every span is in out (packed) and 0 returns.
 * On any error nothing is added, err holds a message naming the problem (the span index
 * and field, as Zipkin's messages do) and KEEL_EINVAL returns. */
int keel_zipkin_json_parse(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                           size_t errcap);
/* The same for Zipkin v1 JSON (binaryAnnotations, core annotations cs/cr/sr/ss/ms/mr),
 * converted to v2 spans as Zipkin converts them. */
int keel_zipkin_json_parse_v1(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                              size_t errcap);
/* Normalise a trace id as Zipkin does (lower-hex, 1..32 digits, padded to 16 or 32, a
 * 128-bit id with zero high bits shortened to 16). 0 or KEEL_EINVAL with err set. */
int keel_zipkin_trace_id(const char *s, size_t len, char out[33], char *err, size_t errcap);
void keel_zipkin_list_fini(struct keel_zipkin_list *l);

/* Append one span / a JSON array of spans, fields in Zipkin's order, absent ones left out. */
void keel_zipkin_json_write_span(struct keel_buf *out, const struct keel_zipkin_span *s);
void keel_zipkin_json_write_spans(struct keel_buf *out, struct keel_zipkin_span *const *s,
                                  size_t n);
/* The one JSON string escaper of the collector (core/json.c's). */
void keel_zipkin_json_str(struct keel_buf *out, const char *s);

#endif
