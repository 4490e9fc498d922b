/* Upgrade: h2c (RFC 7540 §3.2) on an HTTP/1.1 listener: a request with `Connection:
 * Upgrade, HTTP2-Settings`, `Upgrade: h2c` and one HTTP2-Settings header is answered
 * `101 Switching Protocols`, the connection continues as HTTP/2 (h2_conn.c) and the request
 * itself is stream 1.
 *
 * A request with a body is served as HTTP/1.1 and the upgrade ignored (RFC 7540 §3.2
 * allows it; nginx and Envoy do the same): stream 1 would have to carry a body received as
 * HTTP/1.1 while the connection already speaks HTTP/2, and clients upgrade on a first
 * bodyless request anyway. So do HTTP/1.0 requests, Connection: close and CONNECT. */
#include "proxy/session_int.h"

#include "core/buf.h"

#include <string.h>

#define SWITCHING "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"

/* Whether the comma-separated token list v names h2c. */
static bool names_h2c(struct keel_str v)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t b = i;
        while (i < v.len && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        if (keel_str_caseeq((struct keel_str){ v.p + b, i - b }, LIT("h2c")))
            return true;
        while (i < v.len && v.p[i] != ',')
            i++;
    }
    return false;
}

bool h2_upgrade_take(struct session *s)
{
    const struct keel_http_meta *m = &s->meta;
    if (s->h2s != NULL || s->h2c != NULL || !m->conn_upgrade || m->conn_close ||
        s->req.minor != 1 || !names_h2c(m->upgrade) ||
        keel_str_caseeq(s->req.method, LIT("CONNECT")))
        return false;
    if (!(m->body == KEEL_HTTP_BODY_NONE ||
          (m->body == KEEL_HTTP_BODY_LENGTH && m->content_length == 0)))
        return false;
    struct keel_str settings = { NULL, 0 };
    int n_settings = 0;
    bool named = false; /* Connection lists HTTP2-Settings (it is hop-by-hop) */
    for (size_t i = 0; i < s->req.n_headers; i++) {
        if (keel_str_caseeq(s->hdrs[i].name, LIT("http2-settings"))) {
            settings = s->hdrs[i].value;
            n_settings++;
            named = keel_http_hop_marked(m, i);
        }
    }
    if (n_settings != 1 || !named)
        return false;

    /* the request as stream 1's exchange reads it: the connection's headers left out */
    struct keel_buf req = { 0 };
    keel_buf_reserve(&req, s->req_head_bytes + 2);
    keel_buf_append(&req, s->req.method.p, s->req.method.len);
    keel_buf_append(&req, " ", 1);
    keel_buf_append(&req, s->req.target.p, s->req.target.len);
    keel_buf_append(&req, " HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < s->req.n_headers; i++) {
        const struct keel_http_header *h = &s->hdrs[i];
        if (keel_http_hdr_in(h, KEEL_HDR_HOP_BY_HOP) || keel_http_hop_marked(m, i))
            continue;
        keel_buf_reserve(&req, h->name.len + h->value.len + 4);
        keel_buf_append(&req, h->name.p, h->name.len);
        keel_buf_append(&req, ": ", 2);
        keel_buf_append(&req, h->value.p, h->value.len);
        keel_buf_append(&req, "\r\n", 2);
    }
    keel_buf_append(&req, "\r\n", 2);
    bool head = keel_str_eq(s->req.method, LIT("HEAD"));
    if (!h2_conn_start_upgraded(s, settings, head, &req)) {
        keel_buf_release(&req);
        return false; /* a malformed HTTP2-Settings: plain HTTP/1.1 it is */
    }
    /* the 101 goes out before the frames h2_conn_run appends; the connection session
     * keeps no request of its own */
    keel_buf_append(&s->out, SWITCHING, sizeof(SWITCHING) - 1);
    session_wait_request(s);
    s->phase = PH_H2;
    session_set_timer(s, T_NONE, 0); /* stream 1 has timers of its own */
    return true;
}
