/* Attribute bags -> one ReportRequest, written straight in the protobuf wire format
 * (attributes.proto field numbers): no intermediate message objects, so a proxy's report
 * path costs a few stores per attribute. Words outside the global dictionary are
 * collected once per batch into default_words.
 *
 * Sets are DELTA_ENCODING: a set carries only the attributes whose value differs from the
 * bag before it in the batch. A sidecar's consecutive bags share most of their ~45
 * attributes (the workloads, labels, service, protocol); the request id, times, sizes and
 * some headers change. So the proxy encodes (and the mixer decodes) a fraction of the
 * attributes, and a changed header map looks up words only for its changed pairs. Delta
 * encoding cannot say "absent", so a bag lacking an attribute the batch holds does not
 * fit: the caller sends the batch first. */
#include "mixer/mixer.h"

#include "core/alloc.h"
#include "core/str.h"

#include <stdlib.h>
#include <string.h>

#define WORD_SLOTS_MIN 256
#define NAME_UNSET INT32_MIN
#define VARINT_MAX 10

/* The previous bag's value of an attribute, in `last` at [off, off + len): a string's
 * bytes; a scalar's bytes; a timestamp's seconds then nanoseconds; a map's pairs, each a
 * struct pair_rec then the key's and the value's bytes (with their wire words, reused
 * while the pair stays the same). */
struct prev {
    uint32_t off, len;
    uint8_t type;
};

struct pair_rec {
    uint32_t klen, vlen;
    int32_t kword, vword;
};

struct keel_mixer_batch {
    struct keel_buf sets;  /* encoded `attributes` fields (tag + length + CompressedAttributes) */
    struct keel_buf words; /* default_words, as encoded `default_words` fields */
    struct keel_buf one;   /* the set being built */
    struct keel_buf map;   /* a StringMap or bytes value being built */
    struct keel_buf text;  /* the bytes of the words, for the table's comparisons */
    struct keel_buf last;  /* the previous bag's values, as bytes (struct prev) */
    struct { uint32_t off, len; } *wl; /* word k = text[off, off+len) */
    size_t n_words, cap_words;
    int32_t *slots;        /* word hash table: k + 1, 0 empty */
    size_t n_slots;
    size_t count;
    int32_t name_idx[KEEL_ATTR__COUNT]; /* wire index of each attribute's name in this batch */
    uint64_t held[(KEEL_ATTR__COUNT + 63) / 64]; /* attributes of the batch's current bag */
    struct prev prev[KEEL_ATTR__COUNT];
};

static uint64_t zigzag(int32_t v) { return (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)); }

/* ---- wire writing: reserve, store through a pointer, commit ---- */

static inline uint8_t *w_varint(uint8_t *p, uint64_t v)
{
    while (v > 0x7f) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    for (; v > 0x7f; v >>= 7)
        n++;
    return n;
}

static inline uint8_t *w_begin(struct keel_buf *b, size_t n)
{
    keel_buf_reserve(b, n);
    return (uint8_t *)b->data + b->wpos;
}

static inline void w_end(struct keel_buf *b, const uint8_t *p) { b->wpos = (size_t)((const char *)p - b->data); }

/* The bytes of b ("" for a buffer that never held any: no null pointer arithmetic). */
static const char *bytes_of(const struct keel_buf *b) { return b->data ? keel_buf_rptr(b) : ""; }

/* A length-delimited field (fields 1-15: a one-byte tag). */
static void len_field(struct keel_buf *b, unsigned field, const void *p, size_t n)
{
    uint8_t *w = w_begin(b, 1 + VARINT_MAX + n);
    *w++ = (uint8_t)(field << 3 | 2);
    w = w_varint(w, n);
    keel_copy(w, p, n);
    w_end(b, w + n);
}

/* One map entry {1: sint32 key, 2: value} of field `field` of the set; val is the value
 * field, tag included. */
