/* Zipkin v2 JSON in and out. json-c does the JSON (strict mode, UTF-8 checked, nesting
 * bounded); this file checks Zipkin's model field by field and normalises values the way
 * Zipkin's own decoder does, so the query API returns what Zipkin would. */
#include "tracing/zipkin_json.h"

#include "tracing/zipkin_json_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/json.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 2, 3))) int zj_fail(struct zj_ctx *c, const char *fmt, ...)
{
    int n = snprintf(c->err, c->errcap, "spans[%zu]: ", c->index);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < c->errcap)
        vsnprintf(c->err + n, c->errcap - (size_t)n, fmt, ap);
    va_end(ap);
    return KEEL_EINVAL;
}

/* ---- ids ---- */

static int hex_id(const char *field, const char *s, size_t len, size_t max, char *out,
                  char *err, size_t errcap)
{
    if (len == 0) {
        snprintf(err, errcap, "%s is empty", field);
        return KEEL_EINVAL;
    }
    if (len > max) {
        snprintf(err, errcap, "%s.length > %zu", field, max);
        return KEEL_EINVAL;
    }
    bool zero = true;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            snprintf(err, errcap, "%s %.*s should be lower-hex encoded with no prefix", field,
                     (int)len, s);
            return KEEL_EINVAL;
        }
        zero = zero && ch == '0';
    }
    if (zero) {
        snprintf(err, errcap, "%s is all zeros", field);
        return KEEL_EINVAL;
    }
    size_t width = len <= 16 ? 16 : 32;
    memset(out, '0', width - len);
    memcpy(out + width - len, s, len);
    out[width] = '\0';
    return 0;
}

int keel_zipkin_trace_id(const char *s, size_t len, char out[33], char *err, size_t errcap)
{
    int rc = hex_id("traceId", s, len, 32, out, err, errcap);
    /* a 128-bit id whose high half is zero is the 64-bit id (Zipkin's normalisation) */
    if (rc == 0 && strlen(out) == 32 && strspn(out, "0") >= 16)
        memmove(out, out + 16, 17);
    return rc;
}

int zj_id(struct zj_ctx *c, const char *field, json_object *v, size_t max, char *out)
{
    if (!json_object_is_type(v, json_type_string))
        return zj_fail(c, "%s must be a string", field);
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    char msg[200];
    int rc = max == 32 ? keel_zipkin_trace_id(s, len, out, msg, sizeof(msg))
                       : hex_id(field, s, len, max, out, msg, sizeof(msg));
    return rc < 0 ? zj_fail(c, "%s", msg) : 0;
}

/* ---- scalars ---- */

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
 * json-c checks raw bytes less strictly and turns \u escapes into bytes unchecked. */
bool zj_utf8_ok(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > len)
            return false;
        unsigned cp = n == 1 ? c : c & (0x7f >> n);
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const unsigned min[] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n;
    }
    return true;
}

int zj_text(struct zj_ctx *c, const char *field, json_object *v, const char **out)
{
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return zj_fail(c, "%s must be a string", field);
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    if (strlen(s) != len)
        return zj_fail(c, "%s contains a NUL character", field);
    if (!zj_utf8_ok((const unsigned char *)s, len))
        return zj_fail(c, "%s is not valid UTF-8", field);
    *out = len > 0 ? s : NULL; /* Zipkin: empty means absent */
    return 0;
}

int zj_integer(struct zj_ctx *c, const char *field, json_object *v, int64_t *out)
{
    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return zj_fail(c, "%s must be an integer", field);
    int64_t x = json_object_get_int64(v);
    /* json-c saturates what does not fit in 64 bits */
    if ((x == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX) || x == INT64_MIN)
        return zj_fail(c, "%s is out of range", field);
    if (x < 0)
        return zj_fail(c, "%s must not be negative", field);
    *out = x;
    return 0;
}

int zj_boolean(struct zj_ctx *c, const char *field, json_object *v, bool *out)
{
    *out = false;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return zj_fail(c, "%s must be a boolean", field);
    *out = json_object_get_boolean(v);
    return 0;
}

/* json-c gives null members as NULL objects: both mean absent. */
json_object *zj_member(json_object *o, const char *key)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* ---- compound fields ---- */

