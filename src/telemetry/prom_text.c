/* Scrape: merge every shard of the registry into Prometheus text format 0.0.4
 * (Go client ordering and number format). */
#include "telemetry/metrics.h"

#include "core/alloc.h"
#include "core/fmt.h"
#include "core/json.h"
#include "telemetry/metrics_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t keel_metrics_fmt_float(double v, char *dst)
{
    return keel_fmt_double(v, 'g', dst);
}

/* A bucket bound as Envoy writes it (fmt "{:.32g}"): whole numbers in full, so
 * le="1800000", not Go's "1.8e+06"; the rest as the shortest form (Istio's bounds are
 * all exact in binary, where the two agree). */
static void fmt_le(double v, char *dst)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(dst, 40, "%.0f", v);
        return;
    }
    dst[keel_metrics_fmt_float(v, dst)] = '\0';
}

static void put_float(struct keel_buf *out, double v)
{
    char tmp[KEEL_FMT_DOUBLE_MAX];
    size_t n = keel_metrics_fmt_float(v, tmp);
    keel_buf_append(out, tmp, n);
}

/* The one Prometheus escaper (text format 0.0.4): label values escape '\\', '"' and '\n',
 * HELP text '\\' and '\n'; every maximal invalid UTF-8 subpart becomes U+FFFD, since
 * Prometheus rejects the whole scrape on one invalid label value and values come from the
 * network (peer metadata, paths, headers). */
void keel_metrics_escape(struct keel_buf *out, const char *s, size_t len, bool quote)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t start = 0, i = 0;
    while (i < len) {
        unsigned char ch = p[i];
        if (ch < 0x80 && ch != '\\' && ch != '\n' && (ch != '"' || !quote)) {
            i++;
            continue;
        }
        size_t skip = 1, bad = 0;
        const char *rep = NULL;
        if (ch == '\\')
            rep = "\\\\";
        else if (ch == '\n')
            rep = "\\n";
        else if (ch == '"')
            rep = "\\\"";
        else {
            skip = keel_utf8_seq(p + i, len - i, &bad);
            if (skip > 0) {
                i += skip; /* valid: stays in the plain run */
                continue;
            }
            skip = bad;
        }
        keel_buf_append(out, s + start, i - start);
        if (rep)
            keel_buf_append(out, rep, 2);
        else
            keel_buf_append(out, KEEL_UTF8_REPLACEMENT, 3);
        i += skip;
        start = i;
    }
    keel_buf_append(out, s + start, len - start);
}

/* A series merged over shards. */
struct merged {
    const struct keel_metrics_series *s; /* labels from the first one */
    double v;
    uint64_t stamp;
    uint64_t *buckets;
};

static size_t g_cmp_n; /* label count for cmp_series (qsort has no context; scrape holds scrape_mu) */
static pthread_mutex_t scrape_mu = PTHREAD_MUTEX_INITIALIZER;

static int cmp_series(const void *a, const void *b)
{
    const struct keel_metrics_series *x = *(const struct keel_metrics_series *const *)a;
    const struct keel_metrics_series *y = *(const struct keel_metrics_series *const *)b;
    for (size_t i = 0; i < g_cmp_n; i++) {
        size_t n = x->values[i].len < y->values[i].len ? x->values[i].len : y->values[i].len;
        int c = n ? memcmp(x->values[i].p, y->values[i].p, n) : 0;
        if (c)
            return c;
        if (x->values[i].len != y->values[i].len)
            return x->values[i].len < y->values[i].len ? -1 : 1;
    }
    return 0;
}

static int cmp_fam(const void *a, const void *b)
{
    const struct keel_metrics_family *x = *(const struct keel_metrics_family *const *)a;
    const struct keel_metrics_family *y = *(const struct keel_metrics_family *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->id < y->id ? -1 : x->id > y->id);
}

struct snapshot {
    struct keel_metrics_family **fams;
    size_t n_fams;
    struct keel_metrics_shard **shards;
    size_t n_shards;
};

static void snapshot_take(struct keel_metrics *reg, struct snapshot *sn)
{
    pthread_mutex_lock(&reg->mu);
    sn->n_fams = reg->n_fams;
    sn->fams = keel_alloc((sn->n_fams ? sn->n_fams : 1) * sizeof(*sn->fams));
    memcpy(sn->fams, reg->fams, sn->n_fams * sizeof(*sn->fams));
    sn->n_shards = 0;
    for (struct keel_metrics_shard *sh = reg->shards; sh; sh = sh->next)
        sn->n_shards++;
    sn->shards = keel_alloc((sn->n_shards ? sn->n_shards : 1) * sizeof(*sn->shards));
    size_t i = 0;
    for (struct keel_metrics_shard *sh = reg->shards; sh; sh = sh->next)
        sn->shards[i++] = sh;
    pthread_mutex_unlock(&reg->mu);
}

