#!/usr/bin/env bash
# Runs the append benchmark against nats-server as released and with
# nats-server-<version>-last-subject-seq.patch applied, interleaved, in one
# session (docs/benchmarks.md, "A server fix"). Nothing in the repository
# changes: the patched server and a copy of the tree live in a temporary
# directory.
#
#   docs/upstream/bench-server-fix.sh [runs [pattern [benchtime]]]
#
# Defaults: 4 runs of each, the one-server append benchmarks
# ('Append$/^(raw|rawheaders|sealed)$/body=256'), 100000x. For the cluster:
#   docs/upstream/bench-server-fix.sh 3 'AppendR3/.*/body=256' 50000x
# With PAGE_FAULTS=1 each run goes through `perf stat -e page-faults`.
set -euo pipefail

runs=${1:-4}
pattern=${2:-'Append$/^(raw|rawheaders|sealed)$/body=256'}
benchtime=${3:-100000x}
perf=()
if [ "${PAGE_FAULTS:-}" = 1 ]; then
	perf=(perf stat -e page-faults)
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root"
version=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
patch="$root/docs/upstream/nats-server-$version-last-subject-seq.patch"
if [ ! -f "$patch" ]; then
	echo "no patch for nats-server $version ($patch)" >&2
	exit 1
fi
src=$(go mod download -json "github.com/nats-io/nats-server/v2@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')

cp -r "$src" "$work/nats-server"
chmod -R u+w "$work/nats-server"
(cd "$work/nats-server" && git apply "$patch")

mkdir "$work/tree"
git ls-files -z | xargs -0 cp --parents -t "$work/tree"
(cd "$work/tree" && go mod edit -replace "github.com/nats-io/nats-server/v2=$work/nats-server")

go test -c -o "$work/released.test" ./eventlog/
(cd "$work/tree" && go test -c -o "$work/patched.test" ./eventlog/)

cd "$root/eventlog"
for _ in $(seq "$runs"); do
	for v in released patched; do
		"${perf[@]}" "$work/$v.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime" 2>&1 |
			grep -E '^Benchmark|page-faults' | sed "s/^/$v: /"
	done
done