int zj_endpoint(struct zj_ctx *c, const char *field, json_object *v,
                    struct keel_zipkin_endpoint *e, bool *has)
{
    memset(e, 0, sizeof(*e));
    *has = false;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_object))
        return zj_fail(c, "%s must be an object", field);
    char f[64];
    int64_t port;
    snprintf(f, sizeof(f), "%s.serviceName", field);
    if (zj_text(c, f, zj_member(v, "serviceName"), &e->service) < 0)
        return KEEL_EINVAL;
    snprintf(f, sizeof(f), "%s.ipv4", field);
    if (zj_text(c, f, zj_member(v, "ipv4"), &e->ipv4) < 0)
        return KEEL_EINVAL;
    unsigned char bin[16];
    if (e->ipv4 != NULL && inet_pton(AF_INET, e->ipv4, bin) != 1)
        return zj_fail(c, "%s %s is not an IPv4 address", f, e->ipv4);
    snprintf(f, sizeof(f), "%s.ipv6", field);
    if (zj_text(c, f, zj_member(v, "ipv6"), &e->ipv6) < 0)
        return KEEL_EINVAL;
    if (e->ipv6 != NULL && inet_pton(AF_INET6, e->ipv6, bin) != 1)
        return zj_fail(c, "%s %s is not an IPv6 address", f, e->ipv6);
    snprintf(f, sizeof(f), "%s.port", field);
    if (zj_integer(c, f, zj_member(v, "port"), &port) < 0)
        return KEEL_EINVAL;
    if (port > 65535)
        return zj_fail(c, "invalid port %" PRId64 " in %s", port, field);
    e->port = (int)port;
    *has = e->service != NULL || e->ipv4 != NULL || e->ipv6 != NULL || e->port != 0;
    return 0;
}

struct scratch {
    struct keel_zipkin_annotation a[KEEL_ZIPKIN_MAX_ANNOTATIONS];
    struct keel_zipkin_tag t[KEEL_ZIPKIN_MAX_TAGS];
};

static int annotations(struct zj_ctx *c, json_object *v, struct keel_zipkin_span *s,
                       struct scratch *sc)
{
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return zj_fail(c, "annotations must be an array");
    size_t n = json_object_array_length(v);
    if (n > KEEL_ZIPKIN_MAX_ANNOTATIONS)
        return zj_fail(c, "more than %d annotations", KEEL_ZIPKIN_MAX_ANNOTATIONS);
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_array_get_idx(v, i);
        char f[64];
        if (!json_object_is_type(a, json_type_object))
            return zj_fail(c, "annotations[%zu] must be an object", i);
        snprintf(f, sizeof(f), "annotations[%zu].timestamp", i);
        if (zj_integer(c, f, zj_member(a, "timestamp"), &sc->a[i].timestamp) < 0)
            return KEEL_EINVAL;
        if (sc->a[i].timestamp == 0)
            return zj_fail(c, "incomplete annotation: %s is missing", f);
        snprintf(f, sizeof(f), "annotations[%zu].value", i);
        if (zj_text(c, f, zj_member(a, "value"), &sc->a[i].value) < 0)
            return KEEL_EINVAL;
        if (sc->a[i].value == NULL)
            return zj_fail(c, "incomplete annotation: %s is missing", f);
    }
    s->annotations = sc->a;
    s->n_annotations = n;
    return 0;
}

static int tags(struct zj_ctx *c, json_object *v, struct keel_zipkin_span *s, struct scratch *sc)
{
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_object))
        return zj_fail(c, "tags must be an object");
    size_t n = 0;
    json_object_object_foreach(v, key, val)
    {
        if (n == KEEL_ZIPKIN_MAX_TAGS)
            return zj_fail(c, "more than %d tags", KEEL_ZIPKIN_MAX_TAGS);
        if (key[0] == '\0')
            return zj_fail(c, "tags: empty key");
        if (val == NULL || !json_object_is_type(val, json_type_string))
            return zj_fail(c, "tags.%s must be a string", key);
        const char *sv = json_object_get_string(val);
        if (strlen(sv) != (size_t)json_object_get_string_len(val))
            return zj_fail(c, "tags.%s contains a NUL character", key);
        if (!zj_utf8_ok((const unsigned char *)key, strlen(key)) ||
            !zj_utf8_ok((const unsigned char *)sv, strlen(sv)))
            return zj_fail(c, "tags: a key or value is not valid UTF-8");
        sc->t[n].key = key;
        sc->t[n].value = sv; /* an empty value is kept: Zipkin keeps it */
        n++;
    }
    s->tags = sc->t;
    s->n_tags = n;
    return 0;
}

