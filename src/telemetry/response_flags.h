/* Envoy response flags, in Envoy's order (spec/access-logs-and-tracing.md §3): bit i of
 * a flag set is row i. The order is also the order in which flags are printed. */
#ifndef KEEL_TELEMETRY_RESPONSE_FLAGS_H
#define KEEL_TELEMETRY_RESPONSE_FLAGS_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_RESPONSE_FLAGS(X)                       \
    X(LH, "FailedLocalHealthCheck")                  \
    X(UH, "NoHealthyUpstream")                       \
    X(UT, "UpstreamRequestTimeout")                  \
    X(LR, "LocalReset")                              \
    X(UR, "UpstreamRemoteReset")                     \
    X(UF, "UpstreamConnectionFailure")               \
    X(UC, "UpstreamConnectionTermination")           \
    X(UO, "UpstreamOverflow")                        \
    X(NR, "NoRouteFound")                            \
    X(DI, "DelayInjected")                           \
    X(FI, "FaultInjected")                           \
    X(RL, "RateLimited")                             \
    X(UAEX, "UnauthorizedExternalService")           \
    X(RLSE, "RateLimitServiceError")                 \
    X(DC, "DownstreamConnectionTermination")         \
    X(URX, "UpstreamRetryLimitExceeded")             \
    X(SI, "StreamIdleTimeout")                       \
    X(IH, "InvalidEnvoyRequestHeaders")              \
    X(DPE, "DownstreamProtocolError")                \
    X(UMSDR, "UpstreamMaxStreamDurationReached")     \
    X(RFCF, "ResponseFromCacheFilter")               \
    X(NFCF, "NoFilterConfigFound")                   \
    X(DT, "DurationTimeout")                         \
    X(UPE, "UpstreamProtocolError")                  \
    X(NC, "NoClusterFound")                          \
    X(OM, "OverloadManagerTerminated")               \
    X(DF, "DnsResolutionFailed")                     \
    X(DO, "DropOverLoad")

enum keel_rf_bit {
#define X(s, l) KEEL_RF_BIT_##s,
    KEEL_RESPONSE_FLAGS(X)
#undef X
    KEEL_RF_COUNT
};

enum keel_rf {
#define X(s, l) KEEL_RF_##s = 1u << KEEL_RF_BIT_##s,
    KEEL_RESPONSE_FLAGS(X)
#undef X
};

/* Writes "UT,URX" (short) or "UpstreamRequestTimeout,..." (long) or "-" for none into
 * out (NUL-terminated, truncated at cap); returns the length. */
size_t keel_rf_format(uint32_t flags, int long_names, char *out, size_t cap);

#endif
