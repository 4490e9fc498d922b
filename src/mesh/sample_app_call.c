/* The main page's downstream calls: plain HTTP/1.1 GETs, in order, through the proxy in
 * HTTP_PROXY (absolute-form request line, as curl and Python send to a forward proxy)
 * or straight to the URL's host. Connections are kept alive per client connection, so a
 * chain of apps behind sidecars costs no connect per request once warm. */
#include "mesh/sample_app_int.h"

#include "core/alloc.h"
#include "core/err.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- JSON helpers ---- */

void sa_json_strn(struct keel_buf *out, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    keel_buf_append(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch != '"' && ch != '\\' && ch >= 0x20)
            continue;
        keel_buf_append(out, p + run, i - run);
        if (ch == '"' || ch == '\\') {
            char esc[2] = { '\\', (char)ch };
            keel_buf_append(out, esc, 2);
        } else {
            char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
            keel_buf_append(out, esc, 6);
        }
        run = i + 1;
    }
    keel_buf_append(out, p + run, len - run);
    keel_buf_append(out, "\"", 1);
}

struct jv {
    const char *p, *end;
    int depth;
};

static void skip_ws(struct jv *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool is_digit(const struct jv *j) { return j->p < j->end && *j->p >= '0' && *j->p <= '9'; }

static bool j_string(struct jv *j)
{
    j->p++; /* the opening quote */
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c != '\\')
            continue;
        if (j->p >= j->end)
            return false;
        c = (unsigned char)*j->p++;
        if (c == 'u') {
            for (int k = 0; k < 4; k++, j->p++)
                if (j->p >= j->end || !strchr("0123456789abcdefABCDEF", *j->p) || *j->p == 0)
                    return false;
        } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
            return false;
        }
    }
    return false;
}

static bool j_number(struct jv *j)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (!is_digit(j))
        return false;
    if (*j->p == '0')
        j->p++;
    else
        while (is_digit(j))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!is_digit(j))
            return false;
        while (is_digit(j))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!is_digit(j))
            return false;
        while (is_digit(j))
            j->p++;
    }
    return true;
}

static bool j_literal(struct jv *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

static bool j_value(struct jv *j);

/* An object or an array: members separated by commas, keys for objects. */
static bool j_container(struct jv *j, char close)
{
    if (++j->depth > 64)
        return false;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        if (close == '}') {
            skip_ws(j);
            if (j->p >= j->end || *j->p != '"' || !j_string(j))
                return false;
            skip_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return false;
        }
        if (!j_value(j))
            return false;
        skip_ws(j);
        if (j->p >= j->end)
            return false;
        char c = *j->p++;
        if (c == close)
            break;
        if (c != ',')
            return false;
    }
    j->depth--;
    return true;
}

static bool j_value(struct jv *j)
{
    skip_ws(j);
    if (j->p >= j->end)
        return false;
    switch (*j->p) {
    case '{': return j_container(j, '}');
    case '[': return j_container(j, ']');
    case '"': return j_string(j);
    case 't': return j_literal(j, "true");
    case 'f': return j_literal(j, "false");
    case 'n': return j_literal(j, "null");
    default: return j_number(j);
    }
}

bool sa_json_valid(const char *p, size_t len)
{
    struct jv j = { p, p + len, 0 };
    if (!j_value(&j))
        return false;
    skip_ws(&j);
    return j.p == j.end;
}

/* ---- targets ---- */

