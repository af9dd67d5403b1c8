package engine

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// Erase of a passphrase-keyed read model whose salt sidecar is not beside
// it (InstallationOptions.DB.SaltPath) opens it with that sidecar to check
// it, then deletes the sidecar with it. Until 2026-12-07 Erase knew only
// "<db>.salt": it could not open the read model, so it refused to erase.
func TestEraseRemovesACustomSaltSidecar(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	key, err := projections.PassphraseKey([]byte("alice's read model passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	path, salt := b.dbPath("alice"), filepath.Join(t.TempDir(), "alice.salt")
	o := b.opts()
	o.DB = projections.Options{SaltPath: salt, Argon2: projections.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}
	alice, err := CreateInstallation(ctx, b.log, "alice", path, key, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Erase(ctx, b.log, "alice", &EraseOptions{By: "test", ReadModel: path, ReadModelKey: key, ReadModelSaltPath: salt}); err != nil {
		t.Fatalf("erase alice with its read model's salt at %s: %v", salt, err)
	}
	for _, f := range []string{path, salt} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the erase: %v, want no such file", f, err)
		}
	}
}
