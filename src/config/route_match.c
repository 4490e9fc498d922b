/* The request-path half of routing: which VirtualService owns a host, which of its http
 * routes a request matches, which destination a weighted pick gives, and the rewritten
 * path. Pure functions over slices of the request; nothing here allocates. */
#include "config/config_int.h"

#include "http/http.h"

#include <regex.h>
#include <string.h>
#include <strings.h>

#define REGEX_SUBJECT_MAX 8192

static bool regex_ok(const void *re, struct keel_str s)
{
    char buf[REGEX_SUBJECT_MAX + 1];
    if (s.len > REGEX_SUBJECT_MAX)
        return false; /* longer than any URI keel accepts by default: no match */
    if (s.len)
        memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    return regexec(re, buf, 0, NULL, 0) == 0;
}

static bool sm_ok(const struct keel_route_strmatch *m, struct keel_str s, bool present)
{
    switch (m->kind) {
    case KEEL_SM_ANY:
        return true;
    case KEEL_SM_PRESENT:
        return present;
    case KEEL_SM_EXACT:
        return present && s.len == m->len &&
               (m->icase ? strncasecmp(s.p, m->s, m->len) == 0 : memcmp(s.p, m->s, m->len) == 0);
    case KEEL_SM_PREFIX:
        return present && s.len >= m->len &&
               (m->icase ? strncasecmp(s.p, m->s, m->len) == 0 : memcmp(s.p, m->s, m->len) == 0);
    case KEEL_SM_REGEX:
        return present && regex_ok(m->re, s);
    }
    return false;
}

static bool header_ok(const struct keel_route_kvmatch *k, const struct keel_route_req *r)
{
    struct keel_str v = { 0 };
    bool present = false;
    for (size_t i = 0; i < r->n_headers && !present; i++)
        if (keel_str_caseeq(r->headers[i].name, k->name)) {
            v = r->headers[i].value;
            present = true;
        }
    bool ok = sm_ok(&k->m, v, present);
    return k->negate ? !ok : ok;
}

/* The value of query parameter name in the path's query string. */
static bool query_value(struct keel_str path, struct keel_str name, struct keel_str *out)
{
    const char *q = path.len ? memchr(path.p, '?', path.len) : NULL;
    if (q == NULL)
        return false;
    const char *p = q + 1, *end = path.p + path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == name.len && memcmp(p, name.p, name.len) == 0) {
            *out = eq ? (struct keel_str){ eq + 1, (size_t)(stop - eq - 1) } : (struct keel_str){ stop, 0 };
            return true;
        }
        p = stop + 1;
    }
    return false;
}

static bool labels_ok(const struct keel_route_match *m, const struct keel_route_req *r)
{
    for (size_t i = 0; i < m->n_source_labels; i++) {
        bool ok = false;
        for (size_t j = 0; j < r->n_source_labels && !ok; j++)
            ok = !strcmp(m->source_labels[i].key, r->source_labels[j].key) &&
                 !strcmp(m->source_labels[i].value, r->source_labels[j].value);
        if (!ok)
            return false;
    }
    return true;
}

static bool match_ok(const struct keel_route_match *m, const struct keel_route_req *r)
{
    /* Envoy: exact and regex path matches ignore the query string; a prefix sees it all */
    struct keel_str path = r->path;
    if (m->uri.kind != KEEL_SM_PREFIX) {
        const char *q = path.len ? memchr(path.p, '?', path.len) : NULL;
        if (q)
            path.len = (size_t)(q - path.p);
    }
    if (!sm_ok(&m->uri, path, true) || !sm_ok(&m->method, r->method, true) ||
        !sm_ok(&m->authority, r->authority, true) || !sm_ok(&m->scheme, r->scheme, true))
        return false;
    if (m->port && m->port != r->port)
        return false;
    for (size_t i = 0; i < m->n_headers; i++)
        if (!header_ok(&m->headers[i], r))
            return false;
    for (size_t i = 0; i < m->n_query; i++) {
        struct keel_str v = { 0 };
        bool present = query_value(r->path, m->query[i].name, &v);
        if (!sm_ok(&m->query[i].m, v, present))
            return false;
    }
    return labels_ok(m, r);
}

const struct keel_route_http *keel_route_select(const struct keel_route_vs *v, const struct keel_route_req *r,
                                                const struct keel_route_match **which)
{
    *which = NULL;
    for (size_t i = 0; i < v->n_http; i++) {
        const struct keel_route_http *h = &v->http[i];
        if (h->n_match == 0)
            return h;
        for (size_t j = 0; j < h->n_match; j++)
            if (match_ok(&h->match[j], r)) {
                *which = &h->match[j];
                return h;
            }
    }
    return NULL;
}

const struct keel_route_dest *keel_route_pick(const struct keel_route_http *h, uint64_t rnd)
{
    if (h->n_dests == 0)
        return NULL;
    if (h->total_weight == 0)
        return &h->dests[0];
    uint64_t x = rnd % h->total_weight;
    for (size_t i = 0; i < h->n_dests; i++) {
        if (x < h->dests[i].weight)
            return &h->dests[i];
        x -= h->dests[i].weight;
    }
    return &h->dests[h->n_dests - 1];
}

size_t keel_route_rewrite_path(const struct keel_route_http *h, const struct keel_route_match *which,
                               struct keel_str path, char *out, size_t cap)
{
    if (h->rewrite_uri == NULL)
        return 0;
    size_t keep; /* bytes of the original path kept after the replacement */
    if (which && which->uri.kind == KEEL_SM_PREFIX) {
        keep = which->uri.len;
    } else {
        const char *q = path.len ? memchr(path.p, '?', path.len) : NULL;
        keep = q ? (size_t)(q - path.p) : path.len;
    }
    size_t rest = path.len - keep;
    size_t n = h->rewrite_uri_len + rest;
    if (n > cap || n == 0)
        return 0;
    memcpy(out, h->rewrite_uri, h->rewrite_uri_len);
    memcpy(out + h->rewrite_uri_len, path.p + keep, rest);
    return n;
}

/* ---- hosts ---- */

static bool host_eq(const char *pattern, struct keel_str host)
{
    if (pattern[0] == '*' && pattern[1] == '\0')
        return true;
    size_t n = strlen(pattern);
    if (pattern[0] == '*') { /* "*.example.com": any name ending so */
        return host.len >= n && strncasecmp(host.p + host.len - (n - 1), pattern + 1, n - 1) == 0 &&
               host.len > n - 1;
    }
    return n == host.len && strncasecmp(pattern, host.p, n) == 0;
}

bool keel_route_vs_has_host(const struct keel_route_vs *v, struct keel_str host, const char *fqdn)
{
    struct keel_str f = keel_str_c(fqdn);
    for (size_t i = 0; i < v->n_hosts; i++)
        if (host_eq(v->hosts[i], host) || (fqdn && host_eq(v->hosts[i], f)))
            return true;
    return false;
}

const struct keel_route_vs *keel_routing_mesh_vs(const struct keel_config *cfg, struct keel_str host,
                                                 const char *fqdn)
{
    const struct keel_routing *r = cfg->routing;
    for (size_t i = 0; r && i < r->n_vs; i++)
        if (r->vs[i].mesh && keel_route_vs_has_host(&r->vs[i], host, fqdn))
            return &r->vs[i];
    return NULL;
}
