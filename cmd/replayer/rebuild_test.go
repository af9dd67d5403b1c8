package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestRebuildReplacesDamagedDatabase: docs/operations.md says a damaged
// database "is replaced without being read". That holds whether the damage
// shows when the file is opened (the page of epochlog_meta: the schema
// marker cannot be read) or only when its checkpoint is read (the page of
// checkpoint): rebuild replaces it and the result opens with the key.
func TestRebuildReplacesDamagedDatabase(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	for i, table := range []string{"epochlog_meta", "checkpoint"} {
		t.Run(table, func(t *testing.T) {
			dir := t.TempDir()
			id := events.InstallationID(fmt.Sprintf("damaged-%d", i))
			path := filepath.Join(dir, string(id)+".db")
			keyPath := filepath.Join(dir, string(id)+".key")
			key, err := writeDBKeyFile(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			in, err := engine.CreateInstallation(ctx, l, id, path, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			in.Close()
			raw, err := openRaw(path, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			var root int64
			err = raw.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = ?`, table).Scan(&root)
			raw.Close()
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 8)
			off := (root-1)*4096 + 200
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			for j := range b {
				b[j] ^= 0xff
			}
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var out, errb bytes.Buffer
			code := run(ctx, ringEnv(&out, &errb, nil), []string{"rebuild", "--nats", srv.URL(), "--installation", string(id), "--db", path, "--db-key-file", keyPath})
			if code != 0 {
				t.Fatalf("rebuild of a database damaged in its %s page: exit %d, stderr: %s", table, code, errb.String())
			}
			if !strings.Contains(out.String(), "damaged and has been replaced") {
				t.Fatalf("rebuild does not say it replaced a damaged database: %s", out.String())
			}
			db, err := projections.OpenExisting(path, key, nil)
			if err != nil {
				t.Fatalf("rebuilt database: %v", err)
			}
			defer db.Close()
			if err := db.IntegrityCheck(ctx); err != nil {
				t.Fatalf("rebuilt database: %v", err)
			}
		})
	}
}
