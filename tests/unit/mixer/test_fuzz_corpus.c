/* The committed corpus of fuzz/mixer_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/mixer_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("mixer/fuzz_corpus", "fuzz/corpus/mixer", 6);
}
