// Package fdlimit says how many read models a process can keep open under
// its open-file limit: what follow refuses to go past, and what an
// engine.Pool keeps its cap under.
package fdlimit

// PerReadModel is how many file descriptors an open read model keeps:
// its SQLCipher connections' database, WAL and shared-memory files and
// its writer lock (6: BenchmarkFollowReadyz's fds/read-model, 6.0 at
// 2,000 read models; docs/benchmarks.md, "A follower's readiness over
// 1,000 read models"). It is measured, not counted at run time: a change to the
// read model's connections moves it.
const PerReadModel = 6

// Reserve is what a process keeps for everything else: its NATS
// connection, its sockets, logs, a rebuild's files.
const Reserve = 256

// Limit returns the process's open-file limit (RLIMIT_NOFILE's soft
// limit, which Go raises to the hard one at start), and whether there is
// one. A variable, so that tests can set another.
var Limit = limit

// ReadModels returns how many read models fit under the open-file limit,
// and the limit; 0, 0 when there is no limit to go by.
func ReadModels() (int, uint64) {
	lim, ok := Limit()
	if !ok {
		return 0, 0
	}
	if lim <= Reserve+PerReadModel {
		return 1, lim
	}
	return int(min((lim-Reserve)/PerReadModel, 1<<30)), lim
}