/* Series of f from every shard, sorted by label values and merged. Returns the count. */
static size_t collect(const struct snapshot *sn, const struct keel_metrics_family *f, struct merged **outp)
{
    struct keel_metrics_series **all = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < sn->n_shards; i++) {
        struct keel_metrics_shard *sh = sn->shards[i];
        pthread_mutex_lock(&sh->mu);
        if (f->id < sh->n_tabs && sh->tabs[f->id].n_all) {
            const struct keel_metrics_table *t = &sh->tabs[f->id];
            if (n + t->n_all > cap) {
                cap = (n + t->n_all) * 2;
                all = keel_realloc(all, cap * sizeof(*all));
            }
            memcpy(all + n, t->all, t->n_all * sizeof(*all));
            n += t->n_all;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    if (n == 0) {
        *outp = NULL;
        return 0;
    }
    g_cmp_n = f->n_labels;
    qsort(all, n, sizeof(*all), cmp_series);
    struct merged *m = keel_calloc(n, sizeof(*m));
    size_t nb = f->n_bounds + 1, k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct keel_metrics_series *s = all[i];
        if (k == 0 || cmp_series(&m[k - 1].s, &all[i]) != 0) {
            m[k].s = s;
            m[k].v = 0;
            m[k].stamp = 0;
            if (f->type == KEEL_METRIC_HISTOGRAM)
                m[k].buckets = keel_calloc(nb, sizeof(uint64_t));
            if (f->type == KEEL_METRIC_GAUGE)
                m[k].v = NAN;
            k++;
        }
        struct merged *d = &m[k - 1];
        double v = atomic_load_explicit(&((struct keel_metrics_series *)s)->v, memory_order_relaxed);
        if (f->type == KEEL_METRIC_GAUGE) {
            uint64_t st = atomic_load_explicit(&((struct keel_metrics_series *)s)->stamp, memory_order_relaxed);
            if (isnan(d->v) || st >= d->stamp) {
                d->v = v;
                d->stamp = st;
            }
        } else {
            d->v += v;
        }
        if (f->type == KEEL_METRIC_HISTOGRAM)
            for (size_t b = 0; b < nb; b++)
                d->buckets[b] += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
    }
    free(all);
    *outp = m;
    return k;
}

static void put_labels(struct keel_buf *out, const struct keel_metrics_family *f, const struct keel_metrics_series *s,
                       const char *le)
{
    if (f->n_labels == 0 && !le)
        return;
    keel_buf_append(out, "{", 1);
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i)
            keel_buf_append(out, ",", 1);
        keel_buf_append_str(out, f->labels[i]);
        keel_buf_append(out, "=\"", 2);
        keel_metrics_escape(out, s->values[i].p, s->values[i].len, true);
        keel_buf_append(out, "\"", 1);
    }
    if (le) {
        if (f->n_labels)
            keel_buf_append(out, ",", 1);
        keel_buf_append(out, "le=\"", 4);
        keel_buf_append_str(out, le);
        keel_buf_append(out, "\"", 1);
    }
    keel_buf_append(out, "}", 1);
}

static void put_series(struct keel_buf *out, const struct keel_metrics_family *f, const struct merged *m)
{
    if (f->type != KEEL_METRIC_HISTOGRAM) {
        keel_buf_append_str(out, f->name);
        put_labels(out, f, m->s, NULL);
        keel_buf_append(out, " ", 1);
        put_float(out, m->v);
        keel_buf_append(out, "\n", 1);
        return;
    }
    uint64_t cum = 0;
    char le[40];
    for (size_t b = 0; b <= f->n_bounds; b++) {
        cum += m->buckets[b];
        if (b < f->n_bounds)
            fmt_le(f->bounds[b], le);
        else
            strcpy(le, "+Inf");
        keel_buf_append_str(out, f->name);
        keel_buf_append(out, "_bucket", 7);
        put_labels(out, f, m->s, le);
        keel_buf_append(out, " ", 1);
        put_float(out, (double)cum);
        keel_buf_append(out, "\n", 1);
    }
    keel_buf_append_str(out, f->name);
    keel_buf_append(out, "_sum", 4);
    put_labels(out, f, m->s, NULL);
    keel_buf_append(out, " ", 1);
    put_float(out, m->v);
    keel_buf_append(out, "\n", 1);
    keel_buf_append_str(out, f->name);
    keel_buf_append(out, "_count", 6);
    put_labels(out, f, m->s, NULL);
    keel_buf_append(out, " ", 1);
    put_float(out, (double)cum); /* = the +Inf bucket, by construction */
    keel_buf_append(out, "\n", 1);
}

