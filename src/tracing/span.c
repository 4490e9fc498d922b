/* Span records as Zipkin v2 JSON (zipkin2-api: ids in lower-case hex, times in epoch
 * microseconds, tags string -> string, unknown fields omitted rather than empty). */
#include "tracing/tracing.h"

#include "core/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void keel_span_set(char *field, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(field, s, len);
    field[len] = '\0';
}

/* The one place spans escape a JSON string. */
static void jstr(struct keel_buf *out, const char *s)
{
    keel_json_str(out, s);
}

static void hex_field(struct keel_buf *out, const char *key, uint64_t hi, uint64_t lo, bool wide)
{
    char h[34];
    size_t n = 0;
    h[n++] = '"';
    if (wide) {
        keel_trace_hex16(hi, h + n);
        n += 16;
    }
    keel_trace_hex16(lo, h + n);
    n += 16;
    h[n++] = '"';
    keel_buf_append_str(out, key);
    keel_buf_append(out, h, n);
}

static void tag(struct keel_buf *out, bool *first, const char *k, const char *v)
{
    keel_buf_append(out, *first ? "" : ",", *first ? 0 : 1);
    *first = false;
    jstr(out, k);
    keel_buf_append(out, ":", 1);
    jstr(out, v);
}

static void tag_u64(struct keel_buf *out, bool *first, const char *k, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    tag(out, first, k, num);
}

void keel_span_json(struct keel_buf *out, const struct keel_span *sp)
{
    static const char *const kinds[] = { "CLIENT", "SERVER" };
    hex_field(out, "{\"traceId\":", sp->trace_hi, sp->trace_lo, sp->trace128 || sp->trace_hi != 0);
    hex_field(out, ",\"id\":", 0, sp->id, false);
    if (sp->parent_id != 0)
        hex_field(out, ",\"parentId\":", 0, sp->parent_id, false);
    keel_buf_append_str(out, ",\"kind\":\"");
    keel_buf_append_str(out, kinds[sp->kind & 1]);
    keel_buf_append_str(out, "\",\"name\":");
    jstr(out, sp->name);
    keel_buf_printf(out, ",\"timestamp\":%" PRId64 ",\"duration\":%" PRId64, sp->timestamp_us,
                    sp->duration_us < 1 ? (int64_t)1 : sp->duration_us);
    if (sp->debug)
        keel_buf_append_str(out, ",\"debug\":true");
    keel_buf_append_str(out, ",\"localEndpoint\":{\"serviceName\":");
    jstr(out, sp->local_service);
    if (sp->local_ipv4[0] != '\0') {
        keel_buf_append_str(out, ",\"ipv4\":");
        jstr(out, sp->local_ipv4);
    }
    keel_buf_append_str(out, "}");
    if (sp->remote_ipv4[0] != '\0') {
        keel_buf_append_str(out, ",\"remoteEndpoint\":{\"ipv4\":");
        jstr(out, sp->remote_ipv4);
        if (sp->remote_port != 0)
            keel_buf_printf(out, ",\"port\":%u", (unsigned)sp->remote_port);
        keel_buf_append_str(out, "}");
    }
    keel_buf_append_str(out, ",\"tags\":{");
    bool first = true;
    tag(out, &first, "component", "proxy");
    tag(out, &first, "node_id", sp->node_id);
    tag(out, &first, "guid:x-request-id", sp->request_id);
    tag(out, &first, "http.url", sp->url);
    tag(out, &first, "http.method", sp->method);
    tag(out, &first, "http.protocol", sp->protocol);
    tag(out, &first, "downstream_cluster", sp->downstream_cluster[0] ? sp->downstream_cluster : "-");
    tag(out, &first, "user_agent", sp->user_agent[0] ? sp->user_agent : "-");
    tag(out, &first, "peer.address", sp->peer_address);
    tag_u64(out, &first, "request_size", sp->request_size);
    tag_u64(out, &first, "response_size", sp->response_size);
    tag(out, &first, "upstream_cluster", sp->upstream_cluster);
    tag(out, &first, "upstream_cluster.name", sp->upstream_cluster);
    tag_u64(out, &first, "http.status_code", (uint64_t)sp->status);
    tag(out, &first, "response_flags", sp->response_flags[0] ? sp->response_flags : "-");
    if (sp->status >= 500 || sp->status == 0)
        tag(out, &first, "error", "true");
    tag(out, &first, "istio.canonical_service", sp->canonical_service);
    tag(out, &first, "istio.canonical_revision", sp->canonical_revision);
    tag(out, &first, "istio.namespace", sp->namespace);
    tag(out, &first, "istio.mesh_id", "cluster.local");
    for (size_t i = 0; i < sp->n_custom && i < KEEL_TRACE_MAX_CUSTOM_TAGS; i++)
        tag(out, &first, sp->custom[i].name, sp->custom[i].value);
    keel_buf_append_str(out, "}}");
}
