/* The committed corpus of fuzz/config_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/config_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("config/fuzz_corpus", "fuzz/corpus/config", 30);
}
