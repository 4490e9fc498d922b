/* Replays a committed libFuzzer corpus through the fuzz target that the including file
 * pulled in (`#include "../../../fuzz/NAME_fuzz.c"` first), so `make test-unit` and the
 * ASan run feed every corpus file to the target without libFuzzer. One copy for every
 * target: a test file is its include, its directory and its minimum file count. */
#ifndef KEEL_TEST_CORPUS_REPLAY_H
#define KEEL_TEST_CORPUS_REPLAY_H

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

static const char *corpus_dir;
static int corpus_min_files;

static void corpus_replay(void **state)
{
    (void)state;
    DIR *dp = opendir(corpus_dir);
    assert_non_null(dp);
    struct dirent *de;
    int n = 0;
    static uint8_t buf[1 << 16];
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", corpus_dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    closedir(dp);
    assert_true(n >= corpus_min_files); /* the corpus is there, not silently empty */
    print_message("replayed %d files of %s\n", n, corpus_dir);
}

/* Run the replay as a cmocka group named `group`; returns the group's status. */
static inline int corpus_replay_run(const char *group, const char *dir, int min_files)
{
    corpus_dir = dir;
    corpus_min_files = min_files;
    const struct CMUnitTest tests[] = { cmocka_unit_test(corpus_replay) };
    return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}

#endif
