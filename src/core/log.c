#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

enum keel_log_level keel_log_min = KEEL_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warning", "error" };

void keel_log(enum keel_log_level lvl, const char *fmt, ...)
{
    if (lvl < keel_log_min)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ keel %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* one fputs per line so lines from several threads do not interleave */
    fprintf(stderr, "%s\n", line);
}
