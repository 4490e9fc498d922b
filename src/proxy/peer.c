/* Peer metadata: parse and validate. The header comes from the network, and its values
 * become metric label values, log fields and stdio JSON values, so anything that is not a
 * plausible Kubernetes identity is refused whole (the peer is then unknown, as without the
 * header) rather than passed on: a charset no output has to escape, lengths and a label
 * count that bound what one request can add to a series. */
#include "proxy/peer.h"

#include "core/err.h"

#include <string.h>

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool alnum(char c)
{
    return lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* RFC 1123 label as Kubernetes checks it: [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63. */
static bool dns_label(struct keel_str s)
{
    if (s.len == 0 || s.len > 63 || !lower_alnum(s.p[0]) || !lower_alnum(s.p[s.len - 1]))
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!lower_alnum(s.p[i]) && s.p[i] != '-')
            return false;
    return true;
}

/* RFC 1123 subdomain: dot-separated labels, <= 253 in all. */
static bool dns_subdomain(struct keel_str s)
{
    if (s.len == 0 || s.len > 253)
        return false;
    const char *p = s.p, *end = s.p + s.len;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        struct keel_str l = { p, (size_t)((dot ? dot : end) - p) };
        if (!dns_label(l))
            return false;
        if (dot == NULL)
            return true;
        p = dot + 1;
    }
}

/* A label value, or the name part of a key: (([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?,
 * <= 63; empty only where allowed. */
static bool qualified_part(struct keel_str s, bool empty_ok)
{
    if (s.len == 0)
        return empty_ok;
    if (s.len > KEEL_PEER_MAX_LABEL_LEN || !alnum(s.p[0]) || !alnum(s.p[s.len - 1]))
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!alnum(c) && c != '-' && c != '_' && c != '.')
            return false;
    }
    return true;
}

/* A label key: [prefix/]name, prefix a DNS subdomain. */
static bool label_key(struct keel_str k)
{
    const char *slash = memchr(k.p, '/', k.len);
    if (slash == NULL)
        return qualified_part(k, false);
    struct keel_str prefix = { k.p, (size_t)(slash - k.p) };
    struct keel_str name = { slash + 1, k.len - prefix.len - 1 };
    return dns_subdomain(prefix) && qualified_part(name, false);
}

static bool set_once(struct keel_str *field, struct keel_str v)
{
    if (field->p != NULL)
        return false; /* duplicate key: ambiguous, refuse */
    *field = v.p != NULL ? v : (struct keel_str){ "", 0 };
    return true;
}

static int parse(struct keel_str v, struct keel_peer *p)
{
    if (v.len > KEEL_PEER_MAX_LEN)
        return KEEL_EINVAL;
    const char *s = v.p, *end = v.p + v.len;
    while (s < end) {
        const char *semi = memchr(s, ';', (size_t)(end - s));
        const char *stop = semi ? semi : end;
        const char *eq = memchr(s, '=', (size_t)(stop - s));
        if (eq == NULL)
            return KEEL_EINVAL;
        struct keel_str k = { s, (size_t)(eq - s) }, val = { eq + 1, (size_t)(stop - eq - 1) };
        while (k.len > 0 && k.p[0] == ' ') { /* tolerated after ';', as in the old form */
            k.p++;
            k.len--;
        }
        bool ok;
        if (keel_str_eq(k, KEEL_STR("name")))
            ok = dns_subdomain(val) && set_once(&p->name, val);
        else if (keel_str_eq(k, KEEL_STR("namespace")))
            ok = dns_label(val) && set_once(&p->namespace, val);
        else if (keel_str_eq(k, KEEL_STR("sa")))
            ok = dns_subdomain(val) && set_once(&p->service_account, val);
        else if (keel_str_eq(k, KEEL_STR("service")))
            ok = dns_subdomain(val) && set_once(&p->service, val);
        else if (keel_str_eq(k, KEEL_STR("cluster")))
            ok = qualified_part(val, false) && set_once(&p->cluster, val);
        else if (k.len > 6 && memcmp(k.p, "label.", 6) == 0) {
            struct keel_str lk = { k.p + 6, k.len - 6 };
            ok = p->n_labels < KEEL_PEER_MAX_LABELS && label_key(lk) && qualified_part(val, true);
            if (ok)
                p->labels[p->n_labels++] = (struct keel_str_pair){ lk, val };
        } else {
            /* a key of a later version: skipped, but held to the same charset */
            ok = qualified_part(k, false) && qualified_part(val, true);
        }
        if (!ok)
            return KEEL_EINVAL;
        if (semi == NULL)
            break;
        s = semi + 1;
        if (s == end)
            return KEEL_EINVAL; /* trailing ';' */
    }
    return 0;
}

const struct keel_peer keel_peer_none;

int keel_peer_parse(struct keel_str v, struct keel_peer *p)
{
    memset(p, 0, sizeof(*p));
    int rc = parse(v, p);
    if (rc < 0 || p->name.len == 0) {
        memset(p, 0, sizeof(*p)); /* all or nothing: the peer is unknown */
        return rc < 0 ? rc : KEEL_EINVAL;
    }
    p->present = true;
    return 0;
}

static void field(struct keel_buf *out, const char *key, struct keel_str v, bool *first)
{
    if (v.len == 0)
        return;
    if (!*first)
        keel_buf_append(out, ";", 1);
    *first = false;
    keel_buf_append_str(out, key);
    keel_buf_append(out, "=", 1);
    keel_buf_append(out, v.p, v.len);
}

void keel_peer_encode(const struct keel_peer *p, struct keel_buf *out)
{
    bool first = true;
    field(out, "name", p->name, &first);
    field(out, "namespace", p->namespace, &first);
    field(out, "sa", p->service_account, &first);
    field(out, "service", p->service, &first);
    if (qualified_part(p->cluster, false))
        field(out, "cluster", p->cluster, &first);
    size_t start = keel_buf_len(out);
    for (size_t i = 0; i < p->n_labels; i++) {
        if (!label_key(p->labels[i].k) || !qualified_part(p->labels[i].v, true) ||
            keel_buf_len(out) - start + 8 + p->labels[i].k.len + p->labels[i].v.len > KEEL_PEER_MAX_LEN)
            continue;
        keel_buf_append(out, ";label.", 7);
        keel_buf_append(out, p->labels[i].k.p, p->labels[i].k.len);
        keel_buf_append(out, "=", 1);
        keel_buf_append(out, p->labels[i].v.p, p->labels[i].v.len);
    }
}
