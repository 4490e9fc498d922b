/* What a gRPC exchange tells telemetry: grpc-status and grpc-message from the trailers
 * (or from the response head: a trailers-only response), and the messages each way that
 * session_http.c counted as the bodies went by. */
#include "proxy/session_int.h"

#include <string.h>

/* Envoy's %GRPC_STATUS% (CAMEL_STRING, its default) by code. */
static const char *const status_names[] = {
    "Ok", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
};

/* The value of header `name` in the "name: value\r\n" lines of p[0..len). */
static struct keel_str line_value(const char *p, size_t len, struct keel_str name)
{
    const char *end = p + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol != NULL ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL && keel_str_caseeq((struct keel_str){ p, (size_t)(colon - p) }, name)) {
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return (struct keel_str){ v, (size_t)(ve - v) };
        }
        p = eol != NULL ? eol + 1 : end;
    }
    return (struct keel_str){ NULL, 0 };
}

static struct keel_str head_value(const struct session *s, struct keel_str name)
{
    if (!s->res_head_done)
        return (struct keel_str){ NULL, 0 };
    for (size_t i = 0; i < s->res.n_headers; i++)
        if (keel_str_caseeq(s->rhdrs[i].name, name))
            return s->rhdrs[i].value;
    return (struct keel_str){ NULL, 0 };
}

void session_grpc_fill(struct session *s, struct keel_access_record *r)
{
    r->grpc = true;
    r->grpc_request_messages = s->req_msgs.messages;
    r->grpc_response_messages = s->res_msgs.messages;
    r->grpc_status = line_value(s->trailers, s->trailers_len, LIT("grpc-status"));
    r->grpc_message = line_value(s->trailers, s->trailers_len, LIT("grpc-message"));
    if (r->grpc_status.len == 0) { /* trailers-only */
        r->grpc_status = head_value(s, LIT("grpc-status"));
        r->grpc_message = head_value(s, LIT("grpc-message"));
    }
    int code = 0;
    for (size_t i = 0; i < r->grpc_status.len && code < 100; i++)
        code = r->grpc_status.p[i] >= '0' && r->grpc_status.p[i] <= '9'
                   ? code * 10 + (r->grpc_status.p[i] - '0')
                   : 100;
    if (r->grpc_status.len > 0 && code < (int)(sizeof(status_names) / sizeof(status_names[0])))
        r->grpc_status_name = keel_str_c(status_names[code]);
}
