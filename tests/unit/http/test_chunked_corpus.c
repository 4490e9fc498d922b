/* The committed corpus of fuzz/chunked_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/chunked_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("http/chunked_corpus", "fuzz/corpus/chunked", 24);
}
