/* The committed corpus of fuzz/accesslog_fuzz.c, replayed by make test-unit (corpus_replay.h). */
#include "../../../fuzz/accesslog_fuzz.c"

#include "corpus_replay.h"

int main(void)
{
    return corpus_replay_run("accesslog/fuzz_corpus", "fuzz/corpus/accesslog", 20);
}
