/* The bounded trace store: traces by id in a hash table, and in arrival order on a list
 * whose head (the oldest) is evicted first when the span or byte cap is passed. */
#include "tracing/store.h"

#include "core/alloc.h"
#include "core/err.h"

#include <stdlib.h>
#include <string.h>

#define TRACE_OVERHEAD (sizeof(struct keel_trace) + 64)

struct keel_trace_store {
    struct keel_trace_store_limits lim;
    struct keel_trace **buckets;
    size_t n_buckets; /* power of two */
    struct keel_trace *oldest, *newest;
    struct keel_trace_store_stats st;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct keel_trace_store *keel_trace_store_new(const struct keel_trace_store_limits *lim)
{
    struct keel_trace_store *st = keel_calloc(1, sizeof(*st));
    st->lim = *lim;
    if (st->lim.max_trace_spans == 0)
        st->lim.max_trace_spans = 10000;
    st->n_buckets = 1024;
    st->buckets = keel_calloc(st->n_buckets, sizeof(*st->buckets));
    return st;
}

static void trace_free(struct keel_trace *t)
{
    for (size_t i = 0; i < t->n_spans; i++)
        free(t->spans[i]);
    free(t->spans);
    free(t);
}

void keel_trace_store_free(struct keel_trace_store *st)
{
    if (st == NULL)
        return;
    for (struct keel_trace *t = st->oldest, *next; t != NULL; t = next) {
        next = t->newer;
        trace_free(t);
    }
    free(st->buckets);
    free(st);
}

struct keel_trace *keel_trace_store_get(struct keel_trace_store *st, const char *trace_id)
{
    for (struct keel_trace *t = st->buckets[hash(trace_id) & (st->n_buckets - 1)]; t; t = t->hnext)
        if (!strcmp(t->id, trace_id))
            return t;
    return NULL;
}

static void grow(struct keel_trace_store *st)
{
    size_t nb = st->n_buckets * 2;
    struct keel_trace **b = keel_calloc(nb, sizeof(*b));
    for (struct keel_trace *t = st->oldest; t != NULL; t = t->newer) {
        size_t i = hash(t->id) & (nb - 1);
        t->hnext = b[i];
        b[i] = t;
    }
    free(st->buckets);
    st->buckets = b;
    st->n_buckets = nb;
}

static void evict_oldest(struct keel_trace_store *st)
{
    struct keel_trace *t = st->oldest;
    struct keel_trace **pp = &st->buckets[hash(t->id) & (st->n_buckets - 1)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    st->oldest = t->newer;
    if (st->oldest != NULL)
        st->oldest->older = NULL;
    else
        st->newest = NULL;
    st->st.traces--;
    st->st.spans -= t->n_spans;
    st->st.bytes -= t->bytes;
    st->st.evicted += t->n_spans;
    trace_free(t);
}

static void recompute_ts(struct keel_trace *t)
{
    t->timestamp = 0;
    for (size_t i = 0; i < t->n_spans; i++) {
        int64_t ts = t->spans[i]->timestamp;
        if (ts != 0 && (t->timestamp == 0 || ts < t->timestamp))
            t->timestamp = ts;
    }
}

int keel_trace_store_add(struct keel_trace_store *st, struct keel_zipkin_span *s)
{
    struct keel_trace *t = keel_trace_store_get(st, s->trace_id);
    if (t == NULL) {
        if (st->st.traces >= st->n_buckets)
            grow(st);
        t = keel_calloc(1, sizeof(*t));
        memcpy(t->id, s->trace_id, sizeof(t->id));
        size_t i = hash(t->id) & (st->n_buckets - 1);
        t->hnext = st->buckets[i];
        st->buckets[i] = t;
        t->older = st->newest;
        if (st->newest != NULL)
            st->newest->newer = t;
        else
            st->oldest = t;
        st->newest = t;
        t->bytes = TRACE_OVERHEAD;
        st->st.traces++;
        st->st.bytes += TRACE_OVERHEAD;
    }
    st->st.accepted++;
    /* The same span reported twice (same id and kind) is one span, as in Zipkin. */
    for (size_t i = 0; i < t->n_spans; i++) {
        struct keel_zipkin_span *o = t->spans[i];
        if (strcmp(o->id, s->id) != 0 || o->kind != s->kind)
            continue;
        struct keel_zipkin_span *m = keel_zipkin_span_merge(o, s);
        t->bytes += m->bytes - o->bytes;
        st->st.bytes += m->bytes - o->bytes;
        t->spans[i] = m;
        free(o);
        free(s);
        st->st.merged++;
        recompute_ts(t);
        goto bound;
    }
    if (t->n_spans >= st->lim.max_trace_spans) {
        st->st.accepted--;
        st->st.rejected++;
        free(s);
        return KEEL_ELIMIT;
    }
    if (t->n_spans == t->cap_spans) {
        t->cap_spans = t->cap_spans ? t->cap_spans * 2 : 4;
        t->spans = keel_realloc(t->spans, t->cap_spans * sizeof(*t->spans));
    }
    t->spans[t->n_spans++] = s;
    t->bytes += s->bytes + sizeof(void *);
    st->st.bytes += s->bytes + sizeof(void *);
    st->st.spans++;
    if (s->timestamp != 0 && (t->timestamp == 0 || s->timestamp < t->timestamp))
        t->timestamp = s->timestamp;
bound:
    /* Oldest first; the trace just added to goes last, and goes too if it alone is over. */
    while (st->oldest != NULL &&
           ((st->lim.max_spans && st->st.spans > st->lim.max_spans) ||
            (st->lim.max_bytes && st->st.bytes > st->lim.max_bytes)))
        evict_oldest(st);
    return 0;
}

void keel_trace_store_count_rejected(struct keel_trace_store *st, uint64_t n)
{
    st->st.rejected += n;
}

void keel_trace_store_stats(const struct keel_trace_store *st, struct keel_trace_store_stats *out)
{
    *out = st->st;
}

/* ---- name lists ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char **uniq(const char **v, size_t *n)
{
    if (*n > 1) {
        qsort(v, *n, sizeof(*v), cmp_str);
        size_t w = 1;
        for (size_t i = 1; i < *n; i++)
            if (strcmp(v[w - 1], v[i]) != 0)
                v[w++] = v[i];
        *n = w;
    }
    return v;
}

enum pick { PICK_SERVICE, PICK_NAME, PICK_REMOTE };

static const char **names(struct keel_trace_store *st, const char *service, enum pick what,
                          size_t *n)
{
    const char **v = keel_alloc((st->st.spans + 1) * sizeof(*v));
    *n = 0;
    for (struct keel_trace *t = st->oldest; t != NULL; t = t->newer)
        for (size_t i = 0; i < t->n_spans; i++) {
            const struct keel_zipkin_span *s = t->spans[i];
            const char *x = what == PICK_SERVICE ? s->local.service
                            : what == PICK_NAME  ? s->name
                                                 : s->remote.service;
            if (x == NULL)
                continue;
            if (service != NULL && (s->local.service == NULL || strcmp(s->local.service, service)))
                continue;
            v[(*n)++] = x;
        }
    return uniq(v, n);
}

const char **keel_trace_store_services(struct keel_trace_store *st, size_t *n)
{
    return names(st, NULL, PICK_SERVICE, n);
}

const char **keel_trace_store_span_names(struct keel_trace_store *st, const char *service, size_t *n)
{
    return names(st, service, PICK_NAME, n);
}

const char **keel_trace_store_remote_services(struct keel_trace_store *st, const char *service,
                                              size_t *n)
{
    return names(st, service, PICK_REMOTE, n);
}

/* ---- trace search ---- */

static bool span_has_term(const struct keel_zipkin_span *s, const char *key, const char *value)
{
    for (size_t i = 0; i < s->n_tags; i++)
        if (!strcmp(s->tags[i].key, key))
            return value == NULL || !strcmp(s->tags[i].value, value);
    if (value == NULL)
        for (size_t i = 0; i < s->n_annotations; i++)
            if (!strcmp(s->annotations[i].value, key))
                return true;
    return false;
}

/* Zipkin's QueryRequest.test: the spans of the service (all spans without one) must
 * between them have the span name, every annotation term and a duration in range. */
static bool matches(const struct keel_trace *t, const struct keel_trace_query *q)
{
    int64_t end_us = q->end_ts * 1000, begin_us = (q->end_ts - q->lookback) * 1000;
    if (t->timestamp == 0 || t->timestamp < begin_us || t->timestamp > end_us)
        return false;
    bool service = q->service == NULL, remote = q->remote_service == NULL;
    bool name = q->span_name == NULL;
    bool duration = q->min_duration == 0 && q->max_duration == 0;
    bool term[KEEL_TRACE_QUERY_MAX_TERMS] = { false };
    for (size_t i = 0; i < t->n_spans; i++) {
        const struct keel_zipkin_span *s = t->spans[i];
        if (q->service != NULL && (s->local.service == NULL || strcmp(s->local.service, q->service)))
            continue;
        service = true;
        if (!remote && s->remote.service != NULL && !strcmp(s->remote.service, q->remote_service))
            remote = true;
        if (!name && s->name != NULL && !strcmp(s->name, q->span_name))
            name = true;
        for (size_t k = 0; k < q->n_terms; k++)
            term[k] = term[k] || span_has_term(s, q->terms[k].key, q->terms[k].value);
        if (!duration && s->duration != 0 && s->duration >= q->min_duration &&
            (q->max_duration == 0 || s->duration <= q->max_duration))
            duration = true;
    }
    for (size_t k = 0; k < q->n_terms; k++)
        if (!term[k])
            return false;
    return service && remote && name && duration;
}

static int newest_first(const void *a, const void *b)
{
    const struct keel_trace *x = *(struct keel_trace *const *)a, *y = *(struct keel_trace *const *)b;
    if (x->timestamp != y->timestamp)
        return x->timestamp > y->timestamp ? -1 : 1;
    return strcmp(x->id, y->id);
}

struct keel_trace **keel_trace_store_query(struct keel_trace_store *st,
                                           const struct keel_trace_query *q, size_t *n)
{
    struct keel_trace **v = keel_alloc((st->st.traces + 1) * sizeof(*v));
    *n = 0;
    for (struct keel_trace *t = st->oldest; t != NULL; t = t->newer)
        if (matches(t, q))
            v[(*n)++] = t;
    qsort(v, *n, sizeof(*v), newest_first);
    if (*n > q->limit)
        *n = q->limit;
    return v;
}

/* ---- dependencies ---- */

struct links {
    struct keel_dependency_link *v;
    size_t n, cap;
};

static void link_add(struct links *l, const char *parent, const char *child, bool error)
{
    if (parent == NULL || child == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].parent, parent) && !strcmp(l->v[i].child, child)) {
            l->v[i].calls++;
            l->v[i].errors += error;
            return;
        }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = keel_realloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = (struct keel_dependency_link){ parent, child, 1, error };
}

