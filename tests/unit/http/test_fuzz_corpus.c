/* The committed corpus of fuzz/http_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/http_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("http/fuzz_corpus", "fuzz/corpus/http", 6);
}
