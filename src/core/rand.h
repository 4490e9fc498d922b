/* Fast per-thread pseudo-random numbers (xoshiro256**, seeded from getrandom) for
 * request ids and trace ids: not for secrets. */
#ifndef KEEL_CORE_RAND_H
#define KEEL_CORE_RAND_H

#include <stdint.h>

uint64_t keel_rand64(void);
/* Writes a lower-case UUID v4 (36 chars, no NUL) to out. */
void keel_uuid4(char out[36]);

#endif
