/* What the Zipkin JSON readers (v2: zipkin_json.c, v1: zipkin_json_v1.c) share: the
 * checks of ids, strings, numbers and endpoints, and the list parser around them. */
#ifndef KEEL_TRACING_ZIPKIN_JSON_INT_H
#define KEEL_TRACING_ZIPKIN_JSON_INT_H

#include "tracing/zipkin_json.h"

#include <json-c/json.h>
#include <stdbool.h>

struct zj_ctx {
    char *err;
    size_t errcap;
    size_t index;  /* of the span being read, for messages */
    void *scratch; /* v2 reader's arrays */
};

/* Format "spans[index]: ..." into the error; returns KEEL_EINVAL. */
__attribute__((format(printf, 2, 3))) int zj_fail(struct zj_ctx *c, const char *fmt, ...);
/* A lower-hex id of at most max digits (32: a trace id), normalised into out. */
int zj_id(struct zj_ctx *c, const char *field, json_object *v, size_t max, char *out);
/* traceId, id and parentId of a span object. */
int zj_ids(struct zj_ctx *c, json_object *o, struct keel_zipkin_span *s);
bool zj_utf8_ok(const unsigned char *s, size_t len);
/* A string (NULL v or "" = absent), a non-negative 64-bit integer (absent = 0), a bool. */
int zj_text(struct zj_ctx *c, const char *field, json_object *v, const char **out);
int zj_integer(struct zj_ctx *c, const char *field, json_object *v, int64_t *out);
int zj_boolean(struct zj_ctx *c, const char *field, json_object *v, bool *out);
json_object *zj_member(json_object *o, const char *key);
int zj_endpoint(struct zj_ctx *c, const char *field, json_object *v,
                struct keel_zipkin_endpoint *e, bool *has);
/* Pack s and append it. */
void zj_push(struct keel_zipkin_list *out, const struct keel_zipkin_span *s);

/* Read one span object into out (any number of spans); 0 or KEEL_EINVAL via zj_fail. */
typedef int (*zj_span_fn)(struct zj_ctx *c, json_object *o, struct keel_zipkin_list *out);
/* Tokenise a JSON array (bounded depth, UTF-8 checked) and read each element with one;
 * all or nothing. */
int zj_parse_list(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                  size_t errcap, zj_span_fn one);

#endif
