/* Replays the committed libFuzzer corpus (fuzz/corpus/mixer) through the fuzz target, so
 * `make test-unit` (and test-asan) exercise it without libFuzzer. */
#include "../../../fuzz/mixer_fuzz.c"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <cmocka.h>

static void replay(void **state)
{
    const char *dir = "fuzz/corpus/mixer";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *de;
    int n = 0;
    static uint8_t buf[1 << 16];
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    closedir(dp);
    assert_true(n >= 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(replay) };
    return cmocka_run_group_tests_name("mixer/fuzz_corpus", tests, NULL, NULL);
}