static const struct keel_zipkin_span *find_span(const struct keel_trace *t, const char *id,
                                                const struct keel_zipkin_span *not)
{
    for (size_t i = 0; i < t->n_spans; i++)
        if (t->spans[i] != not && !strcmp(t->spans[i]->id, id))
            return t->spans[i];
    return NULL;
}

static bool is_error(const struct keel_zipkin_span *s)
{
    for (size_t i = 0; i < s->n_tags; i++)
        if (!strcmp(s->tags[i].key, "error"))
            return true;
    return false;
}

/* The service of the nearest ancestor that has one (bounded walk: ids may loop). */
static const char *ancestor_service(const struct keel_trace *t, const struct keel_zipkin_span *s)
{
    for (size_t hops = 0; s->parent_id[0] != '\0' && hops < t->n_spans; hops++) {
        const struct keel_zipkin_span *p = find_span(t, s->parent_id, s);
        if (p == NULL)
            return NULL;
        if (p->local.service != NULL)
            return p->local.service;
        s = p;
    }
    return NULL;
}

static bool has_server_child(const struct keel_trace *t, const struct keel_zipkin_span *c)
{
    for (size_t i = 0; i < t->n_spans; i++) {
        const struct keel_zipkin_span *s = t->spans[i];
        if (s->kind == KEEL_ZIPKIN_KIND_SERVER &&
            (!strcmp(s->parent_id, c->id) || !strcmp(s->id, c->id)))
            return true;
    }
    return false;
}

