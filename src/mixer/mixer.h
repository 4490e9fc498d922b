/* keel mixer: Mixer's Report API (istio.mixer.v1.Mixer/Report over h2c gRPC) in front of
 * the telemetry engine, and the report encoder keel's proxies use to talk to it.
 *
 *   decode.c   ReportRequest bytes -> attribute bags (CompressedAttributes, the global
 *              and message dictionaries, delta / independent encoding), pure
 *   words.c    Mixer's global word dictionary and word -> attribute id
 *   server.c   the gRPC server on one event loop, config, reload, drain
 *   http.c     /metrics (prometheus handlers), /ready and the mixer's own metrics
 *   encode.c   attribute bag -> CompressedAttributes (the proxy side) */
#ifndef KEEL_MIXER_MIXER_H
#define KEEL_MIXER_MIXER_H

#include "attr/attr.h"
#include "core/buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the global dictionary ---- */

/* Words of Mixer's global dictionary (istio/api mixer/v1/global_dictionary.yaml). */
size_t keel_mixer_global_words(void);
/* Word i (0 <= i < keel_mixer_global_words()), with its length. */
struct keel_str keel_mixer_global_word(size_t i);
/* The global index of a word, or -1; _h with h = keel_mixer_hash(w, len). */
int keel_mixer_global_index(const char *w, size_t len);
int keel_mixer_global_index_h(const char *w, size_t len, uint32_t h);
uint32_t keel_mixer_hash(const char *s, size_t n);
/* The attribute id of an attribute name, or -1 when keel's vocabulary does not have it.
 * A hash lookup, for the report path. */
int keel_mixer_attr_id(const char *name, size_t len);

/* ---- decoding ---- */

/* Largest gRPC message accepted (gRPC's default max receive size). */
#define KEEL_MIXER_MAX_MESSAGE (4u << 20)

struct keel_mixer_decoder;

/* Per-request counters of what decoding skipped (not errors: Mixer keeps such attributes
 * in the bag, where no keel rule can name them). */
struct keel_mixer_decode_stats {
    uint64_t bags;
    uint64_t unknown_attrs;   /* names outside keel's vocabulary */
    uint64_t mistyped_attrs;  /* a value of another type than the vocabulary's */
};

struct keel_mixer_decoder *keel_mixer_decoder_new(void);
void keel_mixer_decoder_free(struct keel_mixer_decoder *d);

typedef void (*keel_mixer_bag_fn)(void *arg, struct keel_attr_bag *bag);

/* Decode one serialized ReportRequest and call fn once per attribute set, in order, with
 * the bag it describes (valid during the call; fn may set filter_state, attributegen's
 * output, and nothing else: a delta set builds on the bag fn saw). The whole request is
 * checked before the first call, so a malformed one calls fn for nothing. Returns the
 * number of bags, or KEEL_EINVAL with a static reason in *why. Strings in the bags point
 * into d: valid until the next call on d. */
int keel_mixer_decode(struct keel_mixer_decoder *d, const uint8_t *p, size_t n, keel_mixer_bag_fn fn,
                      void *arg, struct keel_mixer_decode_stats *st, const char **why);

/* ---- encoding (the proxy's report client) ---- */

/* A ReportRequest under construction: bags appended as DELTA_ENCODING sets (each set only
 * what changed since the bag before); words that are not in the global dictionary go to
 * default_words (kept across the bags of one batch). add returns false, adding nothing,
 * for a bag that lacks an attribute the batch holds (a delta cannot remove one): finish
 * the batch, then add it to the empty batch, which takes any bag. */
struct keel_mixer_batch;
struct keel_mixer_batch *keel_mixer_batch_new(void);
void keel_mixer_batch_free(struct keel_mixer_batch *b);
bool keel_mixer_batch_add(struct keel_mixer_batch *b, const struct keel_attr_bag *bag);
size_t keel_mixer_batch_count(const struct keel_mixer_batch *b);
/* Bytes the batch holds (its encoded sets and words, and the last values kept for the
 * delta): what the client caps a Report at, besides its bag count. */
size_t keel_mixer_batch_bytes(const struct keel_mixer_batch *b);
/* Serialize the batch as one gRPC message (5-byte prefix + ReportRequest) onto out and
 * empty the batch. */
void keel_mixer_batch_finish(struct keel_mixer_batch *b, struct keel_buf *out);

/* ---- the report client (a proxy worker's; see client.c) ---- */

#define KEEL_MIXER_BATCH 100        /* bags per Report call ... */
#define KEEL_MIXER_BATCH_BYTES (1u << 20) /* ... or this many bytes (the mixer takes 4 MiB) ... */
#define KEEL_MIXER_FLUSH_MS 50      /* ... or what a batch has after this long */
#define KEEL_MIXER_MAX_CALLS 32     /* Report calls unanswered before batches queue */
#define KEEL_MIXER_MAX_QUEUED 20000 /* bags not yet answered before new ones are dropped, */
#define KEEL_MIXER_MAX_QUEUED_BYTES (32u << 20) /* or bytes of Reports not yet answered */

/* Bags by what became of them: answered OK by the mixer, refused or lost with the
 * connection, or never sent (mixer down or slow, queue full). Written by the client's
 * thread, read by any (admin scrape). */
struct keel_mixer_client_stats {
    atomic_uint_fast64_t sent, failed, dropped;
};

struct keel_loop;
struct keel_mixer_client;
/* A client on loop (its thread only) reporting to addr ("host:port"). */
struct keel_mixer_client *keel_mixer_client_new(struct keel_loop *loop, const char *addr,
                                                struct keel_mixer_client_stats *st);
/* Bags not yet answered count "dropped" (never sent) or "failed" (in flight). */
void keel_mixer_client_free(struct keel_mixer_client *c);
/* Draining: send the open batch and what is queued now. True once every bag is
 * answered, or the mixer is down (then waiting would only hold the shutdown up); call it
 * again each loop turn until then. */
bool keel_mixer_client_flush(struct keel_mixer_client *c);
const char *keel_mixer_client_target(const struct keel_mixer_client *c);
/* Queue one bag (copied by encoding); never blocks. */
void keel_mixer_client_report(struct keel_mixer_client *c, const struct keel_attr_bag *bag);

/* ---- the server ---- */

struct keel_mixer_options {
    const char *listen;      /* gRPC, 127.0.0.1:9091 */
    const char *prometheus;  /* /metrics of the prometheus handlers, 127.0.0.1:42422 */
    const char *monitoring;  /* /ready, /metrics of the mixer itself, 127.0.0.1:15014 */
    const char *config_dir;  /* watched and reloaded; NULL = none */
    bool istio_defaults;     /* add Istio 1.4's default telemetry config */
    int64_t drain_timeout_ms;
};

int keel_mixer_run(const struct keel_mixer_options *o);

#endif