static int kind(struct zj_ctx *c, json_object *v, enum keel_zipkin_kind *k)
{
    *k = KEEL_ZIPKIN_KIND_NONE;
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return zj_fail(c, "kind must be a string");
    const char *s = json_object_get_string(v);
    for (int i = KEEL_ZIPKIN_KIND_CLIENT; i <= KEEL_ZIPKIN_KIND_CONSUMER; i++)
        if (!strcmp(s, keel_zipkin_kind_name((enum keel_zipkin_kind)i))) {
            *k = (enum keel_zipkin_kind)i;
            return 0;
        }
    return zj_fail(c, "kind %s is not one of CLIENT, SERVER, PRODUCER, CONSUMER", s);
}

int zj_ids(struct zj_ctx *c, json_object *o, struct keel_zipkin_span *s)
{
    json_object *v;
    if ((v = zj_member(o, "traceId")) == NULL)
        return zj_fail(c, "traceId is required");
    if (zj_id(c, "traceId", v, 32, s->trace_id) < 0)
        return KEEL_EINVAL;
    if ((v = zj_member(o, "id")) == NULL)
        return zj_fail(c, "id is required");
    if (zj_id(c, "id", v, 16, s->id) < 0)
        return KEEL_EINVAL;
    if ((v = zj_member(o, "parentId")) != NULL) {
        /* Zipkin: an all-zero parent id means root */
        if (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0 &&
            strspn(json_object_get_string(v), "0") == (size_t)json_object_get_string_len(v)) {
            if (json_object_get_string_len(v) > 16)
                return zj_fail(c, "parentId.length > 16");
        } else if (zj_id(c, "parentId", v, 16, s->parent_id) < 0) {
            return KEEL_EINVAL;
        }
    }
    return 0;
}

void zj_push(struct keel_zipkin_list *out, const struct keel_zipkin_span *s)
{
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 16;
        out->spans = keel_realloc(out->spans, out->cap * sizeof(*out->spans));
    }
    out->spans[out->n++] = keel_zipkin_span_pack(s);
}

static int span(struct zj_ctx *c, json_object *o, struct keel_zipkin_list *out)
{
    struct keel_zipkin_span s;
    struct scratch *sc = c->scratch;
    memset(&s, 0, sizeof(s));
    if (!json_object_is_type(o, json_type_object))
        return zj_fail(c, "a span must be an object");
    if (zj_ids(c, o, &s) < 0 || kind(c, zj_member(o, "kind"), &s.kind) < 0 ||
        zj_text(c, "name", zj_member(o, "name"), &s.name) < 0 ||
        zj_integer(c, "timestamp", zj_member(o, "timestamp"), &s.timestamp) < 0 ||
        zj_integer(c, "duration", zj_member(o, "duration"), &s.duration) < 0 ||
        zj_boolean(c, "debug", zj_member(o, "debug"), &s.debug) < 0 ||
        zj_boolean(c, "shared", zj_member(o, "shared"), &s.shared) < 0 ||
        zj_endpoint(c, "localEndpoint", zj_member(o, "localEndpoint"), &s.local, &s.has_local) < 0 ||
        zj_endpoint(c, "remoteEndpoint", zj_member(o, "remoteEndpoint"), &s.remote, &s.has_remote) < 0 ||
        annotations(c, zj_member(o, "annotations"), &s, sc) < 0 ||
        tags(c, zj_member(o, "tags"), &s, sc) < 0)
        return KEEL_EINVAL;
    zj_push(out, &s);
    return 0;
}

void keel_zipkin_list_fini(struct keel_zipkin_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->spans[i]);
    free(l->spans);
    memset(l, 0, sizeof(*l));
}

