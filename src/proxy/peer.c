#include "proxy/peer.h"

#include <string.h>

void keel_peer_parse(struct keel_str v, struct keel_peer *p)
{
    memset(p, 0, sizeof(*p));
    const char *s = v.p, *end = v.p + v.len;
    while (s < end) {
        const char *semi = memchr(s, ';', (size_t)(end - s));
        const char *stop = semi ? semi : end;
        const char *eq = memchr(s, '=', (size_t)(stop - s));
        if (eq != NULL) {
            struct keel_str k = { s, (size_t)(eq - s) }, val = { eq + 1, (size_t)(stop - eq - 1) };
            while (k.len > 0 && k.p[0] == ' ') {
                k.p++;
                k.len--;
            }
            if (keel_str_eq(k, KEEL_STR("name")))
                p->name = val;
            else if (keel_str_eq(k, KEEL_STR("namespace")))
                p->namespace = val;
            else if (keel_str_eq(k, KEEL_STR("sa")))
                p->service_account = val;
            else if (keel_str_eq(k, KEEL_STR("service")))
                p->service = val;
            else if (k.len > 6 && memcmp(k.p, "label.", 6) == 0 &&
                     p->n_labels < KEEL_PEER_MAX_LABELS) {
                p->labels[p->n_labels].k = (struct keel_str){ k.p + 6, k.len - 6 };
                p->labels[p->n_labels].v = val;
                p->n_labels++;
            }
        }
        s = stop + 1;
    }
    p->present = p->name.len > 0;
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
    for (size_t i = 0; i < p->n_labels; i++) {
        keel_buf_append(out, ";label.", 7);
        keel_buf_append(out, p->labels[i].k.p, p->labels[i].k.len);
        keel_buf_append(out, "=", 1);
        keel_buf_append(out, p->labels[i].v.p, p->labels[i].v.len);
    }
}