static int split_url(struct sa_target *t)
{
    const char *u = t->url;
    if (strncasecmp(u, "http://", 7) != 0)
        return KEEL_EINVAL;
    const char *auth = u + 7;
    size_t alen = strcspn(auth, "/?#");
    if (alen == 0 || alen >= sizeof(t->host))
        return KEEL_EINVAL;
    memcpy(t->host, auth, alen);
    t->host[alen] = '\0';
    t->path = auth[alen] == '/' ? auth + alen : auth[alen] == '?' ? NULL : "/";
    if (t->path == NULL || auth[alen] == '#')
        t->path = "/";
    const char *port = NULL;
    if (t->host[0] == '[') {
        const char *rb = strchr(t->host, ']');
        if (rb == NULL)
            return KEEL_EINVAL;
        memcpy(t->hostname, t->host + 1, (size_t)(rb - t->host - 1));
        t->hostname[rb - t->host - 1] = '\0';
        port = rb[1] == ':' ? rb + 2 : NULL;
        if (rb[1] != '\0' && rb[1] != ':')
            return KEEL_EINVAL;
    } else {
        const char *colon = strchr(t->host, ':');
        size_t n = colon ? (size_t)(colon - t->host) : alen;
        memcpy(t->hostname, t->host, n);
        t->hostname[n] = '\0';
        port = colon ? colon + 1 : NULL;
    }
    t->port = 80;
    if (port != NULL) {
        char *end;
        long v = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || v < 1 || v > 65535)
            return KEEL_EINVAL;
        t->port = (int)v;
    }
    return t->hostname[0] ? 0 : KEEL_EINVAL;
}

static int resolve(struct sa_target *t)
{
    char hp[300];
    snprintf(hp, sizeof(hp), strchr(t->hostname, ':') ? "[%s]:%d" : "%s:%d", t->hostname, t->port);
    return keel_addr_parse(hp, &t->addr);
}

int sa_targets_init(struct sa_app *app)
{
    const struct keel_sample_app_options *o = app->o;
    app->targets = keel_calloc(o->n_calls ? o->n_calls : 1, sizeof(*app->targets));
    for (size_t i = 0; i < o->n_calls; i++) {
        struct sa_target *t = &app->targets[i];
        t->url = o->calls[i];
        if (split_url(t) < 0) {
            fprintf(stderr, "keel sample-app: --call '%s': want http://HOST[:PORT][/PATH]\n",
                    t->url);
            return KEEL_EINVAL;
        }
        /* A name only the mesh knows (details:9080) is fine through the proxy; direct
         * calls resolve now and, failing that, at each call. */
        if (!app->via_proxy)
            t->resolved = resolve(t) == 0;
    }
    return 0;
}

void sa_targets_fini(struct sa_app *app)
{
    free(app->targets);
    app->targets = NULL;
}

/* ---- connections ---- */

static void down_drop(struct sa_downs *ds, size_t i)
{
    close(ds->d[i].fd);
    ds->d[i] = ds->d[--ds->n];
}

void sa_downs_close(struct sa_downs *ds)
{
    while (ds->n > 0)
        down_drop(ds, ds->n - 1);
}

