# epochlog: build, test, bench, fuzz, demo, lint.
# `make test` is the command CI runs (through .ci/run); keep it fast.

GO        ?= go
PKGS      ?= ./...
BENCHTIME ?= 1s
BENCHCOUNT?= 6
FUZZTIME  ?= 10s
DEMO_DIR  ?= .epochlog/demo
# Test packages run at once: at least 4, whatever the cores. Most tests
# wait on servers (elections, timeouts, kills) far more than they compute,
# so on 2 cores 4 at once took `make test` from about 400 to 230 seconds
# of testing (`make test TEST_P=2` against `make test`, from the first
# test's start to the last result in `go test -json`, 2026-12-07); the
# longest package, engine, then sets the pace.
TEST_P    ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2); echo $$(( n < 4 ? 4 : n )))

.PHONY: all build test test-race lint vet fmt-check staticcheck bench bench-smoke bench-append-pinned plots plots-only fuzz soak demo examples clean

all: lint build test

build:
	$(GO) build $(PKGS)
	$(GO) build -o bin/replayer ./cmd/replayer
	@echo "built bin/replayer"

# go test's default 10 min per package is too close: engine takes about
# 3 min alone, 7 under -race, and CI shares its 2 cores with other work.
test:
	$(GO) test -count=1 -p $(TEST_P) -timeout 20m $(PKGS)

test-race:
	$(GO) test -race -count=1 -p $(TEST_P) -timeout 30m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Pinned; fetched from the module proxy on first use, go.mod untouched.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

staticcheck:
	$(GO) run $(STATICCHECK) $(PKGS)

lint: fmt-check vet staticcheck

# Benchmarks compare each layer with its raw building block in the same run;
# see docs/benchmarks.md for how the ratios are computed with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) $(PKGS)

# The benchmarks behind docs/benchmarks.md's tracked ratios, a few
# iterations each: they time nothing worth reading here, but a benchmark
# that no longer runs (the end-to-end one failed for a day after its
# timed loop, printing no ratio) fails this. CI runs it.
bench-smoke:
	$(GO) test -run '^$$' -bench 'E2E$$/memsec=false/members=2$$' -benchtime 20x ./engine
	$(GO) test -run '^$$' -bench 'MLSThroughEngine/members=100$$' -benchtime 2x ./engine
	$(GO) test -run '^$$' -bench 'AtomicBatchLatency/body=1024' -benchtime 5x ./eventlog
	$(GO) test -run '^$$' -bench 'AppendBatchHeaders' -benchtime 100x ./eventlog
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/pagecipher

# BenchmarkAppend against a nats-server process on a core of its own, the
# benchmark on the other(s): docs/benchmarks.md, "With the server on a core
# of its own". Needs taskset.
bench-append-pinned:
	docs/bench-append-pinned.sh $(BENCHCOUNT)

# The scaling curves of docs/benchmarks.md as SVG (docs/plots/*.svg):
# docs/plots/bench.sh runs the sweeping benchmarks PLOTCOUNT times each
# (about 8 minutes on 2 shared vCPUs; it lists the caps that make it
# shorter) into docs/plots/bench.txt, then internal/benchplot draws the
# plots of docs/plots/plots.json from it. `make plots-only` redraws from
# the saved output.
PLOTCOUNT ?= 3

plots:
	GO=$(GO) PLOTCOUNT=$(PLOTCOUNT) docs/plots/bench.sh
	$(MAKE) --no-print-directory plots-only

plots-only:
	$(GO) run ./internal/benchplot/cmd/benchplot -spec docs/plots/plots.json -out docs/plots docs/plots/bench.txt

# A short run of every fuzz target (go test -fuzz accepts one target per run).
# A package whose tests do not build fails the run (its targets were
# skipped in silence before: the listing's failure was grep's no match).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$list"; echo "fuzz: cannot list the targets of $$pkg"; exit 1; }; \
	  for t in $$(echo "$$list" | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# At length: rebuild and rekey killed (SIGKILL) at 200 spread
# points each (the default test run does 6). Then the byte-flip fault test
# at length: 200 random single-byte flips in the stream's message blocks
# (the default run does 12) plus the targeted ones, `replayer rebuild` and
# `verify` of every installation after each; the last line it logs is the
# figure (docs/operations.md, "Fault tests"). EPOCHLOG_FLIP_SEED=N repeats
# a run's flips.
# Then the stream-leader failover test at 20 rounds: the demo's workload on
# a 3-node cluster, the leader shut down and restarted each round
# (docs/operations.md, "Failover").
# Then the batched fan-out test with 12 stream leaders killed (SIGKILL,
# a cluster of nats-server processes) mid-run (docs/operations.md,
# "Batched fan-outs with the stream leader killed").
# Then the share group's takeover test at 10 rounds: 3 `replayer follow
# --share` processes on a 3-node cluster, the one holding the most read
# models SIGKILLed each round and replaced (docs/operations.md, "Running
# several followers").
soak:
	EPOCHLOG_KILL_ROUNDS=200 $(GO) test -count=1 -run 'TestKill' -v -timeout 30m ./replay/
	EPOCHLOG_FLIP_ROUNDS=200 $(GO) test -count=1 -run 'TestRebuildUnderByteFlips' -v -timeout 30m ./cmd/replayer/
	EPOCHLOG_FAILOVER_ROUNDS=20 $(GO) test -count=1 -run 'TestFailoverStreamLeader' -v -timeout 30m ./engine/
	EPOCHLOG_LEADER_KILLS=12 $(GO) test -count=1 -run 'TestFanOutBatchesWhileAStreamLeaderDies' -v -timeout 30m ./engine/
	EPOCHLOG_SHARE_ROUNDS=10 $(GO) test -count=1 -run 'TestShareFollowersTakeOver' -v -timeout 30m ./cmd/replayer/

demo:
	@echo "building the replayer (the first build compiles SQLCipher with cgo: about a minute)..."
	$(GO) build -o bin/replayer ./cmd/replayer
	bin/replayer demo --data $(DEMO_DIR)

clean:
	rm -rf .epochlog bin
