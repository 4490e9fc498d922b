/* The committed corpus of fuzz/h2_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/h2_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("http/h2_corpus", "fuzz/corpus/h2", 30);
}
