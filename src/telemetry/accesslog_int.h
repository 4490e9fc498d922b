/* What the access-log compiler and renderer share: the compiled op list. */
#ifndef KEEL_TELEMETRY_ACCESSLOG_INT_H
#define KEEL_TELEMETRY_ACCESSLOG_INT_H

#include "telemetry/accesslog.h"

#include "expr/expr.h"

#include <stddef.h>
#include <stdint.h>

/* What an op does at render time. Operators of the format language map onto these
 * (several operators share one id and differ by field offset or part). */
enum al_id {
    AL_LIT,             /* arena[off, off+len) copied as is */
    AL_UNSET,           /* known operator the record cannot answer yet: "-" / null */
    AL_CONST,           /* value fixed at compile (HOSTNAME, ENVIRONMENT): arena slice */
    AL_START_TIME,      /* default layout YYYY-MM-DDTHH:MM:SS.mmmZ */
    AL_START_TIME_FMT,  /* time segments tsegs[off, off+len) */
    AL_REQ,             /* request header / pseudo header, with ? fallback */
    AL_RESP,            /* response header / :status */
    AL_STRFIELD,        /* struct keel_str at record + field */
    AL_ADDR,            /* "ip:port" at record + field; part selects */
    AL_UPSTREAM_PROTOCOL,
    AL_RESPONSE_CODE,
    AL_FLAGS,           /* part: 0 short, 1 long names */
    AL_U64FIELD,        /* uint64_t at record + field */
    AL_ATTEMPTS,
    AL_DURATION,        /* int64_t microseconds at record + field; < 0 unset; ms printed */
    AL_ZERO,            /* always the number 0 */
    AL_QUERY_PARAM,     /* a query parameter of the path, name at noff[0] */
    AL_UNIQUE_ID,       /* a fresh UUID v4 per line */
    AL_CEL,             /* CEL expression exprs[off] over the record's attribute bag */
};

/* How the value is written. */
enum al_mode {
    AL_MODE_TEXT,       /* text log: unset "-", control bytes escaped \xHH */
    AL_MODE_JSON_TYPED, /* the operator is a whole JSON value: number / "string" / null */
    AL_MODE_JSON_INSTR, /* inside a JSON string: unset "-", JSON string escaping */
};

enum al_part { AL_PART_FULL, AL_PART_NOPORT, AL_PART_PORT };

/* pseudo headers (REQ: method..scheme; RESP: status) */
enum al_pseudo { AL_PS_NONE, AL_PS_METHOD, AL_PS_PATH, AL_PS_AUTHORITY, AL_PS_SCHEME, AL_PS_STATUS };

#define AL_F_HTTP_ONLY 0x01   /* TCP records: unset */
#define AL_F_TCP_ZERO 0x02    /* TCP records: the number 0 */
#define AL_F_REQID 0x04       /* REQ(x-request-id): falls back to record.request_id */
#define AL_F_TRUNC 0x08       /* trunc is set */
#define AL_F_NOQUERY 0x10     /* REQ: the value up to its '?' (REQ_WITHOUT_QUERY, PATH(NQ)) */
#define AL_F_CLEAN 0x20       /* the value never needs text escaping: written without the scan */

#define AL_MAX_NAMES 2

struct al_op {
    uint8_t id;
    uint8_t mode;
    uint8_t part;
    uint8_t flags;
    uint16_t field;                 /* offsetof in struct keel_access_record */
    uint8_t n_names;                /* REQ/RESP: names to try, in order */
    uint8_t pseudo[AL_MAX_NAMES];
    uint8_t hid[AL_MAX_NAMES];      /* REQ/RESP: each name's header id (http.h) */
    uint32_t trunc;                 /* max bytes of the value when AL_F_TRUNC */
    uint32_t off, len;              /* LIT/CONST: arena slice; START_TIME_FMT: tsegs slice */
    uint32_t noff[AL_MAX_NAMES];    /* header names, lower case, in the arena */
    uint32_t nlen[AL_MAX_NAMES];
    uint32_t pre_off, pre_len;      /* literal text written before the value (arena slice) */
};

enum al_tseg_kind { AL_TS_STRFTIME, AL_TS_FRAC, AL_TS_EPOCH };

/* One piece of a %START_TIME(fmt)% layout. */
struct al_tseg {
    uint8_t kind;
    uint8_t digits;                 /* AL_TS_FRAC: 1..9 */
    uint32_t off;                   /* AL_TS_STRFTIME: NUL-terminated chunk in the arena */
};

/* Once compiled, ops holds no AL_LIT and no AL_UNSET: their text is folded into the
 * pre_off/pre_len of the value op after them, or into the tail, so a line is one step per
 * value that can differ between records. */
struct keel_accesslog_format {
    enum keel_accesslog_encoding enc;
    struct al_op *ops;
    size_t n_ops;
    uint32_t tail_off, tail_len;    /* literal text after the last value op */
    struct al_tseg *tsegs;
    size_t n_tsegs;
    struct keel_expr **exprs;       /* %CEL(...)% expressions, compiled at format compile */
    size_t n_exprs;
    char *arena;                    /* literals, names, constants; ops refer by offset */
    size_t arena_len;
    size_t reserve_hint;            /* bytes reserved once per render: literals + slack */
};

/* Scratch bytes one operator may produce into (START_TIME layouts, flag lists). */
#define AL_SCRATCH 1024

#endif
