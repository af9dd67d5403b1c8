package projections

import (
	"sync"

	"golang.org/x/crypto/argon2"
)

// argon2Budget bounds the memory of the Argon2id derivations a process
// runs at once (a passphrase-keyed read model's key, at each open). Each
// takes its parameters' memory (64 MiB by default, up to 4 GiB from a
// sidecar), so a follower or a pool opening thousands of read models at
// once would otherwise ask for all of it together and be killed for it.
// A derivation larger than the budget runs alone. The derivations are
// CPU-bound too: more of them at once would not finish sooner.
const argon2Budget = 256 << 20

var argon2Gate = newMemGate(argon2Budget)

// deriveArgon2 is argon2.IDKey within argon2Gate's budget.
func deriveArgon2(password, salt []byte, p Argon2Params, keyLen uint32) []byte {
	n := int64(p.MemoryKiB) << 10
	argon2Gate.acquire(n)
	defer argon2Gate.release(n)
	return argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
}

// memGate admits work while the memory of the work admitted stays within
// a limit; work larger than the limit is admitted when nothing else runs.
// Each admitted piece finishes on its own (a key derivation), so every
// wait is bounded by the work ahead of it.
type memGate struct {
	mu    sync.Mutex
	freed *sync.Cond
	held  int64
	limit int64
	peak  int64 // the most held at once (tests)
}

func newMemGate(limit int64) *memGate {
	g := &memGate{limit: limit}
	g.freed = sync.NewCond(&g.mu)
	return g
}

func (g *memGate) acquire(n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.held > 0 && g.held+n > g.limit {
		g.freed.Wait()
	}
	g.held += n
	g.peak = max(g.peak, g.held)
}

func (g *memGate) release(n int64) {
	g.mu.Lock()
	g.held -= n
	g.mu.Unlock()
	g.freed.Broadcast()
}