static void entry(struct keel_mixer_batch *b, unsigned field, int32_t key, const void *val, size_t vn)
{
    uint64_t zk = zigzag(key);
    size_t body = 1 + varint_len(zk) + vn;
    uint8_t *w = w_begin(&b->one, 1 + VARINT_MAX + body);
    *w++ = (uint8_t)(field << 3 | 2);
    w = w_varint(w, body);
    *w++ = 1 << 3;
    w = w_varint(w, zk);
    keel_copy(w, val, vn);
    w_end(&b->one, w + vn);
}

/* ---- the batch ---- */

static void forget_names(struct keel_mixer_batch *b)
{
    for (int id = 0; id < KEEL_ATTR__COUNT; id++)
        b->name_idx[id] = NAME_UNSET;
}

struct keel_mixer_batch *keel_mixer_batch_new(void)
{
    struct keel_mixer_batch *b = keel_calloc(1, sizeof(*b));
    forget_names(b);
    b->n_slots = WORD_SLOTS_MIN;
    b->slots = keel_calloc(b->n_slots, sizeof(*b->slots));
    return b;
}

void keel_mixer_batch_free(struct keel_mixer_batch *b)
{
    if (!b)
        return;
    keel_buf_release(&b->sets);
    keel_buf_release(&b->words);
    keel_buf_release(&b->one);
    keel_buf_release(&b->map);
    keel_buf_release(&b->text);
    keel_buf_release(&b->last);
    free(b->wl);
    free(b->slots);
    free(b);
}

size_t keel_mixer_batch_count(const struct keel_mixer_batch *b) { return b->count; }

size_t keel_mixer_batch_bytes(const struct keel_mixer_batch *b)
{
    return keel_buf_len(&b->sets) + keel_buf_len(&b->words) + keel_buf_len(&b->last);
}

#define hash keel_mixer_hash

static void rehash(struct keel_mixer_batch *b)
{
    free(b->slots);
    b->n_slots *= 2;
    b->slots = keel_calloc(b->n_slots, sizeof(*b->slots));
    for (size_t k = 0; k < b->n_words; k++) {
        size_t j = hash(b->text.data + b->wl[k].off, b->wl[k].len) & (b->n_slots - 1);
        while (b->slots[j])
            j = (j + 1) & (b->n_slots - 1);
        b->slots[j] = (int32_t)(k + 1);
    }
}

/* The wire index of a word: global when the dictionary has it, else a default word. */
static int32_t word(struct keel_mixer_batch *b, const char *s, size_t n)
{
    uint32_t h = hash(s, n);
    int g = keel_mixer_global_index_h(s, n, h);
    if (g >= 0)
        return g;
    size_t j = h & (b->n_slots - 1);
    for (; b->slots[j]; j = (j + 1) & (b->n_slots - 1)) {
        size_t k = (size_t)b->slots[j] - 1;
        if (b->wl[k].len == n && keel_bytes_eq(b->text.data + b->wl[k].off, s, n))
            return -(int32_t)k - 1;
    }
    if (b->n_words == b->cap_words) {
        b->cap_words = b->cap_words ? 2 * b->cap_words : 64;
        b->wl = keel_realloc(b->wl, b->cap_words * sizeof(*b->wl));
    }
    size_t k = b->n_words++;
    b->wl[k].off = (uint32_t)b->text.wpos;
    b->wl[k].len = (uint32_t)n;
    keel_buf_append(&b->text, s, n);
    len_field(&b->words, 2, s, n);
    b->slots[j] = (int32_t)(k + 1);
    if (b->n_words * 2 > b->n_slots)
        rehash(b);
    return -(int32_t)k - 1;
}

static bool is_held(const struct keel_mixer_batch *b, int id) { return (b->held[id >> 6] >> (id & 63)) & 1; }

/* Values kept as their bytes: the string types and bytes. */
static bool held_as_bytes(enum keel_value_type t)
{
    return t == KEEL_VALUE_STRING || t == KEEL_VALUE_DNS_NAME || t == KEEL_VALUE_EMAIL_ADDRESS ||
           t == KEEL_VALUE_URI || t == KEEL_VALUE_BYTES;
}

