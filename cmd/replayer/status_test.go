package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/keyfile"
	"github.com/epochlog/epochlog/projections"
)

// TestStatus: status reports every read model of a directory, one caught
// up, one lagging by a known number of events, one under a wrong key and
// a file that is not a read model; the failed rows give their reason, the
// others are still shown, and the exit status is 3 (a wrong key). No key
// is printed.
func TestStatus(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"status-a", "status-b", "status-c"} {
		createInstallation(t, l, dir, id)
	}
	// b's read model misses the 5 deliveries enqueued after it closed.
	enqueueFor(t, l, "status-b", "late", 5)
	// c's key file no longer opens its read model.
	if _, err := writeDBKeyFile(filepath.Join(dir, "status-c.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.db"), []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := writeDBKeyFile(filepath.Join(dir, "junk.key")); err != nil {
		t.Fatal(err)
	}
	lastB, err := l.LastSeq(ctx, "status-b")
	if err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside", "--json"})
	if code != exitVerify {
		t.Fatalf("exit %d, want %d (a wrong key); stderr:\n%s", code, exitVerify, errb.String())
	}
	rows := map[string]statusRow{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r map[string]json.RawMessage
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		if _, isErr := r["error"]; isErr && r["db"] == nil {
			continue // the command's own {"error": ...}
		}
		var row statusRow
		b, _ := json.Marshal(r)
		if err := json.Unmarshal(b, &row); err != nil {
			t.Fatal(err)
		}
		rows[filepath.Base(row.DB)] = row
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4: %v", len(rows), rows)
	}
	a := rows["status-a.db"]
	if a.Error != "" || a.Installation != "status-a" || a.Schema != projections.LatestSchema || a.KeyKind != "raw key" ||
		a.Head == nil || a.Head.Checkpoint == 0 || a.Head.Events == 0 || a.Lag == nil || a.Lag.Pending != 0 || a.Lag.StreamLast != a.Head.Checkpoint || a.Lag.Oldest != nil {
		t.Fatalf("caught-up read model: %+v head %+v lag %+v", a, a.Head, a.Lag)
	}
	b := rows["status-b.db"]
	if b.Error != "" || b.Lag == nil || b.Lag.Pending != 5 || b.Lag.StreamLast != lastB || b.Lag.Oldest == nil || b.Head.Checkpoint >= lastB {
		t.Fatalf("lagging read model: %+v head %+v lag %+v, want 5 pending up to %d", b, b.Head, b.Lag, lastB)
	}
	c := rows["status-c.db"]
	if !strings.Contains(c.Error, "wrong key") || c.Exit != exitVerify || c.Head != nil {
		t.Fatalf("wrong key: %+v", c)
	}
	j := rows["junk.db"]
	if !strings.Contains(j.Error, "not an epochlog read model") || j.Exit != exitFailure {
		t.Fatalf("not a read model: %+v", j)
	}

	// The same as a table: every row, the failures with their reason.
	out.Reset()
	errb.Reset()
	code = run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"})
	if code != exitVerify {
		t.Fatalf("table: exit %d; stderr:\n%s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "DB ") || !strings.Contains(lines[0], "CHECKPOINT") || !strings.Contains(lines[0], "PENDING") {
		t.Fatalf("table:\n%s", out.String())
	}
	col := strings.Index(lines[0], "INSTALLATION")
	for _, line := range lines[1:] {
		if len(line) < col || line[col-2:col] != "  " {
			t.Fatalf("columns not aligned:\n%s", out.String())
		}
	}
	for name, want := range map[string]string{"status-a.db": " ok", "status-b.db": "lagging", "status-c.db": "ERROR: ", "junk.db": "ERROR: "} {
		found := false
		for _, line := range lines[1:] {
			found = found || strings.Contains(line, name) && strings.Contains(line, want)
		}
		if !found {
			t.Fatalf("no row of %s saying %q:\n%s", name, want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "2 of 4 read models could not be read or are wrong") {
		t.Fatalf("stderr: %s", errb.String())
	}
	for _, id := range []string{"status-a", "status-b", "status-c", "junk"} {
		k, _ := os.ReadFile(filepath.Join(dir, id+".key"))
		if hex := strings.TrimSpace(string(k)); strings.Contains(out.String()+errb.String(), hex) {
			t.Fatalf("the key of %s was printed", id)
		}
	}
}

// TestStatusOneReadModel: --db with a passphrase reports the key kind and
// a caught-up read model exits 0; the wrong kind of key for it exits 3.
func TestStatusOneReadModel(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "p.pass")
	if err := os.WriteFile(pass, []byte("a passphrase for the test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := keyfile.LoadDBPassphrase(pass)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "p.db")
	in, err := engine.CreateInstallation(ctx, l, "status-p", db, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()

	var out, errb bytes.Buffer
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db", db, "--db-passphrase-file", pass}); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "status-p") || !strings.Contains(out.String(), "passphrase") || !strings.Contains(out.String(), " ok") {
		t.Fatalf("status of one read model:\n%s", out.String())
	}
	if strings.Contains(out.String()+errb.String(), "a passphrase for the test") {
		t.Fatal("the passphrase was printed")
	}
	out.Reset()
	errb.Reset()
	rawKey := filepath.Join(dir, "other.key")
	if _, err := writeDBKeyFile(rawKey); err != nil {
		t.Fatal(err)
	}
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db", db, "--db-key-file", rawKey}); code != exitVerify {
		t.Fatalf("a raw key for a passphrase database: exit %d; stdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	// Neither --db nor --db-dir, or both: a usage error.
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db-key-file", rawKey}); code != exitUsage {
		t.Fatalf("no --db: exit %d", code)
	}
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db", db, "--db-dir", dir, "--db-key-file", rawKey}); code != exitUsage {
		t.Fatalf("--db and --db-dir: exit %d", code)
	}
}

// The read model of an erased installation is reported as that, not as a
// read model the stream holds less than.
func TestStatusOfAnErasedInstallation(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "status-e")
	if _, err := l.Erase(ctx, "status-e", nil); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db", filepath.Join(dir, "status-e.db"), "--db-key-file", filepath.Join(dir, "status-e.key")})
	if code == exitOK || !strings.Contains(out.String()+errb.String(), "installation status-e was erased at") || strings.Contains(out.String()+errb.String(), "holds less") {
		t.Fatalf("status of an erased installation's read model: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
}

// TestStatusAndFollowNoticeTheCheckpointsEventGone: the stream loses the
// event a read model last applied, and another writer (a delivery
// service) appends after the hole, so the stream's last event is past the
// checkpoint again. status exits 3 naming the sequence, and follow refuses
// to resume after it rather than take the new event as the rest of the
// read model's history. Until 2026-12-06 both said "ok".
func TestStatusAndFollowNoticeTheCheckpointsEventGone(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("status-gone")
	createInstallation(t, l, dir, id)
	last, err := l.LastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	deleteSeq(t, l, last)
	enqueueFor(t, l, id, "after the hole", 1)
	db, key := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	want := fmt.Sprintf("no event at sequence %d", last)
	var out, errb bytes.Buffer
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"status", "--nats", srv.URL(), "--db", db, "--db-key-file", key}); code != exitVerify || !strings.Contains(out.String()+errb.String(), want) {
		t.Fatalf("status: exit %d, want %d saying %q\n%s%s", code, exitVerify, want, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	code := run(c, ringEnv(&out, &errb, nil), []string{"follow", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"})
	if code == exitOK || !strings.Contains(errb.String(), want) || strings.Contains(errb.String(), "events applied, checkpoint "+fmt.Sprint(last+1)) {
		t.Fatalf("follow: exit %d, want a refusal saying %q\n%s%s", code, want, out.String(), errb.String())
	}
}

// TestStatusDBDirNotADirectory: --db-dir naming a regular file, or
// nothing, is a usage error naming the path and what is wrong with it;
// an empty directory says it holds no read models. Until 2026-12-07 all
// three said "no read models (*.db) in PATH".
func TestStatusDBDirNotADirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.db")
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{file, "--db-dir " + file + ": not a directory"},
		{filepath.Join(dir, "missing"), "--db-dir " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{empty, "no read models (*.db) in " + empty},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"status", "--db-dir", tc.path, "--db-key", strings.Repeat("ab", 32)})
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Fatalf("status --db-dir %s: exit %d, stderr %q; want exit %d saying %q", tc.path, code, errb.String(), exitUsage, tc.want)
		}
	}
}
