/* ReportRequest -> attribute bags (istio/api mixer/v1 attributes.proto, mixer.proto).
 *
 * Words: a non-negative index names word i of the global dictionary; a negative index
 * -k names word k-1 of the set's own `words`, or of the request's `default_words` when
 * the set carries none. Sets: DELTA_ENCODING (0, the default) applies each set on top of
 * the bag left by the previous one; INDEPENDENT_ENCODING starts each from empty.
 *
 * protobuf-c unpacks into a bump arena owned by the decoder, reset per request: no
 * malloc per field once warm, and a hostile message's expansion is capped (ARENA_MAX).
 * The whole request is checked before any bag goes out, so a bad one has no effect. */
#include "mixer/mixer.h"

#include "core/alloc.h"
#include "core/err.h"

#include "mixer/v1/mixer.pb-c.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK (256u << 10)
#define ARENA_MAX (256u << 20) /* bytes of unpacked state for one request */

struct chunk {
    struct chunk *next;
    size_t cap, used;
    max_align_t data[];
};

struct keel_mixer_decoder {
    struct chunk *chunks; /* first one kept across requests */
    size_t total;
    int16_t *global_attr; /* global word -> attr id + 1, 0 = not an attribute */
    struct keel_attr_bag bag;
    ProtobufCAllocator alloc;
};

