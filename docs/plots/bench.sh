#!/usr/bin/env bash
# Runs the benchmarks behind docs/plots/*.svg and writes their output to
# docs/plots/bench.txt; `make plots` runs this, then draws the plots
# (docs/benchmarks.md, "Plots").
#
#   PLOTCOUNT=3    runs of each sweep point (the append sweep runs two more)
#   PLOTSHORT=1    MLS commits up to 1,000 members instead of 10,000
#   GO=go          the go command
#
# and the benchmarks' own caps: EPOCHLOG_PLOT_MAX_EVENTS (rebuild, default
# 100000, up to 1000000), EPOCHLOG_PLOT_MAX_MEMBERS (end to end, default
# 100), EPOCHLOG_PLOT_MAX_INFLIGHT (append, default 1024).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
count=${PLOTCOUNT:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
section() { printf '== %s (at %dm%02ds)\n' "$1" $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
# keep saves a run's output and shows it without the header lines.
keep() { tee -a "$tmp/bench.txt" | grep --line-buffered -v -E '^(goos|goarch|pkg|cpu): |^PASS$' || true; }

section "replay: rebuild time by events (BenchmarkRebuildSweep)"
$GO test -run '^$' -timeout 60m -bench '^BenchmarkRebuildSweep$' -benchtime 500ms -count "$count" ./replay/ | keep

section "mls: commit time by group size (BenchmarkCommitWithPath, ...EveryParent, RawHPKEPathSecret)"
short=()
if [ -n "${PLOTSHORT:-}" ]; then short=(-short); fi
$GO test -run '^$' -timeout 60m -bench '^Benchmark(CommitWithPath|CommitWithPathEveryParent|RawHPKEPathSecret)$' \
	-benchtime 500ms -count "$count" "${short[@]}" ./mls/ | keep

section "engine: end-to-end rate by group size (BenchmarkE2EGroupSweep)"
# A count, not a duration: the first iteration fills the window (64
# messages to every recipient, over a second at 100 members), and with
# -benchtime 1s that one iteration was all a large group ran, so its
# point measured the pipeline filling, not the steady state.
$GO test -run '^$' -timeout 60m -bench '^BenchmarkE2EGroupSweep$' -benchtime 400x -count "$count" ./engine/ | keep

# The append ratios are taken per run, raw and sealed of one run side by
# side: whole runs of the test binary one after the other, not -count
# (which repeats each sub-benchmark before moving to the next).
section "eventlog: append by publishes in flight (BenchmarkAppendInFlight)"
$GO test -c -o "$tmp/eventlog.test" ./eventlog/
for _ in $(seq $((count + 2))); do
	(cd eventlog && "$tmp/eventlog.test" -test.run '^$' -test.timeout 60m \
		-test.bench '^BenchmarkAppendInFlight$' -test.benchtime 20000x) | keep
done

mv "$tmp/bench.txt" docs/plots/bench.txt
section "done: docs/plots/bench.txt, $(grep -c '^Benchmark' docs/plots/bench.txt) results"
