#!/usr/bin/env bash
# docs/bench-append-pinned.sh [runs [pattern [benchtime]]]
#
# Runs BenchmarkAppend (eventlog/bench_test.go) against a nats-server in its
# own process pinned to the last CPU, with the benchmark pinned to the
# others, so that the client's work (sealing, message ids, acks, garbage
# collection) does not compete with the server's for the same cores. On a
# 2-core machine that is one core each: the nearest this machine comes to
# "the server on a host of its own". The server is built from the
# nats-server module version in go.mod, with file storage in a temporary
# directory; every sub-benchmark gets a fresh stream.
#
# NATS_SERVER=path runs a given nats-server binary instead (for instance
# one built with docs/upstream/nats-server-*-last-subject-seq.patch; see
# docs/benchmarks.md). Output is go test's, one run after another, ready
# for benchstat. Run from any directory; needs taskset
# (util-linux).
set -euo pipefail

runs=${1:-4}
pattern=${2:-'Append$/^(raw|rawheaders|sealed)$/'}
benchtime=${3:-100000x}

server=${NATS_SERVER:-}
if [ -n "$server" ]; then server=$(realpath "$server"); fi
cd "$(dirname "$0")/.."
ncpu=$(nproc)
if [ "$ncpu" -lt 2 ]; then
	echo "bench-append-pinned: needs at least 2 CPUs, have $ncpu" >&2
	exit 2
fi
server_cpu=$((ncpu - 1))
client_cpus=0-$((ncpu - 2))

work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$server" ]; then
	server=$work/nats-server
	go build -o "$server" github.com/nats-io/nats-server/v2
fi
go test -c -o "$work/eventlog.test" ./eventlog/

port=$((20000 + RANDOM % 20000))
taskset -c "$server_cpu" "$server" -js -sd "$work/store" -a 127.0.0.1 -p "$port" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	sleep 0.1
done
if ! kill -0 "$pid" 2>/dev/null; then
	echo "bench-append-pinned: nats-server did not start:" >&2
	cat "$work/server.log" >&2
	exit 1
fi

echo "# server: $server, $("$server" --version) on CPU $server_cpu; benchmark on CPU $client_cpus" >&2
cd eventlog
for _ in $(seq "$runs"); do
	EPOCHLOG_BENCH_NATS="nats://127.0.0.1:$port" taskset -c "$client_cpus" \
		"$work/eventlog.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime"
done
