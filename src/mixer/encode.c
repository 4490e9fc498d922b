/* Attribute bags -> one ReportRequest, written straight in the protobuf wire format
 * (attributes.proto field numbers): no intermediate message objects, so a proxy's report
 * path costs a few appends per attribute. Words outside the global dictionary are
 * collected once per batch into default_words.
 *
 * Sets are DELTA_ENCODING, as Mixer's clients sent them: a set carries only the attributes
 * whose value differs from the bag before it in the batch. A sidecar's consecutive bags
 * share most of their ~35 attributes (the workloads, labels, service, protocol); the
 * request id, times, sizes and duration change. So the proxy encodes (and the mixer
 * decodes) about a quarter of the attributes. Delta encoding cannot say "absent", so a bag
 * lacking an attribute the batch holds does not fit: the caller sends the batch first. */
#include "mixer/mixer.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

#define WORD_SLOTS_MIN 256
#define NAME_UNSET INT32_MIN

struct keel_mixer_batch {
    struct keel_buf sets;  /* encoded `attributes` fields (tag + length + CompressedAttributes) */
    struct keel_buf words; /* default_words, as encoded `default_words` fields */
    struct keel_buf one;   /* the set being built */
    struct keel_buf tmp;   /* a map entry being built */
    struct keel_buf map;   /* a StringMap being built */
    struct keel_buf text;  /* the bytes of the words, for the table's comparisons */
    struct { uint32_t off, len; } *wl; /* word k = text[off, off+len) */
    size_t n_words, cap_words;
    int32_t *slots;        /* word hash table: k + 1, 0 empty */
    size_t n_slots;
    size_t count;
    int32_t name_idx[KEEL_ATTR__COUNT]; /* wire index of each attribute's name in this batch */
    /* the batch's current bag, for the delta: each held attribute's last value, as its
     * type and bytes in `last` (see same_value) */
    uint64_t held[(KEEL_ATTR__COUNT + 63) / 64];
    struct { uint32_t off, len; uint8_t type; } prev[KEEL_ATTR__COUNT];
    struct keel_buf last;
};

static uint64_t zigzag(int32_t v) { return (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)); }

static size_t varint_to(uint8_t *t, uint64_t v);
static void varint(struct keel_buf *b, uint64_t v);

static void tag(struct keel_buf *b, unsigned field, unsigned wire) { varint(b, field << 3 | wire); }

/* keel_buf_append for the few bytes at a time of the wire format: inline when they fit */
static inline void put(struct keel_buf *b, const void *p, size_t n)
{
    if (b->data != NULL && b->cap - b->wpos >= n) {
        memcpy(b->data + b->wpos, p, n);
        b->wpos += n;
    } else {
        keel_buf_append(b, p, n);
    }
}

/* The bytes of b ("" for a buffer that never held any: no null pointer arithmetic). */
static const char *bytes_of(const struct keel_buf *b) { return b->data ? keel_buf_rptr(b) : ""; }

static void len_field(struct keel_buf *b, unsigned field, const void *p, size_t n)
{
    tag(b, field, 2);
    varint(b, n);
    put(b, p, n);
}

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
    keel_buf_release(&b->tmp);
    keel_buf_release(&b->map);
    keel_buf_release(&b->text);
    keel_buf_release(&b->last);
    free(b->wl);
    free(b->slots);
    free(b);
}

size_t keel_mixer_batch_count(const struct keel_mixer_batch *b) { return b->count; }

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
        if (b->wl[k].len == n && !memcmp(b->text.data + b->wl[k].off, s, n))
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

