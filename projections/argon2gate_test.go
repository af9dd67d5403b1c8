package projections

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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

// A salt sidecar asking for more Argon2id work than a derivation may take
// (damaged, or written to stall the process's opens, which share one
// Argon2 budget) is refused at once, naming the sidecar.
func TestSidecarAskingTooMuchWorkRefused(t *testing.T) {
	key, err := PassphraseKey([]byte("a stalled open"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "stall.db")
	db, err := Open(path, key, &Options{Argon2: Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(SaltPath(path))
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b[1:5], 1<<31) // passes
	if err := os.WriteFile(SaltPath(path), b, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Open(path, key, nil)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the open is still deriving the key after a minute")
	}
	if err == nil || !strings.Contains(err.Error(), SaltPath(path)) || !strings.Contains(err.Error(), "GiB-passes") {
		t.Fatalf("open with a sidecar asking for 2^31 passes: %v; want it refused naming the sidecar", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "new.db"), key, &Options{Argon2: Argon2Params{Time: 1 << 10, MemoryKiB: 64 << 10, Threads: 1}}); err == nil || !strings.Contains(err.Error(), "GiB-passes") {
		t.Fatalf("creating a read model with 1,024 passes over 64 MiB: %v; want it refused", err)
	}
}