static void merged_free(const struct keel_metrics_family *f, struct merged *m, size_t n)
{
    if (f->type == KEEL_METRIC_HISTOGRAM)
        for (size_t i = 0; i < n; i++)
            free(m[i].buckets);
    free(m);
}

/* A scrape in progress: the family list is fixed at begin; one family's series are
 * merged at a time, and rendered a chunk at a time, so memory is bounded by the largest
 * family's merged array (<= series limit x shards) and the caller's chunk size, never by
 * the size of the text. While any scrape is open the shards do not expire series
 * (keel_metrics_shard_expire), so the merged pointers stay valid between chunks. */
struct keel_metrics_scrape {
    struct keel_metrics *reg;
    struct snapshot sn;
    size_t fam;          /* next family to collect */
    struct merged *m;    /* its merged series, [pos, n) still to render */
    size_t n, pos;
    const struct keel_metrics_family *cur;
    const char *printed; /* name whose HELP/TYPE is out */
};

struct keel_metrics_scrape *keel_metrics_scrape_begin(struct keel_metrics *reg)
{
    struct keel_metrics_scrape *it = keel_calloc(1, sizeof(*it));
    it->reg = reg;
    atomic_fetch_add_explicit(&reg->scrapes, 1, memory_order_relaxed);
    snapshot_take(reg, &it->sn);
    qsort(it->sn.fams, it->sn.n_fams, sizeof(*it->sn.fams), cmp_fam);
    return it;
}

bool keel_metrics_scrape_next(struct keel_metrics_scrape *it, struct keel_buf *out, size_t want)
{
    static const char *const types[] = { "counter", "gauge", "histogram" };
    while (keel_buf_len(out) < want) {
        if (it->pos < it->n) {
            put_series(out, it->cur, &it->m[it->pos++]);
            continue;
        }
        if (it->m != NULL) {
            merged_free(it->cur, it->m, it->n);
            it->m = NULL;
        }
        if (it->fam == it->sn.n_fams)
            return true;
        const struct keel_metrics_family *f = it->sn.fams[it->fam++];
        pthread_mutex_lock(&scrape_mu);
        it->n = collect(&it->sn, f, &it->m);
        pthread_mutex_unlock(&scrape_mu);
        it->pos = 0;
        it->cur = f;
        if (it->n == 0)
            continue;
        if (!it->printed || strcmp(it->printed, f->name)) {
            if (f->help && f->help[0]) {
                keel_buf_append(out, "# HELP ", 7);
                keel_buf_append_str(out, f->name);
                keel_buf_append(out, " ", 1);
                keel_metrics_escape(out, f->help, strlen(f->help), false);
                keel_buf_append(out, "\n", 1);
            }
            keel_buf_printf(out, "# TYPE %s %s\n", f->name, types[f->type]);
            it->printed = f->name;
        }
    }
    return false;
}

void keel_metrics_scrape_end(struct keel_metrics_scrape *it)
{
    if (it == NULL)
        return;
    if (it->m != NULL)
        merged_free(it->cur, it->m, it->n);
    free(it->sn.fams);
    free(it->sn.shards);
    atomic_fetch_sub_explicit(&it->reg->scrapes, 1, memory_order_relaxed);
    free(it);
}

void keel_metrics_scrape(struct keel_metrics *reg, struct keel_buf *out)
{
    struct keel_metrics_scrape *it = keel_metrics_scrape_begin(reg);
    while (!keel_metrics_scrape_next(it, out, SIZE_MAX))
        ;
    keel_metrics_scrape_end(it);
}

int keel_metrics_get(struct keel_metrics *reg, const char *name, const struct keel_str *label_values, size_t n,
                     double *out)
{
    int rc = -1;
    double total = 0;
    pthread_mutex_lock(&scrape_mu);
    struct snapshot sn;
    snapshot_take(reg, &sn);
    for (size_t i = 0; i < sn.n_fams; i++) {
        const struct keel_metrics_family *f = sn.fams[i];
        if (strcmp(f->name, name) || f->n_labels != n)
            continue;
        struct merged *m;
        size_t k = collect(&sn, f, &m);
        for (size_t j = 0; j < k; j++) {
            bool eq = true;
            for (size_t l = 0; l < n && eq; l++)
                eq = keel_str_eq(m[j].s->values[l], label_values[l]);
            if (!eq)
                continue;
            rc = 0;
            if (f->type == KEEL_METRIC_HISTOGRAM) {
                for (size_t b = 0; b <= f->n_bounds; b++)
                    total += (double)m[j].buckets[b];
            } else {
                total += m[j].v;
            }
        }
        merged_free(f, m, k);
    }
    free(sn.fams);
    free(sn.shards);
    pthread_mutex_unlock(&scrape_mu);
    if (rc == 0)
        *out = total;
    return rc;
}
