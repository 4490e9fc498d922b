/* The committed corpus of fuzz/expr_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/expr_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    int rc = corpus_replay_run("expr/fuzz_corpus", "fuzz/corpus/expr", 100);
    keel_buf_pool_drain(); /* the pooled buffers, for the leak checker */
    return rc;
}
