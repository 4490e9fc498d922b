/* keel mixer's ingest path on one core: a Report of KEEL_MIXER_BATCH seed-like bags (as a
 * keel sidecar encodes them: delta sets of one sidecar's consecutive requests) decoded and
 * run through the seed rules (000: newlog to stdio,
 * 001: doublerequestcount to prometheus), the stdio lines handed to a sink on /dev/null.
 * Prints bags per second of CPU time. `make bench-mixer`. */
#include "config/config.h"
#include "core/sink.h"
#include "mixer/mixer.h"
#include "telemetry/engine.h"
#include "telemetry/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct keel_telemetry *tel;
static struct keel_telemetry_shard *sh;

static void report(void *arg, struct keel_attr_bag *bag) { keel_telemetry_report(tel, sh, bag); }
static void discard(void *arg, struct keel_attr_bag *bag) {}

/* CPU time of this thread: the machine is shared, wall time would measure the neighbours
 * (the stdio sink's writer thread is not counted: it only copies to /dev/null) */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *paths[] = { "examples/seeds/000-newlog-stdio.yaml", "examples/seeds/001-doublerequestcount.yaml" };
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_paths(paths, 2, &d);
    keel_diag_fini(&d);
    if (!cfg) {
        fprintf(stderr, "cannot load the seeds (run from the repository root)\n");
        return 1;
    }
    struct keel_metrics *reg = keel_metrics_new();
    tel = keel_telemetry_new_role(cfg, reg, NULL, KEEL_TELEMETRY_MIXER, NULL);
    sh = keel_telemetry_shard_new(reg);
    char err[256];
    struct keel_sink *out = keel_sink_open("/dev/null", 32u << 20, err, sizeof(err));

    /* one request's bag as a client sidecar fills it (the attributes the seeds read and
     * the usual rest: ~35 attributes) */
    struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