/* Whether attribute id held v in the batch's previous bag: compared in place with the
 * bytes `last` keeps. */
static bool same_value(const struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    if (!is_held(b, id) || b->prev[id].type != (uint8_t)v->type)
        return false;
    const char *p = b->last.data + b->prev[id].off;
    size_t n = b->prev[id].len;
    if (held_as_bytes(v->type))
        return v->u.s.len == n && keel_bytes_eq(p, v->u.s.p, n);
    switch (v->type) {
    case KEEL_VALUE_TIMESTAMP: {
        int64_t sec;
        int32_t nsec;
        memcpy(&sec, p, 8);
        memcpy(&nsec, p + 8, 4);
        return sec == v->u.t.sec && nsec == v->u.t.nsec;
    }
    case KEEL_VALUE_IP_ADDRESS:
        return n == v->u.ip.len && keel_bytes_eq(p, (const char *)v->u.ip.a, n);
    case KEEL_VALUE_STRING_MAP: {
        const char *end = p + n;
        for (size_t i = 0; i < v->u.map.n; i++) {
            struct pair_rec r;
            if ((size_t)(end - p) < sizeof(r))
                return false;
            memcpy(&r, p, sizeof(r));
            const struct keel_str_pair *kv = &v->u.map.kv[i];
            p += sizeof(r);
            if (r.klen != kv->k.len || r.vlen != kv->v.len || !keel_bytes_eq(p, kv->k.p, r.klen) ||
                !keel_bytes_eq(p + r.klen, kv->v.p, r.vlen))
                return false;
            p += r.klen + r.vlen;
        }
        return p == end;
    }
    case KEEL_VALUE_BOOL:
        return *p == (char)v->u.b;
    default: { /* INT64, DURATION, DOUBLE: the union's 8 bytes */
        uint64_t x;
        memcpy(&x, p, 8);
        return x == v->u.u;
    }
    }
}

/* Opens attribute id's record in `last`; close_prev ends it. */
static size_t open_prev(struct keel_mixer_batch *b) { return b->last.wpos; }

static void close_prev(struct keel_mixer_batch *b, int id, enum keel_value_type t, size_t mark)
{
    b->prev[id] = (struct prev){ (uint32_t)mark, (uint32_t)(b->last.wpos - mark), (uint8_t)t };
    b->held[id >> 6] |= (uint64_t)1 << (id & 63);
}

static void remember(struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    size_t mark = open_prev(b);
    if (held_as_bytes(v->type)) {
        if (v->u.s.len)
            keel_buf_append(&b->last, v->u.s.p, v->u.s.len);
    } else if (v->type == KEEL_VALUE_TIMESTAMP) {
        keel_buf_append(&b->last, &v->u.t.sec, 8);
        keel_buf_append(&b->last, &v->u.t.nsec, 4);
    } else if (v->type == KEEL_VALUE_IP_ADDRESS) {
        keel_buf_append(&b->last, v->u.ip.a, v->u.ip.len);
    } else if (v->type == KEEL_VALUE_BOOL) {
        char c = (char)v->u.b;
        keel_buf_append(&b->last, &c, 1);
    } else {
        keel_buf_append(&b->last, &v->u.u, 8);
    }
    close_prev(b, id, v->type, mark);
}

/* A StringMap value: each pair's words looked up unless the previous bag's map had the
 * same pair at the same place (a header map changes in a few pairs per request). */