static bool same_addr(const struct keel_addr *a, const struct keel_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static int down_connect(const struct sa_app *app, const struct keel_addr *a, int *fd,
                        const char **err)
{
    int rc = keel_sock_connect(a, fd);
    if (rc == KEEL_AGAIN) {
        rc = sa_wait(app, *fd, POLLOUT, SA_CONNECT_TIMEOUT_MS);
        int e = rc == 0 ? keel_sock_connect_result(*fd) : 0;
        if (rc == 0 && e == 0)
            return 0;
        close(*fd);
        *fd = -1;
        *err = rc == KEEL_ELIMIT ? "connect timeout" : rc < 0 ? "stopping" : strerror(e);
        return KEEL_EIO;
    }
    if (rc < 0)
        *err = strerror(errno);
    return rc;
}

struct reply {
    int status;
    bool json;
    struct keel_buf raw;  /* the response as read: head, then framing and body */
    struct keel_buf body; /* decoded body (chunked) */
    bool body_in_raw;     /* body = raw[head_len .. head_len + body_len) */
    size_t head_len, body_len;
    bool keep;            /* the connection may carry the next call */
};

static const struct keel_http_limits down_limits = { 65536, 65536, KEEL_HTTP_MAX_HEADERS };

/* Read one response into r. *got_any tells a reused connection that died idle (retry on
 * a new one) from one that failed mid-response. */
static int read_reply(const struct sa_app *app, int fd, struct reply *r, bool *got_any,
                      const char **err)
{
    struct keel_http_header hs[KEEL_HTTP_MAX_HEADERS];
    struct keel_http_response res = { .headers = hs };
    struct keel_http_perror pe;
    struct keel_http_meta m;
    const size_t max = SA_MAX_BODY + 65536;
    int rc;
    *got_any = false;
    for (;;) {
        rc = keel_buf_len(&r->raw) == 0 ? KEEL_AGAIN
             : keel_http_parse_response(keel_buf_rptr(&r->raw), keel_buf_len(&r->raw),
                                        &down_limits, &res, &pe);
        if (rc > 0 && res.status >= 100 && res.status < 200) {
            keel_buf_consume(&r->raw, (size_t)rc); /* 100 Continue and friends */
            continue;
        }
        if (rc > 0)
            break;
        if (rc != KEEL_AGAIN) {
            *err = "bad response head";
            return KEEL_EINVAL;
        }
        rc = sa_read_more(app, fd, &r->raw, 65536, SA_IO_TIMEOUT_MS);
        if (rc < 0) {
            *err = rc == KEEL_ECLOSED ? "connection closed"
                   : rc == KEEL_ELIMIT ? "timeout or head too large" : "read error";
            return rc;
        }
        *got_any = true;
    }
    r->head_len = (size_t)rc;
    r->status = res.status;
    if (keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &pe) < 0) {
        *err = pe.what;
        return KEEL_EINVAL;
    }
    for (size_t i = 0; i < res.n_headers; i++)
        if (keel_str_caseeq(hs[i].name, KEEL_STR("content-type")))
            r->json = memmem(hs[i].value.p, hs[i].value.len, "json", 4) != NULL;
    r->keep = !m.conn_close;
    switch (m.body) {
    case KEEL_HTTP_BODY_NONE:
        r->body_in_raw = true;
        r->body_len = 0;
        break;
    case KEEL_HTTP_BODY_LENGTH:
        if (m.content_length > SA_MAX_BODY) {
            *err = "response body too large";
            return KEEL_ELIMIT;
        }
        while (keel_buf_len(&r->raw) < r->head_len + m.content_length) {
            if ((rc = sa_read_more(app, fd, &r->raw, max, SA_IO_TIMEOUT_MS)) < 0) {
                *err = "response body cut short";
                return rc;
            }
        }
        r->body_in_raw = true;
        r->body_len = (size_t)m.content_length;
        if (keel_buf_len(&r->raw) > r->head_len + r->body_len)
            r->keep = false; /* bytes nobody asked for: do not reuse */
        break;
    case KEEL_HTTP_BODY_EOF:
        r->keep = false;
        while ((rc = sa_read_more(app, fd, &r->raw, max, SA_IO_TIMEOUT_MS)) > 0)
            ;
        if (rc != KEEL_ECLOSED) {
            *err = "response body too large or too slow";
            return rc;
        }
        r->body_in_raw = true;
        r->body_len = keel_buf_len(&r->raw) - r->head_len;
        break;
    case KEEL_HTTP_BODY_CHUNKED: {
        struct keel_http_chunked ch = { 0 };
        size_t pos = r->head_len;
        for (;;) {
            size_t used, off, n;
            rc = pos == keel_buf_len(&r->raw) ? KEEL_CHUNK_MORE
                 : keel_http_chunked_step(&ch, keel_buf_rptr(&r->raw) + pos,
                                          keel_buf_len(&r->raw) - pos, &used, &off, &n);
            if (rc < 0) {
                *err = "bad chunked framing";
                return rc;
            }
            if (pos == keel_buf_len(&r->raw))
                used = 0;
            if (rc == KEEL_CHUNK_DATA) {
                if (keel_buf_len(&r->body) + n > SA_MAX_BODY) {
                    *err = "response body too large";
                    return KEEL_ELIMIT;
                }
                keel_buf_append(&r->body, keel_buf_rptr(&r->raw) + pos + off, n);
            }
            pos += used;
            if (rc == KEEL_CHUNK_DONE)
                break;
            if (rc == KEEL_CHUNK_MORE &&
                (rc = sa_read_more(app, fd, &r->raw, max, SA_IO_TIMEOUT_MS)) < 0) {
                *err = "chunked body cut short";
                return rc;
            }
        }
        r->body_in_raw = false;
        r->body_len = keel_buf_len(&r->body);
        if (pos != keel_buf_len(&r->raw))
            r->keep = false;
        break;
    }
    }
    return 0;
}