int zj_parse_list(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                  size_t errcap, zj_span_fn one)
{
    if (len > INT32_MAX) {
        snprintf(err, errcap, "body too large");
        return KEEL_EINVAL;
    }
    struct json_tokener *tok = json_tokener_new_ex(KEEL_ZIPKIN_MAX_DEPTH);
    if (tok == NULL)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, p, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (root == NULL || je != json_tokener_success) {
        json_object_put(root);
        if (je == json_tokener_continue || je == json_tokener_success)
            snprintf(err, errcap, len == 0 ? "empty body" : "malformed JSON: unexpected end of input");
        else
            snprintf(err, errcap, "malformed JSON at byte %zu: %s", end, json_tokener_error_desc(je));
        return KEEL_EINVAL;
    }
    if (!json_object_is_type(root, json_type_array)) {
        json_object_put(root);
        snprintf(err, errcap, "expected a JSON array of spans");
        return KEEL_EINVAL;
    }
    size_t n = json_object_array_length(root), first = out->n;
    struct zj_ctx c = { err, errcap, 0, keel_alloc(sizeof(struct scratch)) };
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        c.index = i;
        rc = one(&c, json_object_array_get_idx(root, i), out);
    }
    free(c.scratch);
    json_object_put(root);
    if (rc < 0) {
        while (out->n > first)
            free(out->spans[--out->n]);
        if (out->n == 0) { /* callers drop an empty list on error without a fini */
            free(out->spans);
            out->spans = NULL;
            out->cap = 0;
        }
    }
    return rc;
}

int keel_zipkin_json_parse(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                           size_t errcap)
{
    return zj_parse_list(p, len, out, err, errcap, span);
}

/* ---- writer ---- */

void keel_zipkin_json_str(struct keel_buf *out, const char *s)
{
    keel_json_str(out, s);
}

static void field_str(struct keel_buf *out, bool *first, const char *key, const char *v)
{
    if (v == NULL)
        return;
    keel_buf_printf(out, "%s\"%s\":", *first ? "" : ",", key);
    keel_zipkin_json_str(out, v);
    *first = false;
}

static void field_int(struct keel_buf *out, bool *first, const char *key, int64_t v)
{
    if (v == 0)
        return;
    keel_buf_printf(out, "%s\"%s\":%" PRId64, *first ? "" : ",", key, v);
    *first = false;
}

static void write_endpoint(struct keel_buf *out, const char *key,
                           const struct keel_zipkin_endpoint *e)
{
    bool first = true;
    keel_buf_printf(out, ",\"%s\":{", key);
    field_str(out, &first, "serviceName", e->service);
    field_str(out, &first, "ipv4", e->ipv4);
    field_str(out, &first, "ipv6", e->ipv6);
    field_int(out, &first, "port", e->port);
    keel_buf_append_str(out, "}");
}

void keel_zipkin_json_write_span(struct keel_buf *out, const struct keel_zipkin_span *s)
{
    bool first = true;
    keel_buf_append_str(out, "{");
    field_str(out, &first, "traceId", s->trace_id);
    field_str(out, &first, "parentId", s->parent_id[0] ? s->parent_id : NULL);
    field_str(out, &first, "id", s->id);
    field_str(out, &first, "kind", keel_zipkin_kind_name(s->kind));
    field_str(out, &first, "name", s->name);
    field_int(out, &first, "timestamp", s->timestamp);
    field_int(out, &first, "duration", s->duration);
    if (s->has_local)
        write_endpoint(out, "localEndpoint", &s->local);
    if (s->has_remote)
        write_endpoint(out, "remoteEndpoint", &s->remote);
    if (s->n_annotations > 0) {
        keel_buf_append_str(out, ",\"annotations\":[");
        for (size_t i = 0; i < s->n_annotations; i++) {
            keel_buf_printf(out, "%s{\"timestamp\":%" PRId64 ",\"value\":", i ? "," : "",
                            s->annotations[i].timestamp);
            keel_zipkin_json_str(out, s->annotations[i].value);
            keel_buf_append_str(out, "}");
        }
        keel_buf_append_str(out, "]");
    }
    if (s->n_tags > 0) {
        keel_buf_append_str(out, ",\"tags\":{");
        for (size_t i = 0; i < s->n_tags; i++) {
            if (i)
                keel_buf_append_str(out, ",");
            keel_zipkin_json_str(out, s->tags[i].key);
            keel_buf_append_str(out, ":");
            keel_zipkin_json_str(out, s->tags[i].value);
        }
        keel_buf_append_str(out, "}");
    }
    if (s->debug)
        keel_buf_append_str(out, ",\"debug\":true");
    if (s->shared)
        keel_buf_append_str(out, ",\"shared\":true");
    keel_buf_append_str(out, "}");
}

void keel_zipkin_json_write_spans(struct keel_buf *out, struct keel_zipkin_span *const *s, size_t n)
{
    keel_buf_append_str(out, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            keel_buf_append_str(out, ",");
        keel_zipkin_json_write_span(out, s[i]);
    }
    keel_buf_append_str(out, "]");
}