/* One map entry {1: sint32 key, 2: value} of field `field` of the set. */
static size_t varint_to(uint8_t *t, uint64_t v)
{
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static void varint(struct keel_buf *b, uint64_t v)
{
    uint8_t t[10];
    put(b, t, varint_to(t, v));
}

/* One map entry {1: sint32 key, 2: value (in tmp)} of field `field` of the set. */
static void entry(struct keel_mixer_batch *b, unsigned field, int32_t key)
{
    struct keel_buf *t = &b->tmp;
    uint8_t pre[12];
    pre[0] = 1 << 3;
    size_t np = 1 + varint_to(pre + 1, zigzag(key));
    tag(&b->one, field, 2);
    varint(&b->one, np + keel_buf_len(t));
    put(&b->one, pre, np);
    put(&b->one, bytes_of(t), keel_buf_len(t));
    t->rpos = t->wpos = 0;
}

static void time_msg(struct keel_buf *t, int64_t sec, int32_t nsec)
{
    uint8_t m[2 + 2 * 10];
    size_t n = 0;
    if (sec) {
        m[n++] = 1 << 3;
        n += varint_to(m + n, (uint64_t)sec);
    }
    if (nsec) {
        m[n++] = 2 << 3;
        n += varint_to(m + n, (uint64_t)(int64_t)nsec);
    }
    len_field(t, 2, m, n);
}

/* A value's bytes as `last` keeps them: the scalar's bytes, a string's bytes, a map's
 * pairs each as two length-prefixed strings. Equal bytes and type = equal value. */
static void value_bytes(struct keel_buf *o, const struct keel_value *v)
{
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
    case KEEL_VALUE_BYTES:
        put(o, v->u.s.p, v->u.s.len);
        break;
    case KEEL_VALUE_TIMESTAMP:
        put(o, &v->u.t.sec, sizeof(v->u.t.sec));
        put(o, &v->u.t.nsec, sizeof(v->u.t.nsec));
        break;
    case KEEL_VALUE_IP_ADDRESS:
        put(o, v->u.ip.a, v->u.ip.len);
        break;
    case KEEL_VALUE_STRING_MAP:
        for (size_t i = 0; i < v->u.map.n; i++) {
            const struct keel_str_pair *kv = &v->u.map.kv[i];
            uint32_t n = (uint32_t)kv->k.len;
            put(o, &n, 4);
            put(o, kv->k.p, n);
            n = (uint32_t)kv->v.len;
            put(o, &n, 4);
            put(o, kv->v.p, n);
        }
        break;
    case KEEL_VALUE_BOOL:
        put(o, &v->u.b, 1);
        break;
    default: /* INT64, DURATION, DOUBLE: the 8 bytes */
        put(o, &v->u.i, 8);
        break;
    }
}

/* Whether attribute id held v in the batch's previous bag: compared in place with the
 * bytes `last` keeps (value_bytes' layout), no copy. */
static bool same_value(const struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    if (!((b->held[id >> 6] >> (id & 63)) & 1) || b->prev[id].type != (uint8_t)v->type)
        return false;
    const char *p = b->last.data + b->prev[id].off;
    size_t n = b->prev[id].len;
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
    case KEEL_VALUE_BYTES:
        return v->u.s.len == n && (n == 0 || memcmp(v->u.s.p, p, n) == 0);
    case KEEL_VALUE_TIMESTAMP:
        return !memcmp(p, &v->u.t.sec, sizeof(v->u.t.sec)) &&
               !memcmp(p + sizeof(v->u.t.sec), &v->u.t.nsec, sizeof(v->u.t.nsec));
    case KEEL_VALUE_IP_ADDRESS:
        return n == v->u.ip.len && !memcmp(p, v->u.ip.a, n);
    case KEEL_VALUE_STRING_MAP: {
        const char *end = p + n;
        for (size_t i = 0; i < v->u.map.n; i++) {
            const struct keel_str *s[2] = { &v->u.map.kv[i].k, &v->u.map.kv[i].v };
            for (int j = 0; j < 2; j++) {
                uint32_t len;
                if (end - p < 4)
                    return false;
                memcpy(&len, p, 4);
                p += 4;
                if (len != s[j]->len || (size_t)(end - p) < len || (len && memcmp(p, s[j]->p, len)))
                    return false;
                p += len;
            }
        }
        return p == end;
    }
    case KEEL_VALUE_BOOL:
        return *p == (char)v->u.b;
    default:
        return !memcmp(p, &v->u.i, 8);
    }
}

static void remember(struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    size_t mark = b->last.wpos;
    value_bytes(&b->last, v);
    b->prev[id].off = (uint32_t)mark;
    b->prev[id].len = (uint32_t)(b->last.wpos - mark);
    b->prev[id].type = (uint8_t)v->type;
    b->held[id >> 6] |= (uint64_t)1 << (id & 63);
}