static void *arena_alloc(void *arg, size_t n)
{
    struct keel_mixer_decoder *d = arg;
    n = (n + 15) & ~(size_t)15;
    struct chunk *c = d->chunks;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        if (d->total + cap > ARENA_MAX)
            return NULL; /* protobuf-c fails the unpack */
        c = keel_alloc(sizeof(*c) + cap);
        c->cap = cap;
        c->used = 0;
        c->next = d->chunks;
        d->chunks = c;
        d->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(void *arg, void *p) {}

/* Keep the oldest chunk (the common case fits in it), free the rest. */
static void arena_reset(struct keel_mixer_decoder *d)
{
    struct chunk *c = d->chunks;
    while (c != NULL && c->next != NULL) {
        struct chunk *next = c->next;
        d->total -= c->cap;
        free(c);
        c = next;
    }
    d->chunks = c;
    if (c)
        c->used = 0;
}

struct keel_mixer_decoder *keel_mixer_decoder_new(void)
{
    struct keel_mixer_decoder *d = keel_calloc(1, sizeof(*d));
    size_t n = keel_mixer_global_words();
    d->global_attr = keel_calloc(n, sizeof(*d->global_attr));
    for (size_t i = 0; i < n; i++) {
        struct keel_str w = keel_mixer_global_word(i);
        d->global_attr[i] = (int16_t)(keel_mixer_attr_id(w.p, w.len) + 1);
    }
    d->alloc = (ProtobufCAllocator){ arena_alloc, arena_free, d };
    return d;
}

void keel_mixer_decoder_free(struct keel_mixer_decoder *d)
{
    if (!d)
        return;
    arena_reset(d);
    free(d->chunks);
    free(d->global_attr);
    free(d);
}

/* the dictionaries of one set; for the request's default_words, each word's length and
 * attribute id are worked out once per request (lens/attrs), not per use */
struct dict {
    char **words;
    size_t n_words;
    size_t n_global;
    const uint32_t *lens;  /* NULL: strlen per use */
    const int16_t *attrs;  /* attribute id + 1 */
};

static bool index_ok(const struct dict *dc, int32_t i)
{
    return i >= 0 ? (size_t)i < dc->n_global : (size_t)(-(int64_t)i) <= dc->n_words;
}

static struct keel_str word(const struct dict *dc, int32_t i)
{
    if (i >= 0)
        return keel_mixer_global_word((size_t)i);
    size_t k = (size_t)(-(int64_t)i - 1);
    const char *w = dc->words[k];
    return (struct keel_str){ w, dc->lens ? dc->lens[k] : strlen(w) };
}

static int attr_of(const struct keel_mixer_decoder *d, const struct dict *dc, int32_t i)
{
    if (i >= 0)
        return d->global_attr[i] - 1;
    if (dc->attrs)
        return dc->attrs[-(int64_t)i - 1] - 1;
    struct keel_str w = word(dc, i);
    return keel_mixer_attr_id(w.p, w.len);
}

#define CHECK_KEYS(arr, n)                            \
    for (size_t k = 0; k < (n); k++)                  \
        if (!index_ok(dc, (arr)[k]->key))             \
            return "attribute name index out of range";

static const char *check_set(const Istio__Mixer__V1__CompressedAttributes *ca, const struct dict *dc)
{
    CHECK_KEYS(ca->strings, ca->n_strings)
    CHECK_KEYS(ca->int64s, ca->n_int64s)
    CHECK_KEYS(ca->doubles, ca->n_doubles)
    CHECK_KEYS(ca->bools, ca->n_bools)
    CHECK_KEYS(ca->timestamps, ca->n_timestamps)
    CHECK_KEYS(ca->durations, ca->n_durations)
    CHECK_KEYS(ca->bytes, ca->n_bytes)
    CHECK_KEYS(ca->string_maps, ca->n_string_maps)
    for (size_t k = 0; k < ca->n_strings; k++)
        if (!index_ok(dc, ca->strings[k]->value))
            return "string value index out of range";
    for (size_t k = 0; k < ca->n_timestamps; k++) {
        const Google__Protobuf__Timestamp *t = ca->timestamps[k]->value;
        if (t && (t->nanos < 0 || t->nanos > 999999999))
            return "timestamp nanos out of range";
    }
    for (size_t k = 0; k < ca->n_durations; k++) {
        const Google__Protobuf__Duration *t = ca->durations[k]->value;
        if (t && (t->nanos < -999999999 || t->nanos > 999999999 ||
                  t->seconds > INT64_MAX / 1000000000 - 1 || t->seconds < INT64_MIN / 1000000000 + 1))
            return "duration out of range";
    }
    for (size_t k = 0; k < ca->n_string_maps; k++) {
        const Istio__Mixer__V1__StringMap *m = ca->string_maps[k]->value;
        for (size_t e = 0; m && e < m->n_entries; e++)
            if (!index_ok(dc, m->entries[e]->key) || !index_ok(dc, m->entries[e]->value))
                return "string map index out of range";
    }
    return NULL;
}

static bool is_stringish(enum keel_value_type t)
{
    return t == KEEL_VALUE_STRING || t == KEEL_VALUE_DNS_NAME || t == KEEL_VALUE_EMAIL_ADDRESS ||
           t == KEEL_VALUE_URI;
}

/* The attribute of name index i, when keel knows it and its type is `want` (or, for
 * want == STRING, any string-like type): its id, else -1 with the skip counted. */
static int target(const struct keel_mixer_decoder *d, const struct dict *dc, int32_t i,
                  enum keel_value_type want, struct keel_mixer_decode_stats *st)
{
    int id = attr_of(d, dc, i);
    if (id < 0) {
        st->unknown_attrs++;
        return -1;
    }
    enum keel_value_type t = keel_attr_type(id);
    if (t == want || (want == KEEL_VALUE_STRING && is_stringish(t)))
        return id;
    st->mistyped_attrs++;
    return -1;
}

static void apply_set(struct keel_mixer_decoder *d, const Istio__Mixer__V1__CompressedAttributes *ca,
                      const struct dict *dc, struct keel_mixer_decode_stats *st)
{
    struct keel_attr_bag *bag = &d->bag;
    struct keel_value v;
    int id;
    for (size_t k = 0; k < ca->n_strings; k++)
        if ((id = target(d, dc, ca->strings[k]->key, KEEL_VALUE_STRING, st)) >= 0) {
            struct keel_str w = word(dc, ca->strings[k]->value);
            v = keel_value_str(w.p, w.len);
            v.type = keel_attr_type(id);
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_int64s; k++)
        if ((id = target(d, dc, ca->int64s[k]->key, KEEL_VALUE_INT64, st)) >= 0) {
            v = keel_value_int(ca->int64s[k]->value);
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_doubles; k++)
        if ((id = target(d, dc, ca->doubles[k]->key, KEEL_VALUE_DOUBLE, st)) >= 0) {
            v = (struct keel_value){ .type = KEEL_VALUE_DOUBLE, .u.d = ca->doubles[k]->value };
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_bools; k++)
        if ((id = target(d, dc, ca->bools[k]->key, KEEL_VALUE_BOOL, st)) >= 0) {
            v = keel_value_bool(ca->bools[k]->value);
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_timestamps; k++)
        if ((id = target(d, dc, ca->timestamps[k]->key, KEEL_VALUE_TIMESTAMP, st)) >= 0) {
            const Google__Protobuf__Timestamp *t = ca->timestamps[k]->value;
            v = (struct keel_value){ .type = KEEL_VALUE_TIMESTAMP };
            if (t)
                v.u.t = (struct keel_time){ t->seconds, t->nanos };
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_durations; k++)
        if ((id = target(d, dc, ca->durations[k]->key, KEEL_VALUE_DURATION, st)) >= 0) {
            const Google__Protobuf__Duration *t = ca->durations[k]->value;
            v = keel_value_duration(t ? t->seconds * 1000000000 + t->nanos : 0);
            keel_attr_bag_set(bag, id, &v);
        }
    for (size_t k = 0; k < ca->n_bytes; k++) {
        id = attr_of(d, dc, ca->bytes[k]->key);
        ProtobufCBinaryData b = ca->bytes[k]->value;
        enum keel_value_type t = keel_attr_type(id);
        if (id < 0) {
            st->unknown_attrs++;
        } else if (t == KEEL_VALUE_IP_ADDRESS && (b.len == 4 || b.len == 16)) {
            v = (struct keel_value){ .type = KEEL_VALUE_IP_ADDRESS };
            memcpy(v.u.ip.a, b.data, b.len);
            v.u.ip.len = (uint8_t)b.len;
            keel_attr_bag_set(bag, id, &v);
        } else if (t == KEEL_VALUE_BYTES) {
            v = (struct keel_value){ .type = KEEL_VALUE_BYTES, .u.s = { (const char *)b.data, b.len } };
            keel_attr_bag_set(bag, id, &v);
        } else {
            st->mistyped_attrs++;
        }
    }
    for (size_t k = 0; k < ca->n_string_maps; k++)
        if ((id = target(d, dc, ca->string_maps[k]->key, KEEL_VALUE_STRING_MAP, st)) >= 0) {
            const Istio__Mixer__V1__StringMap *m = ca->string_maps[k]->value;
            size_t n = m ? m->n_entries : 0;
            struct keel_str_pair *kv = n ? arena_alloc(d, n * sizeof(*kv)) : NULL;
            if (n && kv == NULL) { /* over the arena cap: the map is dropped, not the bag */
                st->mistyped_attrs++;
                continue;
            }
            for (size_t e = 0; e < n; e++) {
                kv[e].k = word(dc, m->entries[e]->key);
                kv[e].v = word(dc, m->entries[e]->value);
            }
            v = keel_value_map(kv, n);
            keel_attr_bag_set(bag, id, &v);
        }
}

int keel_mixer_decode(struct keel_mixer_decoder *d, const uint8_t *p, size_t n, keel_mixer_bag_fn fn,
                      void *arg, struct keel_mixer_decode_stats *st, const char **why)
{
    arena_reset(d);
    Istio__Mixer__V1__ReportRequest *rq = istio__mixer__v1__report_request__unpack(&d->alloc, n, p);
    if (rq == NULL) {
        *why = "cannot parse ReportRequest";
        return KEEL_EINVAL;
    }
    if (rq->repeated_attributes_semantics != ISTIO__MIXER__V1__REPORT_REQUEST__REPEATED_ATTRIBUTES_SEMANTICS__DELTA_ENCODING &&
        rq->repeated_attributes_semantics !=
            ISTIO__MIXER__V1__REPORT_REQUEST__REPEATED_ATTRIBUTES_SEMANTICS__INDEPENDENT_ENCODING) {
        *why = "unknown repeated_attributes_semantics";
        return KEEL_EINVAL;
    }
    size_t n_global = keel_mixer_global_words();
    /* the client's dictionary may be older (shorter) than ours, never newer */
    if (rq->global_word_count > n_global) {
        *why = "global_word_count is larger than the server's global dictionary";
        return KEEL_EINVAL;
    }
    if (rq->global_word_count > 0)
        n_global = rq->global_word_count;
    struct dict defaults = { rq->default_words, rq->n_default_words, n_global, NULL, NULL };
    uint32_t *lens = rq->n_default_words ? arena_alloc(d, rq->n_default_words * sizeof(*lens)) : NULL;
    int16_t *attrs = rq->n_default_words ? arena_alloc(d, rq->n_default_words * sizeof(*attrs)) : NULL;
    if (rq->n_default_words && (lens == NULL || attrs == NULL)) {
        *why = "request too large";
        return KEEL_EINVAL;
    }
    for (size_t k = 0; k < rq->n_default_words; k++) {
        lens[k] = (uint32_t)strlen(rq->default_words[k]);
        attrs[k] = (int16_t)(keel_mixer_attr_id(rq->default_words[k], lens[k]) + 1);
    }
    defaults.lens = lens;
    defaults.attrs = attrs;
    for (size_t i = 0; i < rq->n_attributes; i++) {
        const Istio__Mixer__V1__CompressedAttributes *ca = rq->attributes[i];
        struct dict dc = ca->n_words ? (struct dict){ ca->words, ca->n_words, n_global, NULL, NULL } : defaults;
        if ((*why = check_set(ca, &dc)) != NULL)
            return KEEL_EINVAL;
    }
    bool delta = rq->repeated_attributes_semantics ==
                 ISTIO__MIXER__V1__REPORT_REQUEST__REPEATED_ATTRIBUTES_SEMANTICS__DELTA_ENCODING;
    keel_attr_bag_clear(&d->bag);
    for (size_t i = 0; i < rq->n_attributes; i++) {
        const Istio__Mixer__V1__CompressedAttributes *ca = rq->attributes[i];
        struct dict dc = ca->n_words ? (struct dict){ ca->words, ca->n_words, n_global, NULL, NULL } : defaults;
        if (!delta)
            keel_attr_bag_clear(&d->bag);
        apply_set(d, ca, &dc, st);
        st->bags++;
        /* the engine adds filter_state to the bag (attributegen, its only write): a delta
         * must build on what the client sent, so that slot is put back after the call */
        if (delta) {
            uint64_t present[sizeof(d->bag.present) / sizeof(d->bag.present[0])];
            memcpy(present, d->bag.present, sizeof(present));
            struct keel_value fs = d->bag.v[KEEL_ATTR_FILTER_STATE];
            fn(arg, &d->bag);
            memcpy(d->bag.present, present, sizeof(present));
            d->bag.v[KEEL_ATTR_FILTER_STATE] = fs;
        } else {
            fn(arg, &d->bag);
        }
    }
    return (int)rq->n_attributes;
}
