/* The committed corpus of fuzz/zipkin_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/zipkin_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("tracing/zipkin_corpus", "fuzz/corpus/zipkin", 8);
}
