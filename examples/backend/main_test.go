package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRun runs the example end to end against its own embedded server and
// checks it left the three read models and the log's store behind.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), dir, 6); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alice-phone.db", "bob-laptop.db", "carol-tablet.db", "nats"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("example left no %s: %v", name, err)
		}
	}
}
