# Postern build. `make` builds every binary into build/bin; `make SAN=1` builds the
# same tree with AddressSanitizer and UndefinedBehaviorSanitizer into build/san/bin.
# `make run` starts the system locally, `make test` runs every test.

CC      ?= cc
SAN     ?=
ifeq ($(SAN),1)
BUILD   ?= build/san
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT      = -O1
else
BUILD   ?= build
SANFLAGS =
OPT      = -O2
endif

PKGS     = libuv libnats libprotobuf-c libpq libssl libcrypto libmicrohttpd gmime-3.0 libcares \
           jansson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g $(OPT) $(SANFLAGS) \
           -Ilib -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS) -Wl,--as-needed
LDLIBS  += $(PKG_LIBS) -lpthread

GEN      = $(BUILD)/gen
OBJ      = $(BUILD)/obj
BIN      = $(BUILD)/bin

PROTO_SRC  = $(wildcard proto/*.proto)
PROTO_C    = $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTO_SRC))
PROTO_H    = $(PROTO_C:.c=.h)
MIGRATIONS = $(sort $(wildcard lib/store/migrations/*.sql))

LIB_SRC  = $(wildcard lib/*/*.c)
LIB_OBJ  = $(patsubst lib/%.c,$(OBJ)/lib/%.o,$(LIB_SRC)) \
           $(patsubst $(GEN)/%.c,$(OBJ)/gen/%.o,$(PROTO_C)) $(OBJ)/gen/migrations.o
LIBA     = $(BUILD)/libpostern.a

