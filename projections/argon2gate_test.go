package projections

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Read models keyed by passphrase opened all at once (a follower starting
// on a directory of them) derive their keys within the process's Argon2
// memory budget, not all together; one whose parameters exceed the budget
// is derived alone. Every open succeeds.
func TestPassphraseOpensShareTheArgon2Budget(t *testing.T) {
	const mib = 1 << 20
	prev := argon2Gate
	argon2Gate = newMemGate(20 * mib) // room for two of 8 MiB
	t.Cleanup(func() { argon2Gate = prev })

	key, err := PassphraseKey([]byte("eight of them at once"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	open := func(name string, p Argon2Params) {
		t.Helper()
		db, err := Open(filepath.Join(dir, name), key, &Options{Argon2: p})
		if err != nil {
			t.Errorf("open %s: %v", name, err)
			return
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}
	small := Argon2Params{Time: 1, MemoryKiB: 8 << 10, Threads: 1}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { open(fmt.Sprintf("small-%d.db", i), small) })
	}
	wg.Wait()
	if peak := argon2Gate.peak; peak == 0 || peak > 20*mib {
		t.Fatalf("Argon2 memory in use at once: %d MiB, want within the budget of 20 MiB", peak/mib)
	}
	// Opened again (the sidecars exist now): the same.
	for i := range 8 {
		wg.Go(func() { open(fmt.Sprintf("small-%d.db", i), small) })
	}
	wg.Wait()
	if peak := argon2Gate.peak; peak > 20*mib {
		t.Fatalf("Argon2 memory in use at once on reopening: %d MiB, want within 20 MiB", peak/mib)
	}

	// Larger than the budget: alone.
	argon2Gate = newMemGate(20 * mib)
	large := Argon2Params{Time: 1, MemoryKiB: 24 << 10, Threads: 1}
	wg.Go(func() { open("large.db", large) })
	for i := range 4 {
		wg.Go(func() { open(fmt.Sprintf("small-%d.db", i), small) })
	}
	wg.Wait()
	if peak := argon2Gate.peak; peak != 24*mib {
		t.Fatalf("Argon2 memory in use at once with a derivation of 24 MiB: %d MiB, want it alone", peak/mib)
	}
}