static int one_call(const struct sa_app *app, struct sa_downs *ds, const struct sa_target *t,
                    const struct sa_forward *fw, struct reply *r, const char **err)
{
    struct sa_target direct;
    const struct keel_addr *addr = &app->proxy;
    if (!app->via_proxy) {
        if (!t->resolved) {
            direct = *t;
            if (resolve(&direct) < 0) {
                *err = "cannot resolve host";
                return KEEL_ENOTFOUND;
            }
            t = &direct;
        }
        addr = &t->addr;
    }
    struct keel_buf req = { 0 };
    keel_buf_printf(&req, "GET %s%s%s HTTP/1.1\r\nHost: %s\r\n", app->via_proxy ? "http://" : "",
                    app->via_proxy ? t->host : "", t->path, t->host);
    for (size_t i = 0; i < fw->n; i++)
        keel_buf_printf(&req, "%.*s: %.*s\r\n", (int)fw->h[i].name.len, fw->h[i].name.p,
                        (int)fw->h[i].value.len, fw->h[i].value.p);
    if (!fw->has_user_agent)
        keel_buf_append_str(&req, "User-Agent: keel-sample-app\r\n");
    keel_buf_append_str(&req, "\r\n");

    int rc = KEEL_EIO;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t slot = ds->n;
        for (size_t i = 0; i < ds->n; i++)
            if (same_addr(&ds->d[i].addr, addr))
                slot = i;
        bool reused = slot < ds->n;
        if (!reused) {
            int fd;
            if ((rc = down_connect(app, addr, &fd, err)) < 0)
                break;
            if (ds->n == SA_MAX_DOWN)
                down_drop(ds, 0);
            slot = ds->n++;
            ds->d[slot] = (struct sa_down){ fd, *addr };
        }
        int fd = ds->d[slot].fd;
        bool got_any = false;
        keel_buf_consume(&r->raw, keel_buf_len(&r->raw));
        rc = sa_send_all(app, fd, keel_buf_rptr(&req), keel_buf_len(&req));
        if (rc == 0)
            rc = read_reply(app, fd, r, &got_any, err);
        else
            *err = "write error";
        if (rc == 0 && r->keep)
            break;
        down_drop(ds, slot);
        /* A kept-alive connection the peer closed while idle: try once more, afresh. */
        if (rc == 0 || !reused || got_any || rc == KEEL_ELIMIT)
            break;
    }
    keel_buf_release(&req);
    return rc;
}

static bool call_failed(int rc, int status) { return rc < 0 || status >= 500; }

int sa_calls_run(const struct sa_app *app, struct sa_downs *ds, const struct sa_forward *fw,
                 struct keel_buf *out)
{
    int failed = 0;
    keel_buf_append_str(out, "[");
    for (size_t i = 0; i < app->o->n_calls; i++) {
        const struct sa_target *t = &app->targets[i];
        struct reply r = { 0 };
        keel_buf_attach(&r.raw);
        keel_buf_attach(&r.body);
        const char *err = "error";
        int rc = one_call(app, ds, t, fw, &r, &err);
        failed += call_failed(rc, r.status);
        keel_buf_append_str(out, i ? ",{\"url\":" : "{\"url\":");
        sa_json_strn(out, t->url, strlen(t->url));
        if (rc < 0) {
            keel_buf_append_str(out, ",\"status\":0,\"error\":");
            sa_json_strn(out, err, strlen(err));
        } else {
            const char *b = r.body_in_raw ? keel_buf_rptr(&r.raw) + r.head_len
                                          : keel_buf_rptr(&r.body);
            keel_buf_printf(out, ",\"status\":%d,\"body\":", r.status);
            if (r.json && sa_json_valid(b, r.body_len))
                keel_buf_append(out, b, r.body_len);
            else
                sa_json_strn(out, b, r.body_len);
        }
        keel_buf_append_str(out, "}");
        keel_buf_release(&r.raw);
        keel_buf_release(&r.body);
    }
    keel_buf_append_str(out, "]");
    return failed;
}