SERVICES = $(notdir $(wildcard services/*))
TOOLS    = $(notdir $(wildcard tools/*))
PROGRAMS = $(addprefix $(BIN)/,$(SERVICES) $(TOOLS))

BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

# Test helper programs (tests/tools/*.c), e.g. mime_dump for the Dovecot differential test.
TESTTOOL_SRC = $(wildcard tests/tools/*.c)
TESTTOOL_BIN = $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(TESTTOOL_SRC))

.PHONY: all deps run test test-unit test-e2e test-faults test-perf perf-baseline test-san bench clean
.SECONDARY:

all: $(PROGRAMS) $(UNIT_BIN) $(BENCH_BIN) $(TESTTOOL_BIN)

$(BUILD)/tests/tools/%: tests/tools/%.c $(LIBA) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIBA) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(GEN)/migrations.c: $(MIGRATIONS) deploy/embed-sql.sh
	@mkdir -p $(GEN)
	sh deploy/embed-sql.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(OBJ)/lib/%.o: lib/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(OBJ)/gen/%.o: $(GEN)/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -c -o $@ $<

# webd's pages, embedded into the binary.
WWW = $(sort $(shell find services/webd/www -type f 2>/dev/null))
$(GEN)/www.c: $(WWW) deploy/embed-www.sh
	@mkdir -p $(GEN)
	sh deploy/embed-www.sh services/webd/www $(WWW) > $@.tmp && mv $@.tmp $@
$(BIN)/webd: $(OBJ)/gen/www.o

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(OBJ)/services/%.o $(OBJ)/tools/%.o: | $(PROTO_H)
$(OBJ)/services/%.o: services/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<
$(OBJ)/tools/%.o: tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

define program
$(BIN)/$(1): $(patsubst %.c,$(OBJ)/%.o,$(wildcard $(2)/$(1)/*.c)) $(LIBA)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $$@ $$^ $(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call program,$(s),services)))
$(foreach t,$(TOOLS),$(eval $(call program,$(t),tools)))

# A unit test of a service's module links that service's objects except main.o:
# tests/unit/test_smtpd_*.c gets services/smtpd/*.o.
svc_objs = $(patsubst %.c,$(OBJ)/%.o,$(filter-out %/main.c,$(wildcard services/$(1)/*.c)))
# relay_send drives relayd's SMTP client (services/relayd/smtpc.c) from the command line.
$(BUILD)/tests/tools/relay_send: tests/tools/relay_send.c $(call svc_objs,relayd) $(LIBA) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iservices/relayd $(LDFLAGS) -o $@ $< $(call svc_objs,relayd) $(LIBA) $(LDLIBS)
.SECONDEXPANSION:
$(BUILD)/tests/%: tests/unit/%.c $$(call svc_objs,$$(word 2,$$(subst _, ,$$*))) $(LIBA) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iservices/$(word 2,$(subst _, ,$*)) $(LDFLAGS) -o $@ $< \
	    $(call svc_objs,$(word 2,$(subst _, ,$*))) $(LIBA) $(LDLIBS) -lcmocka

# Installs the Debian packages the build, `make run` and the tests need (root or sudo).
deps:
	sh deploy/deps.sh

run: deps
	$(MAKE) all
	sh deploy/run.sh

test: deps
	$(MAKE) all
	$(MAKE) SAN=1 all
	sh tests/run.sh

test-unit: all
	sh tests/run.sh unit

test-e2e: all
	sh tests/run.sh e2e

# Instruction counts (callgrind) of one SMTP transaction and one POP3 RETR against
# tests/perf/baseline.txt: fails on a rise over 10% (tests/perf/README.md). `make
# perf-baseline` writes the baseline again when a rise is intended.
test-perf: all
	sh tests/run.sh perf

perf-baseline: all
	sh tests/perf/callgrind.sh --update

# The fault matrix (tests/faults/README.md): every service and server killed, restarted and
# stopped under load; the figures in build/faults/results.md.
test-faults: all
	sh tests/run.sh faults

bench: deps
	$(MAKE) all
	sh bench/run.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing: libFuzzer harnesses tests/fuzz/fuzz_<name>.c, built with Debian's clang -----
# Everything a harness links is compiled again with clang into its own tree ($(FUZZ_BUILD)/obj:
# lib/, the protobuf code generated into $(FUZZ_BUILD)/gen, the services' files but main.c),
# instrumented for libFuzzer and built with AddressSanitizer and UBSan; gcc's objects are never
# mixed in. Like a unit test, fuzz_<svc>_<x>.c is also linked with services/<svc>/*.o but main.o;
# the library comes from an archive, so a harness that defines functions itself (the session
# harnesses' tests/fuzz/fe_fake.h: the front end, PostgreSQL, NATS) keeps those members out.
# `make fuzz`: each harness for FUZZ_SECONDS (default 600) from its committed corpus
# tests/fuzz/corpus/<name>/, then the inputs that reached new edges are merged into it.
# `make fuzz-smoke` (run by `make test`): each for FUZZ_SMOKE_SECONDS (default 15) on a copy of
# the corpus; fails on any crash, leak, timeout or sanitizer report (build/fuzz/artifacts).
# FUZZ_TARGETS="imapd_parse sasl" picks harnesses; tests/fuzz/README.md says more.
FUZZ_CC            ?= clang
FUZZ_BUILD          = build/fuzz
FUZZ_SECONDS       ?= 600
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_SAN            = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                      -fno-omit-frame-pointer
FUZZ_CFLAGS         = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 $(FUZZ_SAN) \
                      -Ilib -I$(FUZZ_BUILD)/gen $(PKG_CFLAGS) -MMD -MP
FUZZ_GEN            = $(FUZZ_BUILD)/gen
FUZZ_OBJ            = $(FUZZ_BUILD)/obj
FUZZ_PROTO_C        = $(patsubst proto/%.proto,$(FUZZ_GEN)/%.pb-c.c,$(PROTO_SRC))
FUZZ_PROTO_H        = $(FUZZ_PROTO_C:.c=.h)
FUZZ_LIBA           = $(FUZZ_BUILD)/libpostern.a
FUZZ_LIB_OBJ        = $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(LIB_SRC)) \
                      $(patsubst $(FUZZ_GEN)/%.c,$(FUZZ_OBJ)/gen/%.o,$(FUZZ_PROTO_C)) \
                      $(FUZZ_OBJ)/gen/migrations.o
FUZZ_NAMES          = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS       ?= $(FUZZ_NAMES)
FUZZ_BIN            = $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))
fuzz_svc            = $(word 1,$(subst _, ,$(1)))
fuzz_svc_objs       = $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(filter-out %/main.c,$(wildcard services/$(1)/*.c)))

.PHONY: fuzz fuzz-smoke fuzz-build

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	sh tests/fuzz/run.sh fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	sh tests/fuzz/run.sh smoke $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

$(FUZZ_GEN)/%.pb-c.c $(FUZZ_GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(FUZZ_GEN)
	protoc-c --proto_path=proto --c_out=$(FUZZ_GEN) $<

$(FUZZ_GEN)/migrations.c: $(MIGRATIONS) deploy/embed-sql.sh
	@mkdir -p $(FUZZ_GEN)
	sh deploy/embed-sql.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

# Coverage instrumentation without libFuzzer's main(), which only the harness links.
$(FUZZ_OBJ)/lib/%.o: lib/%.c | $(FUZZ_PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_OBJ)/services/%.o: services/%.c | $(FUZZ_PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_OBJ)/gen/%.o: $(FUZZ_GEN)/%.c | $(FUZZ_PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Wno-unused-parameter -c -o $@ $<

$(FUZZ_LIBA): $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $$(call fuzz_svc_objs,$$(call fuzz_svc,$$*)) $(FUZZ_LIBA) | $(FUZZ_PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer \
	    $(addprefix -I,$(wildcard services/$(call fuzz_svc,$*))) -o $@ $< \
	    $(call fuzz_svc_objs,$(call fuzz_svc,$*)) $(FUZZ_LIBA) $(PKG_LIBS) -lpthread

-include $(wildcard $(FUZZ_BUILD)/*.d) $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)

# ---- containers and Kubernetes: deploy/docker, docker-compose.yml, helm/postern ------------
# `make images`: the base images offline (deploy/docker/build-base.sh, skipped when they exist;
# when POSTERN_BASE_IMAGE names a registry image, only the balancer's, postern-haproxy:2.6, is
# built from it), then postern:latest and postern-certs:latest.
# The build stage (compilers and objects) is tagged postern-build:latest: Docker's classic
# builder would otherwise leave it as an untagged (dangling) image after every build, while
# tagged it is the cache that keeps the next build quick (`docker rmi postern-build:latest`
# frees it). The images these builds left untagged, replaced by newer ones, are pruned.
# `make e2e-docker`: the compose stack end to end (tests/deploy/e2e_docker.sh).
# `make test-helm`: helm lint and helm template checks (tests/deploy/test_helm.py).
# `make test-deploy`: the chart and compose-file checks (tests/deploy/*.py), then e2e-docker
# when a Docker engine answers.
POSTERN_BASE_IMAGE ?= postern-base:bookworm

# `make test-k8s`: a one-node Kubernetes cluster built from the Go module proxy and Debian's
# packages (deploy/k8s, cached in build/k8s: 10-15 minutes cold, seconds warm) and the chart
# installed in it (tests/k8s/test_cluster.py). Needs root for the node; otherwise the
# control-plane stages only. Not part of `make test` (CI's time).
.PHONY: images e2e-docker e2e-docker-scale test-helm test-deploy test-k8s k8s-up k8s-down

images:
	@if [ "$(POSTERN_BASE_IMAGE)" = postern-base:bookworm ]; then sh deploy/docker/build-base.sh; \
	else docker build --build-arg BASE_IMAGE=$(POSTERN_BASE_IMAGE) -t postern-haproxy:2.6 deploy/docker/haproxy; fi
	docker build --build-arg BASE_IMAGE=$(POSTERN_BASE_IMAGE) -f deploy/docker/Dockerfile --target build -t postern-build:latest .
	docker build --build-arg BASE_IMAGE=$(POSTERN_BASE_IMAGE) -f deploy/docker/Dockerfile --target certs -t postern-certs:latest .
	docker build --build-arg BASE_IMAGE=$(POSTERN_BASE_IMAGE) -f deploy/docker/Dockerfile -t postern:latest .
	docker image prune -f --filter label=org.postern.image >/dev/null

e2e-docker:
	sh tests/deploy/e2e_docker.sh

# smtpd scaled to 3 under one HAMR limit, the limiter killed and back, PostgreSQL
# restarted under load (every message acknowledged with 250 is stored).
e2e-docker-scale:
	sh tests/deploy/e2e_docker_scale.sh

test-helm:
	/usr/bin/python3 -m pytest -q -rs tests/deploy/test_helm.py

test-k8s:
	/usr/bin/python3 -m pytest -rs tests/k8s/test_cluster.py

k8s-up:
	bash deploy/k8s/cluster.sh up

k8s-down:
	bash deploy/k8s/cluster.sh down

test-deploy:
	/usr/bin/python3 -m pytest -q -rs tests/deploy
	@if docker info >/dev/null 2>&1; then \
	    $(MAKE) e2e-docker && $(MAKE) e2e-docker-scale; \
	else \
	    echo "test-deploy: no Docker engine answers (docker info): e2e-docker skipped"; \
	fi
