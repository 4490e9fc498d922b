/* keel sample-app: one built-in HTTP service that plays the demo apps of the local mesh
 * (bookinfo's productpage/details/reviews/ratings, helloworld, httpbin, podinfo). A
 * thread per connection with blocking-style waits keeps it simple; every wait also
 * watches one stop descriptor, so SIGTERM ends it promptly. */
#ifndef KEEL_MESH_SAMPLE_APP_H
#define KEEL_MESH_SAMPLE_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keel_sample_app_options {
    const char *name;         /* "sample-app" */
    const char *version;      /* "v1" */
    const char *listen;       /* ADDR; NULL = 127.0.0.1:$PORT */
    const char **calls;       /* downstream URLs, called in order by the main page */
    size_t n_calls;
    int64_t latency_ms;       /* added to every response but the health checks */
    double error_rate;        /* 0..1: fraction of main-page requests answered 500 */
    int concurrency;          /* connections served at once; more wait in the backlog */
    bool strict_calls;        /* main page answers 503 when a call fails */
    bool no_propagate;        /* calls carry no trace context: an app that breaks traces */
    bool log;                 /* one line per request on stdout */
};

void keel_sample_app_options_defaults(struct keel_sample_app_options *o);
/* Serve until SIGTERM/SIGINT (returns 0). Returns 1 with a message on stderr when the
 * options or the listener are unusable. */
int keel_sample_app_run(const struct keel_sample_app_options *o);

#endif