/* One changed attribute as a map entry of the set being built. */
static void add_value(struct keel_mixer_batch *b, int id, const struct keel_value *v)
{
    int32_t key = b->name_idx[id];
    if (key == NAME_UNSET) { /* first use in this batch */
        const char *name = keel_attr_name(id);
        key = b->name_idx[id] = word(b, name, strlen(name));
    }
    struct keel_buf *t = &b->tmp;
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        tag(t, 2, 0);
        varint(t, zigzag(word(b, v->u.s.p, v->u.s.len)));
        entry(b, 2, key);
        break;
    case KEEL_VALUE_INT64:
        tag(t, 2, 0);
        varint(t, (uint64_t)v->u.i);
        entry(b, 3, key);
        break;
    case KEEL_VALUE_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &v->u.d, 8);
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(bits >> (8 * i));
        tag(t, 2, 1);
        put(t, le, 8);
        entry(b, 4, key);
        break;
    }
    case KEEL_VALUE_BOOL:
        tag(t, 2, 0);
        varint(t, v->u.b);
        entry(b, 5, key);
        break;
    case KEEL_VALUE_TIMESTAMP:
        time_msg(t, v->u.t.sec, v->u.t.nsec);
        entry(b, 6, key);
        break;
    case KEEL_VALUE_DURATION:
        time_msg(t, v->u.i / 1000000000, (int32_t)(v->u.i % 1000000000));
        entry(b, 7, key);
        break;
    case KEEL_VALUE_IP_ADDRESS:
        len_field(t, 2, v->u.ip.a, v->u.ip.len);
        entry(b, 8, key);
        break;
    case KEEL_VALUE_BYTES:
        len_field(t, 2, v->u.s.p, v->u.s.len);
        entry(b, 8, key);
        break;
    case KEEL_VALUE_STRING_MAP: {
        struct keel_buf *m = &b->map;
        m->rpos = m->wpos = 0;
        for (size_t i = 0; i < v->u.map.n; i++) {
            uint8_t e[2 + 2 * 5];
            size_t n = 0;
            e[n++] = 1 << 3;
            n += varint_to(e + n, zigzag(word(b, v->u.map.kv[i].k.p, v->u.map.kv[i].k.len)));
            e[n++] = 2 << 3;
            n += varint_to(e + n, zigzag(word(b, v->u.map.kv[i].v.p, v->u.map.kv[i].v.len)));
            len_field(m, 1, e, n);
        }
        len_field(t, 2, bytes_of(m), keel_buf_len(m));
        entry(b, 9, key);
        break;
    }
    default: /* UINT64 and the CEL-only types have no Mixer encoding */
        break;
    }
}

bool keel_mixer_batch_add(struct keel_mixer_batch *b, const struct keel_attr_bag *bag)
{
    for (size_t w = 0; w < sizeof(b->held) / sizeof(b->held[0]); w++)
        if (b->held[w] & ~bag->present[w])
            return false; /* drops an attribute the batch holds */
    keel_buf_attach(&b->one);
    keel_buf_attach(&b->tmp);
    keel_buf_attach(&b->last);
    b->one.rpos = b->one.wpos = 0;
    b->tmp.rpos = b->tmp.wpos = 0;
    for (size_t w = 0; w < sizeof(bag->present) / sizeof(bag->present[0]); w++)
        for (uint64_t left = bag->present[w]; left; left &= left - 1) {
            int id = (int)(w * 64 + (size_t)__builtin_ctzll(left));
            if (!same_value(b, id, &bag->v[id])) {
                remember(b, id, &bag->v[id]);
                add_value(b, id, &bag->v[id]);
            }
        }
    len_field(&b->sets, 1, bytes_of(&b->one), keel_buf_len(&b->one));
    b->count++;
    return true;
}

void keel_mixer_batch_finish(struct keel_mixer_batch *b, struct keel_buf *out)
{
    size_t n = keel_buf_len(&b->sets) + keel_buf_len(&b->words) + 12;
    struct keel_buf tail = { 0 };
    tag(&tail, 3, 0);
    varint(&tail, keel_mixer_global_words());
    /* repeated_attributes_semantics left out: DELTA_ENCODING, proto3's default 0 */
    n = keel_buf_len(&b->sets) + keel_buf_len(&b->words) + keel_buf_len(&tail);
    uint8_t prefix[5] = { 0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    keel_buf_append(out, prefix, 5);
    keel_buf_append(out, bytes_of(&b->sets), keel_buf_len(&b->sets));
    keel_buf_append(out, bytes_of(&b->words), keel_buf_len(&b->words));
    keel_buf_append(out, bytes_of(&tail), keel_buf_len(&tail));
    keel_buf_release(&tail);
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
