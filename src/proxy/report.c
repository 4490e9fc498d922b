/* From a finished exchange to the attribute bag the telemetry engine reads
 * (spec/attributes.md §5: what a sidecar fills, per reporter). The bag only points: at
 * the session's head buffers, the generation's strings, and this worker's scratch. */
#include "proxy/report.h"

#include "core/alloc.h"
#include "telemetry/response_flags.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIT(s) (struct keel_str){ (s), sizeof(s) - 1 }

struct report_scratch *report_scratch_new(void)
{
    return keel_calloc(1, sizeof(struct report_scratch));
}

void report_scratch_free(struct report_scratch *sc)
{
    if (sc == NULL)
        return;
    keel_buf_release(&sc->text);
    free(sc);
}

/* inline: ~60 attributes a report, a call each cost a fifth of the filling */
static inline __attribute__((always_inline)) void set(struct keel_attr_bag *bag, int id, struct keel_value v)
{
    keel_attr_bag_set(bag, id, &v);
}

static inline __attribute__((always_inline)) void set_str(struct keel_attr_bag *bag, int id, struct keel_str s)
{
    if (s.len > 0)
        set(bag, id, keel_value_str(s.p, s.len));
}

static void set_cstr(struct keel_attr_bag *bag, int id, const char *s)
{
    if (s != NULL && *s)
        set(bag, id, keel_value_str(s, strlen(s)));
}

/* A string built in the scratch text buffer. Offsets, not pointers, until the buffer has
 * stopped growing: report_fill resolves them at the end. */
struct pending {
    int id;
    size_t off, len;
};

/* prefix + a + mid + b, e.g. the principal "spiffe://cluster.local/ns/" NS "/sa/" SA */
static void set_concat(struct report_scratch *sc, struct pending *p, size_t *np, int id,
                       const char *prefix, struct keel_str a, const char *mid, struct keel_str b)
{
    size_t off = keel_buf_len(&sc->text);
    keel_buf_append_str(&sc->text, prefix);
    keel_buf_append(&sc->text, a.p, a.len);
    keel_buf_append_str(&sc->text, mid);
    keel_buf_append(&sc->text, b.p, b.len);
    p[*np] = (struct pending){ id, off, keel_buf_len(&sc->text) - off };
    (*np)++;
}

static void principal_and_uid(struct report_scratch *sc, struct pending *p, size_t *np,
                              const struct report_identity *id, bool source, bool lean)
{
    if (id == NULL || id->name.len == 0)
        return;
    int pid = source ? KEEL_ATTR_SOURCE_PRINCIPAL : KEEL_ATTR_DESTINATION_PRINCIPAL;
    int uid = source ? KEEL_ATTR_SOURCE_UID : KEEL_ATTR_DESTINATION_UID;
    /* a principal only when a certificate proved it (Istio): never made up from the
     * service account a peer claims */
    if (id->principal.len > 0)
        set_str(&sc->bag, pid, id->principal);
    if (lean)
        return;
    if (id->uid.len > 0)
        set_str(&sc->bag, uid, id->uid);
    else
        set_concat(sc, p, np, uid, "kubernetes://", id->name, ".", id->namespace);
}

static struct keel_value timestamp(int64_t wall_us)
{
    struct keel_value v = { .type = KEEL_VALUE_TIMESTAMP };
    v.u.t.sec = wall_us / 1000000;
    v.u.t.nsec = (int32_t)(wall_us % 1000000) * 1000;
    return v;
}

/* A socket address as an IP value and a port (no text round trip). */
static bool ip_port(const struct keel_addr *a, struct keel_value *ip, int64_t *port)
{
    if (a == NULL)
        return false;
    *ip = (struct keel_value){ .type = KEEL_VALUE_IP_ADDRESS };
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->ss;
        memcpy(ip->u.ip.a, &v4->sin_addr, 4);
        ip->u.ip.len = 4;
        *port = ntohs(v4->sin_port);
        return true;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->ss;
        memcpy(ip->u.ip.a, &v6->sin6_addr, 16);
        ip->u.ip.len = 16;
        *port = ntohs(v6->sin6_port);
        return true;
    }
    return false;
}

/* Header arrays as maps with lower-case names (HTTP names are case-insensitive; the
 * expression language's map keys are not). The counters live in locals: stores through
 * the char pointers could alias anything reached through a pointer. */