#define S(id, s) do { struct keel_value v = keel_value_str(s, strlen(s)); keel_attr_bag_set(&bag, KEEL_ATTR_##id, &v); } while (0)
#define S_(bg, id, s) do { struct keel_value v_ = keel_value_str(s, strlen(s)); keel_attr_bag_set(bg, KEEL_ATTR_##id, &v_); } while (0)
#define I_(bg, id, n) do { struct keel_value v_ = keel_value_int(n); keel_attr_bag_set(bg, KEEL_ATTR_##id, &v_); } while (0)
#define I(id, n) do { struct keel_value v = keel_value_int(n); keel_attr_bag_set(&bag, KEEL_ATTR_##id, &v); } while (0)
    S(CONTEXT_REPORTER_KIND, "outbound"); S(CONTEXT_PROTOCOL, "http"); S(REQUEST_METHOD, "GET");
    S(SOURCE_WORKLOAD_NAME, "productpage-v1"); S(SOURCE_WORKLOAD_NAMESPACE, "default");
    S(SOURCE_NAME, "productpage-v1-6b746f74dc-9stvs"); S(SOURCE_NAMESPACE, "default");
    S(SOURCE_PRINCIPAL, "spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
    S(SOURCE_UID, "kubernetes://productpage-v1-6b746f74dc-9stvs.default");
    S(DESTINATION_WORKLOAD_NAME, "details-v1"); S(DESTINATION_WORKLOAD_NAMESPACE, "default");
    S(DESTINATION_NAME, "details-v1-79f774bdb9-bp6f4"); S(DESTINATION_NAMESPACE, "default");
    S(DESTINATION_SERVICE_HOST, "details.default.svc.cluster.local"); S(DESTINATION_SERVICE_NAME, "details");
    S(DESTINATION_SERVICE_NAMESPACE, "default"); S(REQUEST_HOST, "details:9080"); S(REQUEST_PATH, "/details/0");
    S(REQUEST_USERAGENT, "python-requests/2.21.0"); S(REQUEST_ID, "2d3ae6e2-4f5b-9a7e-a7a3-2f1b1f0b1c3d");
    S(REQUEST_SCHEME, "http");
    I(RESPONSE_CODE, 200); I(RESPONSE_SIZE, 178); I(REQUEST_SIZE, 0); I(REQUEST_TOTAL_SIZE, 220);
    I(RESPONSE_TOTAL_SIZE, 380); I(DESTINATION_PORT, 9080);
    struct keel_value v = keel_value_duration(1817000);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_DURATION, &v);
    v = (struct keel_value){ .type = KEEL_VALUE_TIMESTAMP, .u.t = { 1573723802, 480344000 } };
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_TIME, &v);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_TIME, &v);
    static const struct keel_str_pair sl[] = { { KEEL_STR("app"), KEEL_STR("productpage") },
                                               { KEEL_STR("version"), KEEL_STR("v1") } };
    static const struct keel_str_pair dl[] = { { KEEL_STR("app"), KEEL_STR("details") },
                                               { KEEL_STR("version"), KEEL_STR("v1") } };
    v = keel_value_map(sl, 2);
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_LABELS, &v);
    v = keel_value_map(dl, 2);
    keel_attr_bag_set(&bag, KEEL_ATTR_DESTINATION_LABELS, &v);
    v = (struct keel_value){ .type = KEEL_VALUE_IP_ADDRESS, .u.ip = { { 10, 44, 0, 7 }, 4 } };
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_IP, &v);
    keel_attr_bag_set(&bag, KEEL_ATTR_DESTINATION_IP, &v);

    /* a batch of one sidecar's consecutive requests: what differs per request (id, times,
     * duration, sizes, path, now and then the code) differs per bag */
    static struct keel_attr_bag batch_bags[KEEL_MIXER_BATCH];
    static char ids[KEEL_MIXER_BATCH][37];
    static const char *urls[] = { "/details/0", "/details/1", "/reviews/0", "/ratings/0" };
    for (int i = 0; i < KEEL_MIXER_BATCH; i++) {
        struct keel_attr_bag *x = &batch_bags[i];
        *x = bag;
        snprintf(ids[i], sizeof(ids[i]), "2d3ae6e2-4f5b-9a7e-a7a3-%012x", 0x2f1b1f0b + i * 7919);
        S_(x, REQUEST_ID, ids[i]);
        S_(x, REQUEST_PATH, urls[i % 4]);
        I_(x, RESPONSE_CODE, i % 10 == 9 ? 503 : 200);
        I_(x, RESPONSE_SIZE, 178 + i % 13);
        I_(x, RESPONSE_TOTAL_SIZE, 380 + i % 13);
        v = keel_value_duration(1817000 + i * 3301);
        keel_attr_bag_set(x, KEEL_ATTR_RESPONSE_DURATION, &v);
        v = (struct keel_value){ .type = KEEL_VALUE_TIMESTAMP, .u.t = { 1573723802, 480344000 + i * 211000 } };
        keel_attr_bag_set(x, KEEL_ATTR_REQUEST_TIME, &v);
        v.u.t.nsec += 1817000 + i * 3301;
        keel_attr_bag_set(x, KEEL_ATTR_RESPONSE_TIME, &v);
    }

    struct keel_mixer_batch *b = keel_mixer_batch_new();
    struct keel_buf msg = { 0 };
    double te = now();
    int enc_iters = argc > 2 ? atoi(argv[2]) : 1000;
    for (int i = 0; i < enc_iters; i++) { /* the client side: encode cost per bag */
        for (int j = 0; j < KEEL_MIXER_BATCH; j++)
            if (!keel_mixer_batch_add(b, &batch_bags[j]))
                return 1; /* every bag has the same attributes: cannot happen */
        msg.rpos = msg.wpos = 0;
        keel_mixer_batch_finish(b, &msg);
    }
    double enc = (now() - te) / ((double)enc_iters * KEEL_MIXER_BATCH);

    struct keel_mixer_decoder *dec = keel_mixer_decoder_new();
    long iters = argc > 1 ? atol(argv[1]) : 5000;
    const uint8_t *p = (const uint8_t *)keel_buf_rptr(&msg) + 5;
    size_t n = keel_buf_len(&msg) - 5;
    double t0 = now();
    long bags = 0;
    for (long i = 0; i < iters; i++) {
        struct keel_mixer_decode_stats st = { 0 };
        const char *why;
        int k = keel_mixer_decode(dec, p, n, report, NULL, &st, &why);
        if (k < 0) {
            fprintf(stderr, "decode: %s\n", why);
            return 1;
        }
        bags += k;
        struct keel_telemetry_output *o = keel_telemetry_shard_output(sh, KEEL_TELEMETRY_STDOUT);
        keel_sink_submit(out, keel_buf_rptr(&o->buf), keel_buf_len(&o->buf), o->lines);
        o->buf.rpos = o->buf.wpos = 0;
        o->lines = 0;
    }
    double el = now() - t0;
    /* the decode alone (bags handed to nobody): how the time splits */
    double td = now();
    for (long i = 0; i < iters; i++) {
        struct keel_mixer_decode_stats st = { 0 };
        const char *why;
        keel_mixer_decode(dec, p, n, discard, NULL, &st, &why);
    }
    double dec_ns = (now() - td) / bags * 1e9;
    printf("mixer ingest: %ld bags in %.3f s CPU = %.0f bags/s on one core (%.0f ns/bag; %zu bytes per "
           "%d-bag Report), of which decoding %.0f ns/bag; proxy-side encode %.0f ns/bag\n",
           bags, el, bags / el, el / bags * 1e9, n, KEEL_MIXER_BATCH, dec_ns, enc * 1e9);
    keel_sink_close(out);
    keel_buf_release(&msg);
    keel_mixer_batch_free(b);
    keel_mixer_decoder_free(dec);
    keel_telemetry_shard_free(sh);
    keel_telemetry_free(tel);
    keel_metrics_free(reg);
    keel_config_unref(cfg);
    return 0;
}
