/* Packing spans into one block, and Zipkin's merge of two reports of one span. */
#include "tracing/store.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

const char *keel_zipkin_kind_name(enum keel_zipkin_kind k)
{
    switch (k) {
    case KEEL_ZIPKIN_KIND_CLIENT: return "CLIENT";
    case KEEL_ZIPKIN_KIND_SERVER: return "SERVER";
    case KEEL_ZIPKIN_KIND_PRODUCER: return "PRODUCER";
    case KEEL_ZIPKIN_KIND_CONSUMER: return "CONSUMER";
    default: return NULL;
    }
}

static size_t slen(const char *s) { return s == NULL ? 0 : strlen(s) + 1; }

static size_t endpoint_len(const struct keel_zipkin_endpoint *e)
{
    return slen(e->service) + slen(e->ipv4) + slen(e->ipv6);
}

struct packer {
    char *p;
};

static const char *put(struct packer *k, const char *s, bool lower)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    char *d = k->p;
    memcpy(d, s, n + 1);
    if (lower)
        for (size_t i = 0; i < n; i++)
            if (d[i] >= 'A' && d[i] <= 'Z')
                d[i] = (char)(d[i] - 'A' + 'a');
    k->p += n + 1;
    return d;
}

static int cmp_annotation(const void *a, const void *b)
{
    const struct keel_zipkin_annotation *x = a, *y = b;
    if (x->timestamp != y->timestamp)
        return x->timestamp < y->timestamp ? -1 : 1;
    return strcmp(x->value, y->value);
}

static int cmp_tag(const void *a, const void *b)
{
    const struct keel_zipkin_tag *x = a, *y = b;
    return strcmp(x->key, y->key);
}

struct keel_zipkin_span *keel_zipkin_span_pack(const struct keel_zipkin_span *s)
{
    size_t strs = slen(s->name) + endpoint_len(&s->local) + endpoint_len(&s->remote);
    for (size_t i = 0; i < s->n_annotations; i++)
        strs += slen(s->annotations[i].value);
    for (size_t i = 0; i < s->n_tags; i++)
        strs += slen(s->tags[i].key) + slen(s->tags[i].value);
    size_t head = sizeof(*s) + s->n_annotations * sizeof(*s->annotations) +
                  s->n_tags * sizeof(*s->tags);
    struct keel_zipkin_span *d = keel_alloc(head + strs);
    *d = *s;
    d->bytes = head + strs;
    d->annotations = (struct keel_zipkin_annotation *)(d + 1);
    d->tags = (struct keel_zipkin_tag *)(d->annotations + s->n_annotations);
    struct packer k = { (char *)d + head };
    d->name = put(&k, s->name, true);
    d->local.service = put(&k, s->local.service, true);
    d->local.ipv4 = put(&k, s->local.ipv4, false);
    d->local.ipv6 = put(&k, s->local.ipv6, false);
    d->remote.service = put(&k, s->remote.service, true);
    d->remote.ipv4 = put(&k, s->remote.ipv4, false);
    d->remote.ipv6 = put(&k, s->remote.ipv6, false);
    for (size_t i = 0; i < s->n_annotations; i++) {
        d->annotations[i].timestamp = s->annotations[i].timestamp;
        d->annotations[i].value = put(&k, s->annotations[i].value, false);
    }
    for (size_t i = 0; i < s->n_tags; i++) {
        d->tags[i].key = put(&k, s->tags[i].key, false);
        d->tags[i].value = put(&k, s->tags[i].value, false);
    }
    /* Sorted and unique, as Zipkin keeps them: the same event reported twice is one. The
     * strings wasted by dropped duplicates stay in the block (counted in bytes). */
    if (d->n_annotations > 1) {
        qsort(d->annotations, d->n_annotations, sizeof(*d->annotations), cmp_annotation);
        size_t w = 1;
        for (size_t i = 1; i < d->n_annotations; i++)
            if (cmp_annotation(&d->annotations[w - 1], &d->annotations[i]) != 0)
                d->annotations[w++] = d->annotations[i];
        d->n_annotations = w;
    }
    if (d->n_tags > 1) {
        /* stable for equal keys is not needed: callers give unique keys, or the later
         * value first (merge) and the first of equals wins */
        for (size_t i = 1; i < d->n_tags; i++) {
            struct keel_zipkin_tag t = d->tags[i];
            size_t j = i;
            for (; j > 0 && strcmp(d->tags[j - 1].key, t.key) > 0; j--)
                d->tags[j] = d->tags[j - 1];
            d->tags[j] = t;
        }
        size_t w = 1;
        for (size_t i = 1; i < d->n_tags; i++)
            if (cmp_tag(&d->tags[w - 1], &d->tags[i]) != 0)
                d->tags[w++] = d->tags[i];
        d->n_tags = w;
    }
    return d;
}

static void fill_endpoint(struct keel_zipkin_endpoint *e, const struct keel_zipkin_endpoint *l)
{
    if (e->service == NULL)
        e->service = l->service;
    if (e->ipv4 == NULL)
        e->ipv4 = l->ipv4;
    if (e->ipv6 == NULL)
        e->ipv6 = l->ipv6;
    if (e->port == 0)
        e->port = l->port;
}

struct keel_zipkin_span *keel_zipkin_span_merge(const struct keel_zipkin_span *early,
                                                const struct keel_zipkin_span *late)
{
    struct keel_zipkin_span m = *early;
    if (m.parent_id[0] == '\0')
        memcpy(m.parent_id, late->parent_id, sizeof(m.parent_id));
    if (m.kind == KEEL_ZIPKIN_KIND_NONE)
        m.kind = late->kind;
    /* Zipkin replaces a missing or "unknown" name */
    if (m.name == NULL || !strcmp(m.name, "unknown"))
        m.name = late->name != NULL ? late->name : m.name;
    if (m.timestamp == 0)
        m.timestamp = late->timestamp;
    if (m.duration == 0)
        m.duration = late->duration;
    m.debug = early->debug || late->debug;
    m.shared = early->shared || late->shared;
    fill_endpoint(&m.local, &late->local);
    fill_endpoint(&m.remote, &late->remote);
    m.has_local = early->has_local || late->has_local;
    m.has_remote = early->has_remote || late->has_remote;

    size_t na = early->n_annotations + late->n_annotations, nt = early->n_tags + late->n_tags;
    struct keel_zipkin_annotation *a = keel_alloc((na + 1) * sizeof(*a));
    struct keel_zipkin_tag *t = keel_alloc((nt + 1) * sizeof(*t));
    memcpy(a, early->annotations, early->n_annotations * sizeof(*a));
    memcpy(a + early->n_annotations, late->annotations, late->n_annotations * sizeof(*a));
    /* the later report's tags first: the pack keeps the first of equal keys */
    memcpy(t, late->tags, late->n_tags * sizeof(*t));
    memcpy(t + late->n_tags, early->tags, early->n_tags * sizeof(*t));
    m.annotations = a;
    m.n_annotations = na;
    m.tags = t;
    m.n_tags = nt;
    struct keel_zipkin_span *d = keel_zipkin_span_pack(&m);
    free(a);
    free(t);
    return d;
}
