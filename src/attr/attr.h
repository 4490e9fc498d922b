/* Attributes: the Istio vocabulary interned to small ids (attr.def), typed values that
 * do not own their bytes, and the bag a proxy fills per request without copying.
 * Reference: docs/TELEMETRY.md and Istio's attribute vocabulary. */
#ifndef KEEL_ATTR_ATTR_H
#define KEEL_ATTR_ATTR_H

#include "core/buf.h"
#include "core/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEL_VALUE_TYPES(X) \
    X(NONE, "NONE")         \
    X(STRING, "STRING")     \
    X(INT64, "INT64")       \
    X(DOUBLE, "DOUBLE")     \
    X(BOOL, "BOOL")         \
    X(DURATION, "DURATION") \
    X(TIMESTAMP, "TIMESTAMP") \
    X(IP_ADDRESS, "IP_ADDRESS") \
    X(BYTES, "BYTES")       \
    X(STRING_MAP, "STRING_MAP") \
    X(DNS_NAME, "DNS_NAME") \
    X(EMAIL_ADDRESS, "EMAIL_ADDRESS") \
    X(URI, "URI")           \
    X(UINT64, "UINT64")     \
    X(NULL_TYPE, "NULL_TYPE") \
    X(LIST, "LIST")         \
    X(MAP, "MAP")           \
    X(TYPE, "TYPE")         \
    X(DYN, "DYN")           \
    X(ERROR, "ERROR")

enum keel_value_type {
#define X(t, s) KEEL_VALUE_##t,
    KEEL_VALUE_TYPES(X)
#undef X
    KEEL_VALUE__COUNT
};

enum keel_attr_id {
#define X(id, name, type) KEEL_ATTR_##id,
#include "attr/attr.def"
#undef X
    KEEL_ATTR__COUNT
};

struct keel_str_pair {
    struct keel_str k;
    struct keel_str v;
};

/* Timestamps: seconds since the Unix epoch (UTC) plus nanoseconds in [0, 1e9). */
struct keel_time {
    int64_t sec;
    int32_t nsec;
};

/* A typed value. Strings, bytes and maps are slices owned by someone else (the request
 * buffers, the compiled expression's constants, a per-thread scratch area). */
struct keel_value {
    enum keel_value_type type;
    union {
        struct keel_str s; /* STRING, BYTES, DNS_NAME, EMAIL_ADDRESS, URI; ERROR message */
        int64_t i;         /* INT64; DURATION in nanoseconds */
        uint64_t u;        /* UINT64 */
        double d;
        bool b;
        struct keel_time t;
        struct {
            uint8_t a[16];
            uint8_t len; /* 4 or 16 */
        } ip;
        struct {
            const struct keel_str_pair *kv;
            size_t n;
        } map;
        /* LIST: n values; MAP: n entries, v[2i] key and v[2i+1] value (CEL only; built
         * by the expression VM in its per-thread arena) */
        struct {
            const struct keel_value *v;
            size_t n;
        } list;
        /* TYPE: i is the enum keel_value_type the value denotes */
        struct {
            const char *fmt; /* static printf format taking "%.*s" (arglen, arg) */
            const char *arg;
            int arglen;
        } err; /* ERROR: only inside the expression VM */
    } u;
};

/* Fixed-size, indexed by id; presence in a bitset. Filling it copies no bytes. */
struct keel_attr_bag {
    uint64_t present[(KEEL_ATTR__COUNT + 63) / 64];
    struct keel_value v[KEEL_ATTR__COUNT];
};

/* Vocabulary (config time). lookup returns the id or -1. */
int keel_attr_lookup(const char *name, size_t len);
const char *keel_attr_name(int id);
enum keel_value_type keel_attr_type(int id);
/* Closest vocabulary name to a misspelt one (edit distance <= 2), or NULL. */
const char *keel_attr_suggest(const char *name, size_t len);
const char *keel_value_type_name(enum keel_value_type t);

