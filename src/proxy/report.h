/* Filling the attribute bag of one exchange (report.c). */
#ifndef KEEL_PROXY_REPORT_H
#define KEEL_PROXY_REPORT_H

#include "attr/attr.h"
#include "core/buf.h"
#include "net/sock.h"
#include "proxy/peer.h"
#include "telemetry/accesslog.h"

#define REPORT_MAX_HEADERS (KEEL_HTTP_MAX_HEADERS + 2)

/* A workload identity with its labels as string pairs. */
struct report_identity {
    struct keel_str name, namespace, service_account;
    struct keel_str principal, uid; /* when known ahead (self); else built per report */
    struct keel_str cluster;        /* CLUSTER_ID; empty: unknown */
    const struct keel_str_pair *labels;
    size_t n_labels;
};

/* Per-worker scratch: the bag and what its values point at. */
struct report_scratch {
    struct keel_attr_bag bag;
    struct keel_str_pair req_pairs[REPORT_MAX_HEADERS];
    struct keel_str_pair resp_pairs[REPORT_MAX_HEADERS];
    char lower[16384];          /* lower-cased header names */
    struct keel_buf text;       /* principals, uids, flags */
    struct keel_str_pair src_meta[1], dst_meta[1]; /* {CLUSTER_ID: ...} */
};

struct report_in {
    const struct keel_access_record *r;
    bool outbound;                       /* reporter: the source's sidecar */
    bool waypoint;                       /* reporter: a waypoint between the two */
    const struct keel_peer *src_peer;    /* waypoint: the client, from its sidecar */
    const struct report_identity *self;  /* NULL: unknown */
    const struct keel_peer *peer;        /* the other side, from metadata exchange */
    const struct keel_addr *downstream_remote, *downstream_local, *upstream; /* or NULL */
    struct keel_str service_host, service_name, service_namespace;
    const char *reporter_uid;
    const char *tcp_event;               /* TCP: "open" or "close" */
    uint64_t tcp_received_delta, tcp_sent_delta;
    /* only the standard metrics read the bag (keel_telemetry_reads_fixed, no Mixer
     * report, no filter or %CEL%): what they do not read is left out (the response's
     * header map, of the request's all but content-type, uids, names, addresses, times,
     * the request line) */
    bool lean;
};

struct report_scratch *report_scratch_new(void);
void report_scratch_free(struct report_scratch *sc);
/* Fill sc->bag; valid until the next call with sc. */
void report_fill(struct report_scratch *sc, const struct report_in *in);

#endif