static void add_map(struct keel_mixer_batch *b, int id, int32_t key, const struct keel_value *v)
{
    size_t old = 0, old_end = 0; /* offsets: `last` may move as the new record grows */
    if (is_held(b, id) && b->prev[id].type == KEEL_VALUE_STRING_MAP) {
        old = b->prev[id].off;
        old_end = old + b->prev[id].len;
    }
    size_t mark = open_prev(b);
    /* the pairs go after room for the value field's tag and length, filled in once the
     * pairs' length is known */
    struct keel_buf *m = &b->map;
    enum { ROOM = 1 + VARINT_MAX };
    m->rpos = m->wpos = 0;
    w_begin(m, ROOM);
    m->wpos = ROOM;
    for (size_t i = 0; i < v->u.map.n; i++) {
        const struct keel_str_pair *kv = &v->u.map.kv[i];
        struct pair_rec r = { (uint32_t)kv->k.len, (uint32_t)kv->v.len, 0, 0 };
        bool same = false;
        if (old_end - old >= sizeof(r)) {
            struct pair_rec o;
            memcpy(&o, b->last.data + old, sizeof(o));
            const char *op = b->last.data + old + sizeof(o);
            same = o.klen == r.klen && o.vlen == r.vlen && keel_bytes_eq(op, kv->k.p, r.klen) &&
                   keel_bytes_eq(op + o.klen, kv->v.p, r.vlen);
            r.kword = o.kword;
            r.vword = o.vword;
            old += sizeof(o) + o.klen + o.vlen;
        }
        if (!same) {
            r.kword = word(b, kv->k.p, kv->k.len);
            r.vword = word(b, kv->v.p, kv->v.len);
        }
        keel_buf_append(&b->last, &r, sizeof(r));
        if (r.klen)
            keel_buf_append(&b->last, kv->k.p, r.klen);
        if (r.vlen)
            keel_buf_append(&b->last, kv->v.p, r.vlen);
        uint8_t *w = w_begin(m, 2 + 2 * (1 + VARINT_MAX));
        uint8_t *len = w + 1;
        *w = 1 << 3 | 2; /* entries: {1: sint32 key, 2: sint32 value}, under 128 bytes */
        w += 2;
        *w++ = 1 << 3;
        w = w_varint(w, zigzag(r.kword));
        *w++ = 2 << 3;
        w = w_varint(w, zigzag(r.vword));
        *len = (uint8_t)(w - len - 1);
        w_end(m, w);
    }
    close_prev(b, id, KEEL_VALUE_STRING_MAP, mark);
    /* the value field {2: StringMap}: its tag and length right before the pairs */
    size_t n = m->wpos - ROOM, np = 1 + varint_len(n);
    uint8_t *val = (uint8_t *)m->data + ROOM - np;
    val[0] = 2 << 3 | 2;
    w_varint(val + 1, n);
    entry(b, 9, key, val, np + n);
}

/* A Timestamp or Duration message as the value field {2: {1: seconds, 2: nanos}}. */
static size_t time_value(uint8_t *val, int64_t sec, int32_t nsec)
{
    uint8_t *w = val + 2;
    if (sec) {
        *w++ = 1 << 3;
        w = w_varint(w, (uint64_t)sec);
    }
    if (nsec) {
        *w++ = 2 << 3;
        w = w_varint(w, (uint64_t)(int64_t)nsec);
    }
    val[0] = 2 << 3 | 2;
    val[1] = (uint8_t)(w - val - 2); /* at most 22 */
    return (size_t)(w - val);
}