static void link_trace(struct links *l, const struct keel_trace *t)
{
    for (size_t i = 0; i < t->n_spans; i++) {
        const struct keel_zipkin_span *s = t->spans[i];
        bool err = is_error(s);
        switch (s->kind) {
        case KEEL_ZIPKIN_KIND_SERVER: {
            /* the caller is the instrumented parent when there is one, else whoever the
             * server saw as its remote peer */
            const char *parent = NULL;
            if (s->shared) {
                const struct keel_zipkin_span *c = find_span(t, s->id, s);
                parent = c != NULL ? c->local.service : NULL;
            }
            if (parent == NULL)
                parent = ancestor_service(t, s);
            if (parent == NULL)
                parent = s->remote.service;
            link_add(l, parent, s->local.service, err);
            break;
        }
        case KEEL_ZIPKIN_KIND_CLIENT:
            /* an uninstrumented server: only the client's view of it exists */
            if (!has_server_child(t, s))
                link_add(l, s->local.service, s->remote.service, err);
            break;
        case KEEL_ZIPKIN_KIND_PRODUCER:
            link_add(l, s->local.service, s->remote.service, err);
            break;
        case KEEL_ZIPKIN_KIND_CONSUMER:
            link_add(l, s->remote.service, s->local.service, err);
            break;
        default:
            break;
        }
    }
}

static int cmp_link(const void *a, const void *b)
{
    const struct keel_dependency_link *x = a, *y = b;
    int c = strcmp(x->parent, y->parent);
    return c != 0 ? c : strcmp(x->child, y->child);
}

struct keel_dependency_link *keel_trace_store_dependencies(struct keel_trace_store *st,
                                                           int64_t end_ts, int64_t lookback,
                                                           size_t *n)
{
    struct links l = { 0 };
    int64_t end_us = end_ts * 1000, begin_us = (end_ts - lookback) * 1000;
    for (struct keel_trace *t = st->oldest; t != NULL; t = t->newer)
        if (t->timestamp != 0 && t->timestamp >= begin_us && t->timestamp <= end_us)
            link_trace(&l, t);
    if (l.n > 1)
        qsort(l.v, l.n, sizeof(*l.v), cmp_link);
    *n = l.n;
    return l.v;
}
