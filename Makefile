# keel build. Plain GNU make: the tree is small, sources are found by wildcard,
# and `make -n` shows every command (see README "Why make").
CC       ?= cc
BUILD    ?= build
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CPPFLAGS += -std=c11 -D_GNU_SOURCE -Isrc -MMD -MP
LDLIBS   += -lyaml -lm -pthread

SRC      := $(sort $(wildcard src/*/*.c))
LIB_SRC  := $(filter-out src/cli/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)

.PHONY: all deps test test-unit test-e2e test-asan fuzz bench demo clean
all: $(BUILD)/keel

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -pthread -c -o $@ $<

$(BUILD)/libkeel.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/keel: $(BUILD)/src/cli/main.o $(BUILD)/libkeel.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Itests/unit -o $@ $< $(BUILD)/libkeel.a $(LDLIBS) -lcmocka

test: deps all $(UNIT_BIN)
	@scripts/run-unit-tests.sh $(UNIT_BIN)
	@scripts/run-e2e-tests.sh

test-unit: all $(UNIT_BIN)
	@scripts/run-unit-tests.sh $(UNIT_BIN)

test-e2e: all
	@scripts/run-e2e-tests.sh

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer, in its own
# build dir so the two builds never mix objects.
test-asan: deps
	$(MAKE) BUILD=build-asan CC=clang \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    test-unit
	KEEL_BIN=build-asan/keel ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) BUILD=build-asan CC=clang \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    test-e2e

demo:
	@echo "keel demo: not yet — the local mesh arrives with the local-mesh issue."

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/cli/main.d

# Access-log render micro-benchmark: ns per line of Istio's default text format.
.PHONY: bench-accesslog
bench-accesslog: $(BUILD)/bench/accesslog_bench
	$(BUILD)/bench/accesslog_bench

$(BUILD)/bench/accesslog_bench: bench/accesslog_bench.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

# ---- expressions (issue 3): libFuzzer run and micro-benchmark ----
# `make fuzz` builds each fuzz/*.c target with libFuzzer + ASan + UBSan and runs it for
# FUZZ_TIME seconds over its committed corpus (fuzz/corpus/<name minus _fuzz>/).
FUZZ_TIME ?= 25
FUZZ_SRC  := src/attr/attr.c src/attr/value.c $(wildcard src/expr/*.c) src/core/alloc.c src/core/buf.c
FUZZ_SAN  := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
fuzz:
	@mkdir -p build-fuzz/corpus/expr
	clang -std=c11 -D_GNU_SOURCE -Isrc -O1 -g $(FUZZ_SAN) -o build-fuzz/expr_fuzz fuzz/expr_fuzz.c $(FUZZ_SRC) -lm
	build-fuzz/expr_fuzz -max_total_time=$(FUZZ_TIME) -max_len=512 -timeout=10 -artifact_prefix=build-fuzz/ -print_final_stats=0 \
	    build-fuzz/corpus/expr fuzz/corpus/expr

.PHONY: bench-expr
bench-expr: $(BUILD)/libkeel.a
	@mkdir -p $(BUILD)/bench
	$(CC) -std=c11 -D_GNU_SOURCE -Isrc -O2 -g $(WARN) -o $(BUILD)/bench/expr_bench bench/expr_bench.c $(BUILD)/libkeel.a $(LDLIBS)
	$(BUILD)/bench/expr_bench