static struct keel_value header_map(struct report_scratch *sc, struct keel_str_pair *pairs,
                                    const struct keel_http_header *h, size_t n, size_t *lower_used,
                                    const struct keel_str **ua, const struct keel_str **ref)
{
    size_t k = 0, used = *lower_used;
    const struct keel_str *found_ua = NULL, *found_ref = NULL;
    if (n > REPORT_MAX_HEADERS)
        n = REPORT_MAX_HEADERS;
    for (; k < n; k++) {
        size_t len = h[k].name.len;
        if (len > sizeof(sc->lower) - used)
            break;
        char *dst = sc->lower + used;
        keel_ascii_lower_copy(dst, h[k].name.p, len);
        pairs[k].k = (struct keel_str){ dst, len };
        pairs[k].v = h[k].value;
        used += len;
        /* the first of each, as a map lookup would find (request.useragent, .referer) */
        if (found_ua == NULL && keel_http_hdr_id(&h[k]) == KEEL_HDR_USER_AGENT)
            found_ua = &pairs[k].v;
        else if (len == 7 && found_ref == NULL && memcmp(dst, "referer", 7) == 0)
            found_ref = &pairs[k].v;
    }
    *lower_used = used;
    if (ua != NULL)
        *ua = found_ua;
    if (ref != NULL)
        *ref = found_ref;
    return keel_value_map(pairs, k);
}

/* A lean bag's request.headers: only what the standard metrics read of it (content-type,
 * for request_protocol), the first one as a map lookup would find; no name is lowered. */
static struct keel_value content_type_map(struct keel_str_pair *pairs, const struct keel_http_header *h, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (keel_http_hdr_id(&h[k]) == KEEL_HDR_CONTENT_TYPE) {
            pairs[0] = (struct keel_str_pair){ LIT("content-type"), h[k].value };
            return keel_value_map(pairs, 1);
        }
    return keel_value_map(pairs, 0);
}

/* Istio's label service.istio.io/workload-name names the workload (a Deployment) whose
 * instance (a pod) the entry is; without it the entry is its own workload. */
static struct keel_str workload_name(const struct report_identity *id)
{
    for (size_t i = 0; i < id->n_labels; i++)
        if (id->labels[i].v.len > 0 &&
            keel_str_eq(id->labels[i].k, KEEL_STR("service.istio.io/workload-name")))
            return id->labels[i].v;
    return id->name;
}

static void identity(struct report_scratch *sc, const struct report_identity *id, bool source, bool lean)
{
    struct keel_attr_bag *bag = &sc->bag;
    if (id == NULL || id->name.len == 0)
        return;
    if (id->cluster.len > 0) {
        struct keel_str_pair *m = source ? sc->src_meta : sc->dst_meta;
        m[0] = (struct keel_str_pair){ LIT("CLUSTER_ID"), id->cluster };
        set(bag, source ? KEEL_ATTR_SOURCE_METADATA : KEEL_ATTR_DESTINATION_METADATA, keel_value_map(m, 1));
    }
    set_str(bag, source ? KEEL_ATTR_SOURCE_WORKLOAD_NAME : KEEL_ATTR_DESTINATION_WORKLOAD_NAME,
            workload_name(id));
    set_str(bag, source ? KEEL_ATTR_SOURCE_WORKLOAD_NAMESPACE : KEEL_ATTR_DESTINATION_WORKLOAD_NAMESPACE,
            id->namespace);
    set_str(bag, source ? KEEL_ATTR_SOURCE_NAMESPACE : KEEL_ATTR_DESTINATION_NAMESPACE, id->namespace);
    if (!lean) {
        set_str(bag, source ? KEEL_ATTR_SOURCE_NAME : KEEL_ATTR_DESTINATION_NAME, id->name);
        set_str(bag, source ? KEEL_ATTR_SOURCE_SERVICE_ACCOUNT : KEEL_ATTR_DESTINATION_SERVICE_ACCOUNT,
                id->service_account);
    }
    set(bag, source ? KEEL_ATTR_SOURCE_LABELS : KEEL_ATTR_DESTINATION_LABELS,
        keel_value_map(id->labels, id->n_labels));
}

/* What only expressions read (the standard metrics do not): left out of a lean bag.
 * Called before the pending texts are resolved (it adds one). */
