# keel build. Plain GNU make: the tree is small, sources are found by wildcard,
# and `make -n` shows every command (see README "Why make").
SHELL    := /bin/bash
CC       ?= cc
BUILD    ?= build
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CPPFLAGS += -std=c11 -D_GNU_SOURCE -Isrc -MMD -MP
LDLIBS   += -lyaml -lnghttp2 -lm -pthread

SRC      := $(sort $(wildcard src/*/*.c))
LIB_SRC  := $(filter-out src/cli/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)

.PHONY: FORCE all deps test test-unit test-e2e test-asan test-tsan test-valgrind fuzz bench demo clean
all: $(BUILD)/keel

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -pthread -c -o $@ $<

$(BUILD)/libkeel.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# `keel --version`: the version and the commit built from, written to a header that only
# changes (and rebuilds main.o) when the commit does.
KEEL_VERSION := 0.8.0
KEEL_COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell \
                  git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
$(BUILD)/version.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define KEEL_VERSION "%s"\n#define KEEL_COMMIT "%s"\n' '$(KEEL_VERSION)' \
	    '$(KEEL_COMMIT)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
FORCE:
$(BUILD)/src/cli/main.o: $(BUILD)/version.h
$(BUILD)/src/cli/main.o: CPPFLAGS += -I$(BUILD)
$(BUILD)/src/proxy/admin.o: $(BUILD)/version.h
$(BUILD)/src/proxy/admin.o: CPPFLAGS += -I$(BUILD)

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
	KEEL_BIN=build-asan/keel KEEL_EXACT_REQUESTS=100000 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) BUILD=build-asan CC=clang \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    test-e2e

# The multi-threaded paths (workers, admin, config swaps, drain, telemetry under load)
# under ThreadSanitizer: keel exits non-zero on a race, which the e2e fixtures check.
test-tsan: deps
	$(MAKE) BUILD=build-tsan CC=clang CFLAGS="-O1 -g -fsanitize=thread" all
	KEEL_BIN=build-tsan/keel KEEL_LOAD_REQUESTS=20000 TSAN_OPTIONS="halt_on_error=0 exitcode=66" \
	    scripts/run-e2e-tests.sh tests/e2e/test_proxy_admin.py tests/e2e/test_proxy_registry.py \
	    tests/e2e/test_reload_under_load.py tests/e2e/test_telemetry_mesh.py

# Unit tests and the proxy's end-to-end tests under valgrind memcheck (DWARF 4: the
# valgrind of Debian 12 reads it fully).
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
test-valgrind: deps
	$(MAKE) BUILD=build-vg CFLAGS="-O1 -gdwarf-4" all $(UNIT_SRC:%.c=build-vg/%)
	UNIT_WRAPPER="$(VALGRIND)" scripts/run-unit-tests.sh $(UNIT_SRC:%.c=build-vg/%)
	KEEL_BIN=build-vg/keel KEEL_WRAPPER="$(VALGRIND)" scripts/run-e2e-tests.sh \
	    tests/e2e/test_proxy_http.py tests/e2e/test_proxy_errors.py tests/e2e/test_proxy_registry.py

# Bookinfo on a local keel mesh with traffic through the gateway, then its telemetry
# (scripts/demo.sh). `make demo DEMO_SECONDS=10` is the short form.
DEMO_SECONDS ?= 30
demo: deps all
	@KEEL_BIN=$(BUILD)/keel DEMO_SECONDS=$(DEMO_SECONDS) scripts/demo.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz build-vg

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/cli/main.d

# ---- proxy benchmark: keel beside nginx and HAProxy, see bench/README.md ----
# Knobs from the environment: ROUNDS, DURATION, CONNS, TARGETS, OUT_JSON, OUT_PNG, ...
.PHONY: bench-quick
bench: all $(BUILD)/bench/paced_load
	KEEL=$(BUILD)/keel PACED_LOAD=$(BUILD)/bench/paced_load bench/proxy-bench

bench-quick: all $(BUILD)/bench/paced_load
	ROUNDS=1 DURATION=3s KEEL=$(BUILD)/keel PACED_LOAD=$(BUILD)/bench/paced_load bench/proxy-bench

$(BUILD)/bench/paced_load: bench/paced_load.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 $(WARN) -o $@ $<

# Access-log render micro-benchmark: ns per line of Istio's default text format.
.PHONY: bench-accesslog
bench-accesslog: $(BUILD)/bench/accesslog_bench
	$(BUILD)/bench/accesslog_bench

$(BUILD)/bench/accesslog_bench: bench/accesslog_bench.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

# ---- fuzzing ----
# `make fuzz` builds each fuzz/<name>_fuzz.c target with libFuzzer + ASan + UBSan and runs
# it for FUZZ_TIME seconds over its committed corpus fuzz/corpus/<name>/ (new inputs go to
# build-fuzz/corpus/<name>/, crashes to build-fuzz/; inputs up to 1 KiB, config files up to
# 16 KiB). The same targets replay their corpus
# in `make test-unit` (tests/unit/*/test_fuzz_corpus.c).
FUZZ_TIME    ?= 20
FUZZ_TARGETS := $(patsubst fuzz/%_fuzz.c,%,$(wildcard fuzz/*_fuzz.c))
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
.PHONY: fuzz
fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus/$$t; \
	    echo "fuzz: building $$t"; \
	    clang -std=c11 -D_GNU_SOURCE -Isrc -O1 -g $(FUZZ_SAN) -o build-fuzz/$${t}_fuzz \
	        fuzz/$${t}_fuzz.c $(LIB_SRC) $(LDLIBS); \
	    echo "fuzz: running $$t for $(FUZZ_TIME)s"; \
	    case $$t in config) ml=16384;; *) ml=1024;; esac; \
	    build-fuzz/$${t}_fuzz -max_total_time=$(FUZZ_TIME) -max_len=$$ml -timeout=10 \
	        -artifact_prefix=build-fuzz/ -print_final_stats=1 \
	        build-fuzz/corpus/$$t fuzz/corpus/$$t 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==)" ; \
	    test $${PIPESTATUS[0]} -eq 0; \
	done

.PHONY: bench-expr
bench-expr: $(BUILD)/libkeel.a
	@mkdir -p $(BUILD)/bench
	$(CC) -std=c11 -D_GNU_SOURCE -Isrc -O2 -g $(WARN) -o $(BUILD)/bench/expr_bench bench/expr_bench.c $(BUILD)/libkeel.a $(LDLIBS)
	$(BUILD)/bench/expr_bench

# ---- telemetry engine (issue 5): micro-benchmark, ns per report ----
.PHONY: bench-telemetry
bench-telemetry: $(BUILD)/libkeel.a
	@mkdir -p $(BUILD)/bench
	$(CC) $(CPPFLAGS) -O2 -g $(WARN) -o $(BUILD)/bench/telemetry_bench bench/telemetry_bench.c $(BUILD)/libkeel.a $(LDLIBS)
	$(BUILD)/bench/telemetry_bench
