/* Replays the committed libFuzzer corpus (fuzz/corpus/expr) through the fuzz target, so
 * `make test-unit` (and test-asan) exercise it without libFuzzer. */
#include "../../../fuzz/expr_fuzz.c"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

static void replay(void **state)
{
    const char *dir = "fuzz/corpus/expr";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static uint8_t buf[1 << 16];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    closedir(dp);
    assert_true(n >= 100);
    print_message("replayed %d corpus files\n", n);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(replay) };
    int rc = cmocka_run_group_tests_name("expr/fuzz_corpus", tests, NULL, NULL);
    keel_buf_pool_drain();
    return rc;
}