static void rest(struct report_scratch *sc, const struct report_in *in, struct pending *pend, size_t *npend,
                 size_t *lower_used)
{
    struct keel_attr_bag *bag = &sc->bag;
    const struct keel_access_record *r = in->r;
    struct keel_value ip;
    int64_t port;
    if ((!in->outbound || in->waypoint) && ip_port(in->downstream_remote, &ip, &port)) {
        set(bag, KEEL_ATTR_SOURCE_IP, ip);
        set(bag, KEEL_ATTR_SOURCE_PORT, keel_value_int(port));
    }
    if (ip_port(in->outbound ? in->upstream : in->downstream_local, &ip, &port)) {
        set(bag, KEEL_ATTR_DESTINATION_IP, ip);
        set(bag, KEEL_ATTR_DESTINATION_PORT, keel_value_int(port));
    }
    set(bag, KEEL_ATTR_REQUEST_TIME, timestamp(r->start_us));

    if (r->is_tcp) {
        set(bag, KEEL_ATTR_CONNECTION_RECEIVED_BYTES_TOTAL, keel_value_int((int64_t)r->bytes_received));
        set(bag, KEEL_ATTR_CONNECTION_SENT_BYTES_TOTAL, keel_value_int((int64_t)r->bytes_sent));
        set(bag, KEEL_ATTR_CONNECTION_DURATION, keel_value_duration(r->duration_us * 1000));
    } else {
        set_str(bag, KEEL_ATTR_REQUEST_METHOD, r->method);
        set_str(bag, KEEL_ATTR_REQUEST_PATH, r->path);
        struct keel_str url_path = r->path;
        const char *q = url_path.len ? memchr(url_path.p, '?', url_path.len) : NULL;
        if (q != NULL) {
            set(bag, KEEL_ATTR_REQUEST_QUERY, keel_value_str(q + 1, (size_t)(url_path.p + url_path.len - q - 1)));
            url_path.len = (size_t)(q - url_path.p);
        }
        set_str(bag, KEEL_ATTR_REQUEST_URL_PATH, url_path);
        set_str(bag, KEEL_ATTR_REQUEST_SCHEME, r->scheme);
        set_str(bag, KEEL_ATTR_REQUEST_PROTOCOL, r->protocol);
        if (r->grpc) /* session_grpc.c */
            set_str(bag, KEEL_ATTR_RESPONSE_GRPC_MESSAGE, r->grpc_message);
        set_str(bag, KEEL_ATTR_REQUEST_ID, r->request_id);
        set(bag, KEEL_ATTR_REQUEST_HEADERS_BYTES, keel_value_int((int64_t)r->request_headers_bytes));
        if (r->request_duration_us >= 0)
            set(bag, KEEL_ATTR_REQUEST_DURATION, keel_value_duration(r->request_duration_us * 1000));
        set_str(bag, KEEL_ATTR_RESPONSE_CODE_DETAILS, r->code_details);
        set(bag, KEEL_ATTR_RESPONSE_HEADERS_BYTES, keel_value_int((int64_t)r->response_headers_bytes));
        if (r->response_duration_us >= 0)
            set(bag, KEEL_ATTR_RESPONSE_BACKEND_LATENCY,
                keel_value_duration(r->response_duration_us * 1000));
        set(bag, KEEL_ATTR_RESPONSE_TIME, timestamp(r->start_us + r->duration_us));
        set(bag, KEEL_ATTR_RESPONSE_HEADERS,
            header_map(sc, sc->resp_pairs, r->resp_headers, r->n_resp_headers, lower_used, NULL, NULL));
    }
    if (r->flags != 0) {
        size_t off = keel_buf_len(&sc->text);
        keel_buf_reserve(&sc->text, 128);
        size_t n = keel_rf_format(r->flags, 0, keel_buf_wptr(&sc->text), keel_buf_room(&sc->text));
        sc->text.wpos += n;
        pend[(*npend)++] = (struct pending){ KEEL_ATTR_CONTEXT_PROXY_ERROR_CODE, off, n };
    }
    set_cstr(bag, KEEL_ATTR_CONTEXT_REPORTER_UID, in->reporter_uid);
}

