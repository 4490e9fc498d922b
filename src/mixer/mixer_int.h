/* What server.c, grpc.c and http.c share. One thread runs it all: the gRPC connections,
 * the HTTP endpoints, signals and config reloads, on one event loop. */
#ifndef KEEL_MIXER_MIXER_INT_H
#define KEEL_MIXER_MIXER_INT_H

#include "mixer/mixer.h"

#include "config/config.h"
#include "core/loop.h"
#include "core/sink.h"
#include "net/sock.h"
#include "telemetry/engine.h"
#include "telemetry/metrics.h"

#include <stdint.h>

/* gRPC status codes used */
enum {
    GRPC_OK = 0,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_UNAVAILABLE = 14,
    GRPC_N_CODES = 17,
};

struct mixer_stats {
    uint64_t grpc_conns;
    uint64_t requests[GRPC_N_CODES]; /* Report calls answered, by gRPC status */
    uint64_t bags;
    uint64_t unknown_attrs, mistyped_attrs;
    uint64_t reloads_ok, reloads_failed;
};

struct gconn;
struct mixer_http;

struct mixer {
    const struct keel_mixer_options *opt;
    struct keel_loop *loop;
    struct keel_metrics *reg;          /* the prometheus handlers' series (survive reloads) */
    struct keel_telemetry_shard *sh;
    struct keel_telemetry *tel;        /* the running generation's plan */
    struct keel_config *cfg;
    struct keel_mixer_decoder *dec;
    struct keel_sink *sinks[KEEL_TELEMETRY_N_STREAMS];
    int64_t expiry_check_ms;           /* sweep period for expiring series, 0 = none */
    struct keel_timer sweep;
    struct keel_io listen_io;
    struct gconn *conns;
    size_t n_conns;
    struct mixer_http *prom_http, *mon_http;
    struct mixer_stats st;
    bool draining;
    bool ready;
};

/* grpc.c */
void mixer_grpc_accept(struct mixer *m);
void mixer_grpc_drain(struct mixer *m);
void mixer_grpc_close_all(struct mixer *m);

/* http.c: a tiny HTTP/1.1 endpoint (GET, one request per connection) */
typedef void (*mixer_http_fn)(struct mixer *m, const char *path, size_t path_len, int *status,
                              const char **ctype, struct keel_buf *body);
struct mixer_http *mixer_http_start(struct mixer *m, const char *addr, mixer_http_fn fn);
void mixer_http_stop(struct mixer_http *h);
/* the address it listens on, "ip:port" */
const char *mixer_http_addr(const struct mixer_http *h);

#endif
