package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// TestStatusMissingKeyFile: with --db-keys-beside, a read model whose key
// file is missing (or cannot be read as a key) is reported on its row as
// such in the KEY column, not as a "raw key", with the file named in
// its error; the exit status is 1, as for a read model file that cannot
// be read (no verification failure), and the others are still shown.
// Until 2026-12-07 the KEY column said "raw key".
func TestStatusMissingKeyFile(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"status-a", "status-m", "status-u"} {
		createInstallation(t, l, dir, id)
	}
	missing := filepath.Join(dir, "status-m.key")
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "status-u.key")
	if err := os.WriteFile(unreadable, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside", "--json"})
	if code != exitFailure {
		t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, exitFailure, out.String(), errb.String())
	}
	rows := map[string]statusRow{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r map[string]json.RawMessage
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		if r["db"] == nil {
			continue // the command's own {"error": ...}
		}
		var row statusRow
		b, _ := json.Marshal(r)
		if err := json.Unmarshal(b, &row); err != nil {
			t.Fatal(err)
		}
		rows[filepath.Base(row.DB)] = row
	}
	if a := rows["status-a.db"]; a.Error != "" || a.KeyKind != "raw key" || a.Head == nil {
		t.Fatalf("the read model with its key file: %+v", a)
	}
	if m := rows["status-m.db"]; m.KeyKind != "key file missing" || !strings.Contains(m.Error, missing) || m.Exit != exitFailure || m.Head != nil {
		t.Fatalf("the read model whose key file is missing: %+v", m)
	}
	if u := rows["status-u.db"]; u.KeyKind != "key file unreadable" || !strings.Contains(u.Error, unreadable) || u.Exit != exitFailure || u.Head != nil {
		t.Fatalf("the read model whose key file is not a key: %+v", u)
	}

	out.Reset()
	errb.Reset()
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"}); code != exitFailure {
		t.Fatalf("table: exit %d, want %d; stderr:\n%s", code, exitFailure, errb.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(line, filepath.Join(dir, "status-m.db")):
			if f := strings.Fields(line); len(f) < 6 || strings.Join(f[3:6], " ") != "key file missing" || strings.Contains(line, "raw key") {
				t.Fatalf("table row of the read model without its key file: %q", line)
			}
		case strings.HasPrefix(line, filepath.Join(dir, "status-u.db")):
			if strings.Contains(line, "raw key") || !strings.Contains(line, "key file unreadable") {
				t.Fatalf("table row of the read model with a bad key file: %q", line)
			}
		}
	}
}