void report_fill(struct report_scratch *sc, const struct report_in *in)
{
    struct keel_attr_bag *bag = &sc->bag;
    const struct keel_access_record *r = in->r;
    struct pending pend[8];
    size_t npend = 0, lower_used = 0;
    keel_attr_bag_clear(bag);
    sc->text.rpos = sc->text.wpos = 0;

    set(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND,
        in->waypoint   ? keel_value_str("waypoint", 8)
        : in->outbound ? keel_value_str("outbound", 8)
                       : keel_value_str("inbound", 7));
    set(bag, KEEL_ATTR_CONTEXT_PROTOCOL, r->is_tcp ? keel_value_str("tcp", 3) : keel_value_str("http", 4));
    if (!in->lean)
        set(bag, KEEL_ATTR_CONTEXT_TIME, timestamp(r->start_us + r->duration_us));

    /* who is who: outbound reports are made by the source, inbound by the destination */
    struct report_identity peer = { 0 };
    if (in->peer != NULL && in->peer->present) {
        peer.name = in->peer->name;
        peer.namespace = in->peer->namespace;
        peer.service_account = in->peer->service_account;
        peer.labels = in->peer->labels;
        peer.n_labels = in->peer->n_labels;
        peer.cluster = in->peer->cluster;
    }
    const struct report_identity *src = in->outbound ? in->self : &peer;
    const struct report_identity *dst = in->outbound ? &peer : in->self;
    struct report_identity client = { 0 };
    if (in->waypoint) { /* neither side is us: the client's sidecar told who it is */
        if (in->src_peer != NULL && in->src_peer->present) {
            client.name = in->src_peer->name;
            client.namespace = in->src_peer->namespace;
            client.service_account = in->src_peer->service_account;
            client.labels = in->src_peer->labels;
            client.n_labels = in->src_peer->n_labels;
            client.cluster = in->src_peer->cluster;
        }
        src = &client;
        dst = &peer;
    }
    identity(sc, src, true, in->lean);
    identity(sc, dst, false, in->lean);
    principal_and_uid(sc, pend, &npend, src, true, in->lean);
    principal_and_uid(sc, pend, &npend, dst, false, in->lean);

    /* the destination service: the route's service (outbound), the one we back (inbound) */
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_HOST, in->service_host);
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAME, in->service_name);
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAMESPACE, in->service_namespace);

    if (r->is_tcp) {
        set(bag, KEEL_ATTR_CONNECTION_EVENT, keel_value_str(in->tcp_event, strlen(in->tcp_event)));
        set(bag, KEEL_ATTR_CONNECTION_RECEIVED_BYTES, keel_value_int((int64_t)in->tcp_received_delta));
        set(bag, KEEL_ATTR_CONNECTION_SENT_BYTES, keel_value_int((int64_t)in->tcp_sent_delta));
        set(bag, KEEL_ATTR_CONNECTION_MTLS, keel_value_bool(false));
    } else {
        set_str(bag, KEEL_ATTR_REQUEST_HOST, r->authority);
        if (r->grpc) { /* session_grpc.c */
            set_str(bag, KEEL_ATTR_RESPONSE_GRPC_STATUS, r->grpc_status);
            set(bag, KEEL_ATTR_REQUEST_GRPC_MESSAGES, keel_value_int((int64_t)r->grpc_request_messages));
            set(bag, KEEL_ATTR_RESPONSE_GRPC_MESSAGES, keel_value_int((int64_t)r->grpc_response_messages));
        }
        const struct keel_str *ua = NULL, *ref = NULL;
        struct keel_value hm = in->lean ? content_type_map(sc->req_pairs, r->req_headers, r->n_req_headers)
                                        : header_map(sc, sc->req_pairs, r->req_headers, r->n_req_headers,
                                                     &lower_used, &ua, &ref);
        set(bag, KEEL_ATTR_REQUEST_HEADERS, hm);
        set(bag, KEEL_ATTR_REQUEST_SIZE, keel_value_int((int64_t)r->bytes_received));
        set(bag, KEEL_ATTR_REQUEST_TOTAL_SIZE,
            keel_value_int((int64_t)(r->bytes_received + r->request_headers_bytes)));
        set(bag, KEEL_ATTR_RESPONSE_CODE, keel_value_int(r->status));
        set(bag, KEEL_ATTR_RESPONSE_SIZE, keel_value_int((int64_t)r->bytes_sent));
        set(bag, KEEL_ATTR_RESPONSE_TOTAL_SIZE,
            keel_value_int((int64_t)(r->bytes_sent + r->response_headers_bytes)));
        set(bag, KEEL_ATTR_RESPONSE_DURATION, keel_value_duration(r->duration_us * 1000));
        if (!in->lean) {
            if (ua != NULL)
                set_str(bag, KEEL_ATTR_REQUEST_USERAGENT, *ua);
            if (ref != NULL)
                set_str(bag, KEEL_ATTR_REQUEST_REFERER, *ref);
        }
    }
    set(bag, KEEL_ATTR_RESPONSE_FLAGS, keel_value_int((int64_t)r->flags));
    if (!in->lean)
        rest(sc, in, pend, &npend, &lower_used);
    /* the scratch text has stopped growing: point the bag at it */
    for (size_t i = 0; i < npend; i++)
        set(bag, pend[i].id, keel_value_str(sc->text.data + pend[i].off, pend[i].len));
}
