/* The committed corpus of fuzz/tracectx_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/tracectx_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("tracing/tracectx_corpus", "fuzz/corpus/tracectx", 10);
}