static inline void keel_attr_bag_clear(struct keel_attr_bag *bag)
{
    memset(bag->present, 0, sizeof(bag->present));
}
static inline bool keel_attr_bag_has(const struct keel_attr_bag *bag, int id)
{
    return (bag->present[id >> 6] >> (id & 63)) & 1;
}
static inline const struct keel_value *keel_attr_bag_get(const struct keel_attr_bag *bag, int id)
{
    return keel_attr_bag_has(bag, id) ? &bag->v[id] : NULL;
}
static inline void keel_attr_bag_set(struct keel_attr_bag *bag, int id, const struct keel_value *v)
{
    bag->v[id] = *v;
    bag->present[id >> 6] |= (uint64_t)1 << (id & 63);
}
static inline void keel_attr_bag_del(struct keel_attr_bag *bag, int id)
{
    bag->present[id >> 6] &= ~((uint64_t)1 << (id & 63));
}

/* Convenience constructors. */
static inline struct keel_value keel_value_str(const char *p, size_t len)
{
    struct keel_value v = { .type = KEEL_VALUE_STRING };
    v.u.s.p = p;
    v.u.s.len = len;
    return v;
}
static inline struct keel_value keel_value_int(int64_t i)
{
    struct keel_value v = { .type = KEEL_VALUE_INT64 };
    v.u.i = i;
    return v;
}
static inline struct keel_value keel_value_bool(bool b)
{
    struct keel_value v = { .type = KEEL_VALUE_BOOL };
    v.u.b = b;
    return v;
}
static inline struct keel_value keel_value_duration(int64_t ns)
{
    struct keel_value v = { .type = KEEL_VALUE_DURATION };
    v.u.i = ns;
    return v;
}
static inline struct keel_value keel_value_map(const struct keel_str_pair *kv, size_t n)
{
    struct keel_value v = { .type = KEEL_VALUE_STRING_MAP };
    v.u.map.kv = kv;
    v.u.map.n = n;
    return v;
}

/* Map lookup: the value slice, or NULL when the key is missing. */
const struct keel_str *keel_value_map_get(const struct keel_value *m, const char *k, size_t klen);

/* Equality as the expression language defines it (IPv4 == IPv4-mapped IPv6, timestamps
 * by instant, DNS names case-insensitively, ...). Types must match. */
bool keel_value_equal(const struct keel_value *a, const struct keel_value *b);

/* Mixer "Stringify" text (attributes.md §2): Go durations ("157.830203ms"), RFC 3339
 * timestamps with exactly 6 fractional digits, doubles as Go 'f' -1, maps k=v&k2=v2. */
void keel_value_format(const struct keel_value *v, struct keel_buf *out);
/* One JSON value: strings quoted, numbers, bools, durations/timestamps/IPs as strings,
 * maps as objects (keys sorted). */
void keel_value_format_json(const struct keel_value *v, struct keel_buf *out);

/* Text forms. Each returns 0 or KEEL_EINVAL; none allocates. */
int keel_value_parse_duration(const char *s, size_t len, int64_t *ns);
int keel_value_parse_timestamp(const char *s, size_t len, struct keel_time *t);
int keel_value_parse_ip(const char *s, size_t len, struct keel_value *out);
int keel_value_parse_int(const char *s, size_t len, int64_t *out);
int keel_value_parse_double(const char *s, size_t len, double *out);
/* Parse text by type (the scalar types; STRING-like types keep the slice). */
int keel_value_parse(enum keel_value_type t, const char *s, size_t len, struct keel_value *out);

/* Writers used by format and by the expression VM; they return bytes written or
 * the would-be length if cap is too small (like snprintf, without the NUL). */
size_t keel_value_fmt_duration(int64_t ns, char *dst, size_t cap);
size_t keel_value_fmt_timestamp(struct keel_time t, char *dst, size_t cap);
size_t keel_value_fmt_double(double d, char *dst, size_t cap);
size_t keel_value_fmt_ip(const struct keel_value *v, char *dst, size_t cap);

#endif
