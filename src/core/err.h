/* Return conventions (STYLE.md habit 8): 0 ok, negative KEEL_E* error, KEEL_AGAIN
 * for would-block; functions that make progress return a byte count > 0. */
#ifndef KEEL_CORE_ERR_H
#define KEEL_CORE_ERR_H

enum keel_err {
    KEEL_OK = 0,
    KEEL_AGAIN = -1,   /* would block / need more input */
    KEEL_EINVAL = -2,  /* malformed input */
    KEEL_ELIMIT = -3,  /* a configured limit was exceeded */
    KEEL_EIO = -4,     /* system call failed; errno says why */
    KEEL_ECLOSED = -5, /* peer closed */
    KEEL_ENOTFOUND = -6,
};

#endif