/* One changed attribute: remembered for the next bag's delta, and encoded in the set. */
static void add_value(struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    int32_t key = b->name_idx[id];
    if (key == NAME_UNSET) { /* first use in this batch */
        const char *name = keel_attr_name(id);
        key = b->name_idx[id] = word(b, name, strlen(name));
    }
    uint8_t val[2 + 2 * (1 + VARINT_MAX)]; /* the largest fixed-size value: a time */
    uint8_t *w = val;
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        *w++ = 2 << 3;
        w = w_varint(w, zigzag(word(b, v->u.s.p, v->u.s.len)));
        entry(b, 2, key, val, (size_t)(w - val));
        break;
    case KEEL_VALUE_INT64:
        *w++ = 2 << 3;
        w = w_varint(w, (uint64_t)v->u.i);
        entry(b, 3, key, val, (size_t)(w - val));
        break;
    case KEEL_VALUE_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &v->u.d, 8);
        *w++ = 2 << 3 | 1;
        for (int i = 0; i < 8; i++)
            *w++ = (uint8_t)(bits >> (8 * i));
        entry(b, 4, key, val, (size_t)(w - val));
        break;
    }
    case KEEL_VALUE_BOOL:
        *w++ = 2 << 3;
        *w++ = v->u.b ? 1 : 0;
        entry(b, 5, key, val, (size_t)(w - val));
        break;
    case KEEL_VALUE_TIMESTAMP:
        entry(b, 6, key, val, time_value(val, v->u.t.sec, v->u.t.nsec));
        break;
    case KEEL_VALUE_DURATION:
        entry(b, 7, key, val, time_value(val, v->u.i / 1000000000, (int32_t)(v->u.i % 1000000000)));
        break;
    case KEEL_VALUE_IP_ADDRESS:
        *w++ = 2 << 3 | 2;
        *w++ = v->u.ip.len;
        memcpy(w, v->u.ip.a, v->u.ip.len);
        entry(b, 8, key, val, 2 + (size_t)v->u.ip.len);
        break;
    case KEEL_VALUE_BYTES:
        b->map.rpos = b->map.wpos = 0;
        len_field(&b->map, 2, v->u.s.p, v->u.s.len);
        entry(b, 8, key, bytes_of(&b->map), keel_buf_len(&b->map));
        break;
    case KEEL_VALUE_STRING_MAP:
        add_map(b, id, key, v); /* remembers as it goes */
        return;
    default: /* UINT64 and the CEL-only types have no Mixer encoding: never held */
        return;
    }
    remember(b, id, v);
}

bool keel_mixer_batch_add(struct keel_mixer_batch *b, const struct keel_attr_bag *bag)
{
    for (size_t w = 0; w < sizeof(b->held) / sizeof(b->held[0]); w++)
        if (b->held[w] & ~bag->present[w])
            return false; /* drops an attribute the batch holds */
    b->one.rpos = b->one.wpos = 0;
    for (size_t w = 0; w < sizeof(bag->present) / sizeof(bag->present[0]); w++)
        for (uint64_t left = bag->present[w]; left; left &= left - 1) {
            int id = (int)(w * 64 + (size_t)__builtin_ctzll(left));
            if (!same_value(b, id, &bag->v[id]))
                add_value(b, id, &bag->v[id]);
        }
    len_field(&b->sets, 1, bytes_of(&b->one), keel_buf_len(&b->one));
    b->count++;
    return true;
}

void keel_mixer_batch_finish(struct keel_mixer_batch *b, struct keel_buf *out)
{
    /* {3: global_word_count}; repeated_attributes_semantics left out: DELTA_ENCODING,
     * proto3's default 0 */
    uint8_t tail[1 + VARINT_MAX];
    tail[0] = 3 << 3;
    size_t nt = (size_t)(w_varint(tail + 1, keel_mixer_global_words()) - tail);
    size_t n = keel_buf_len(&b->sets) + keel_buf_len(&b->words) + nt;
    uint8_t prefix[5] = { 0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    keel_buf_append(out, prefix, 5);
    keel_buf_append(out, bytes_of(&b->sets), keel_buf_len(&b->sets));
    keel_buf_append(out, bytes_of(&b->words), keel_buf_len(&b->words));
    keel_buf_append(out, tail, nt);
    b->sets.rpos = b->sets.wpos = 0;
    b->words.rpos = b->words.wpos = 0;
    b->text.rpos = b->text.wpos = 0;
    b->n_words = 0;
    memset(b->slots, 0, b->n_slots * sizeof(*b->slots));
    forget_names(b);
    memset(b->held, 0, sizeof(b->held));
    b->last.rpos = b->last.wpos = 0;
    b->count = 0;
}
