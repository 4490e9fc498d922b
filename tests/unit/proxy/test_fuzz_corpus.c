/* The committed corpus of fuzz/peer_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/peer_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("peer/fuzz_corpus", "fuzz/corpus/peer", 20);
}
