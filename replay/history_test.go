package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/nats-io/nats.go/jetstream"
)

// A rebuild never swaps in less than the live database holds, nor another
// installation's history, nor nothing; the refused live file is left
// byte for byte as it was. Only --force takes the stream's word over a
// database that holds more.

func rebuildOpts(force bool) *RebuildOptions {
	return &RebuildOptions{Options: *testReplayOptions(), Force: force}
}

// mustRebuild builds inst's read model at path.
func mustRebuild(t *testing.T, l *eventlog.Log, inst events.InstallationID, path string, key projections.Key) {
	t.Helper()
	if _, err := Rebuild(context.Background(), l, inst, path, key, rebuildOpts(false)); err != nil {
		t.Fatalf("rebuild %s: %v", inst, err)
	}
}

// unchanged fails the test if the file at path no longer holds want.
func unchanged(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s changed although the rebuild was refused", filepath.Base(path))
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRebuildRefusesAnotherInstallationsDatabase(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 20)
	writeHistory(t, l, instB, 1, 20)
	key := rawDBKey(t, 0xA1)
	liveB := filepath.Join(t.TempDir(), "b.db")
	mustRebuild(t, l, instB, liveB, key)
	before := readFile(t, liveB)

	for _, force := range []bool{false, true} {
		_, err := Rebuild(context.Background(), l, instA, liveB, key, rebuildOpts(force))
		if !errors.Is(err, ErrWrongInstallation) {
			t.Fatalf("rebuild of %s over %s's database (force %v): %v, want ErrWrongInstallation", instA, instB, force, err)
		}
		if !strings.Contains(err.Error(), string(instB)) {
			t.Fatalf("error %q does not name the database's installation", err)
		}
		unchanged(t, liveB, before)
	}
	_, err := Verify(context.Background(), l, instA, liveB, key, testReplayOptions())
	if !errors.Is(err, ErrWrongInstallation) {
		t.Fatalf("verify of %s against %s's database: %v, want ErrWrongInstallation", instA, instB, err)
	}
}

func TestRebuildRefusesAnInstallationWithoutHistory(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 5)
	key := rawDBKey(t, 0xA1)
	dir := t.TempDir()

	// A mistyped id: no events at all. Nothing is created.
	fresh := filepath.Join(dir, "new.db")
	_, err := Rebuild(context.Background(), l, "inst-typo", fresh, key, rebuildOpts(true))
	if !errors.Is(err, ErrNoHistory) {
		t.Fatalf("rebuild of an unknown installation: %v, want ErrNoHistory", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("refused rebuild created %s: %v", fresh, err)
	}

	// Over a live database of that name: refused, untouched.
	live := filepath.Join(dir, "a.db")
	mustRebuild(t, l, instA, live, key)
	before := readFile(t, live)
	if _, err := Rebuild(context.Background(), l, "inst-typo", live, key, rebuildOpts(true)); !errors.Is(err, ErrWrongInstallation) && !errors.Is(err, ErrNoHistory) {
		t.Fatalf("rebuild of an unknown installation over a live one: %v", err)
	}
	unchanged(t, live, before)

	// Events without the installation.created they must start with.
	h := newHistoryGen("inst-headless")
	h.setup(1)
	h.ts = h.ts[1:] // drop installation.created
	if _, err := h.flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	_, err = Rebuild(context.Background(), l, "inst-headless", filepath.Join(dir, "headless.db"), key, rebuildOpts(true))
	if !errors.Is(err, ErrNoHistory) {
		t.Fatalf("rebuild of a history without installation.created: %v, want ErrNoHistory", err)
	}
}

// The installation's last event lost from the stream (nothing links to it
// yet): the live database is ahead, the rebuild is refused naming what is
// missing, verify says not to rebuild; --force takes the stream's word.
func TestRebuildRefusesWhenTheStreamLostTheTail(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 30)
	key := rawDBKey(t, 0xA1)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	before := readFile(t, live)

	last := lastSeq(t, l, instA)
	deleteMsg(t, l, last)
	_, err := Rebuild(context.Background(), l, instA, live, key, rebuildOpts(false))
	if !errors.Is(err, ErrBehind) || !IsVerificationFailure(err) {
		t.Fatalf("rebuild from a stream missing the last event: %v, want ErrBehind", err)
	}
	unchanged(t, live, before)

	_, err = Verify(context.Background(), l, instA, live, key, testReplayOptions())
	var fe *projections.FileError
	if !errors.Is(err, ErrBehind) || errors.Is(err, ErrDrift) || !errors.As(err, &fe) || strings.Contains(fe.Hint, "rebuild it") {
		t.Fatalf("verify against a stream missing the last event: %v, want ErrBehind with a hint not to rebuild", err)
	}
	unchanged(t, live, before)

	res, err := Rebuild(context.Background(), l, instA, live, key, rebuildOpts(true))
	if err != nil {
		t.Fatalf("forced rebuild: %v", err)
	}
	if res.Checkpoint >= last {
		t.Fatalf("forced rebuild at checkpoint %d, the deleted event was at %d", res.Checkpoint, last)
	}
	// Forced, the old database is kept beside, and what it held more is
	// named (until 2026-12-06 it was dropped silently).
	if res.KeptReplaced == "" || !strings.Contains(res.Dropped, fmt.Sprint(last)) {
		t.Fatalf("forced rebuild kept %q, dropped %q; want the old database kept and the loss up to %d named", res.KeptReplaced, res.Dropped, last)
	}
	unchanged(t, res.KeptReplaced, before)
}

// An aggregate's last event lost in the middle of the stream, after which
// other events of the installation were written by a writer that did not
// know of it: the positions name the aggregate.
func TestRebuildNamesTheAggregateThatLostEvents(t *testing.T) {
	l, srv := newLog(t)
	h := writeHistory(t, l, instA, 2, 30)
	key := rawDBKey(t, 0xA1)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	before := readFile(t, live)

	// Delete the inbox queue's last event, then let an unaware writer (a
	// fresh Log, whose head lookup finds the stream as it now is) append
	// more events of the installation.
	var inboxLast uint64
	if err := l.Read(context.Background(), instA, 0, func(r eventlog.Record) error {
		if r.Event.Aggregate.Type == events.AggDelivery {
			inboxLast = r.Seq
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deleteMsg(t, l, inboxLast)
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	h.add(events.AggGroup, "feedface", events.GroupCreated{GroupID: []byte("g-new"), Ciphersuite: 3, State: events.NewSecret([]byte("s"))})
	if _, err := h.flush(context.Background(), l2); err != nil {
		t.Fatal(err)
	}
	_, err := Rebuild(context.Background(), l2, instA, live, key, rebuildOpts(false))
	if !errors.Is(err, ErrBehind) || !strings.Contains(err.Error(), "delivery") || !strings.Contains(err.Error(), "inbox") {
		t.Fatalf("rebuild with the inbox's last event missing: %v, want ErrBehind naming the inbox", err)
	}
	unchanged(t, live, before)
}

func deleteMsg(t *testing.T, l *eventlog.Log, seq uint64) {
	t.Helper()
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), seq); err != nil {
		t.Fatalf("delete seq %d: %v", seq, err)
	}
}

// A rekey through a symbolic link to the read model (or to its directory)
// rekeys the database the link names and leaves the link a link: it
// replaced the link with the rebuilt file, the database unchanged under
// the old key. A writer holding the database's lock by its own name stops
// it: one lock per file, whatever the name.
func TestRekeyThroughASymlinkRekeysTheDatabase(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 20)
	oldKey, newKey := rawDBKey(t, 0xA1), rawDBKey(t, 0xA2)
	dir := t.TempDir()
	live := filepath.Join(dir, "a.db")
	mustRebuild(t, l, instA, live, oldKey)
	links := t.TempDir()
	fileLink := filepath.Join(links, "a.db")
	if err := os.Symlink(live, fileLink); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(links, "models")
	if err := os.Symlink(dir, dirLink); err != nil {
		t.Fatal(err)
	}

	lk, err := projections.Lock(live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Rekey(context.Background(), l, instA, fileLink, oldKey, newKey, testReplayOptions()); !errors.Is(err, projections.ErrLocked) {
		t.Fatalf("rekey through a link while the database's own name is locked: %v, want ErrLocked", err)
	}
	lk.Unlock()

	res, err := Rekey(context.Background(), l, instA, fileLink, oldKey, newKey, testReplayOptions())
	if err != nil {
		t.Fatal(err)
	}
	if want, err := projections.CanonicalPath(live); err != nil || res.Path != want {
		t.Errorf("rekey reports path %s, want the database's %s (%v)", res.Path, want, err)
	}
	if fi, err := os.Lstat(fileLink); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link after the rekey: %v, %v; want it still a link", fi, err)
	}
	db, err := projections.OpenExisting(live, newKey, &projections.Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("the database under the new key: %v", err)
	}
	db.Close()

	// Through a link to its directory: the same.
	if _, err := Rekey(context.Background(), l, instA, filepath.Join(dirLink, "a.db"), newKey, oldKey, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db, err = projections.OpenExisting(live, oldKey, &projections.Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("the database under the key of the rekey through the directory's link: %v", err)
	}
	db.Close()
}

// Project refuses, before following anything, a read model of another
// installation and one whose checkpoint is past the installation's last
// event on the stream: followed, the first would take another's events
// and the second wait, looking healthy, for events the stream lost.
func TestProjectRefusesAnotherInstallationsOrAheadReadModel(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 20)
	writeHistory(t, l, instB, 1, 20)
	key := rawDBKey(t, 0xA1)
	dir := t.TempDir()
	liveA, liveB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mustRebuild(t, l, instA, liveA, key)
	mustRebuild(t, l, instB, liveB, key)
	project := func(inst events.InstallationID, path string) error {
		db, err := projections.Open(path, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return Project(ctx, l, []Projection{{Installation: inst, DB: db}}, nil)
	}
	if err := project(instA, liveB); !errors.Is(err, ErrWrongInstallation) || !strings.Contains(err.Error(), string(instB)) {
		t.Fatalf("project %s into %s's read model: %v, want ErrWrongInstallation naming it", instA, instB, err)
	}
	sqlExec(t, liveA, strings.Repeat("a1", projections.KeySize), `UPDATE checkpoint SET seq = seq + 1000`)
	if err := project(instA, liveA); !errors.Is(err, ErrBehind) {
		t.Fatalf("project into a read model ahead of the stream: %v, want ErrBehind", err)
	}
}

// A read model rebuilt (or rekeyed, migrated) between a follower's open
// and the lock Project takes is refused: applying to the open handle would
// write to the replaced file, and the read model at the path would never
// move on while the follower reported progress. Until 2026-12-06 it was
// followed.
func TestProjectRefusesAReadModelReplacedAfterItsOpen(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 20)
	key := rawDBKey(t, 0xA1)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	db, err := projections.OpenExisting(live, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustRebuild(t, l, instA, live, key) // swaps a new file in
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Project(ctx, l, []Projection{{Installation: instA, DB: db}}, nil)
	if err == nil || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("project through a handle of a replaced file: %v, want a refusal saying it was replaced", err)
	}
}

// A rekey interrupted after its swap, while catching up with what was
// appended meanwhile, says the rekeyed database is live (a SwappedError
// with the result): the new key opens it and the old one does not. Until
// 2026-12-06 it returned the bare cancellation, which the tool reported as
// "interrupted; nothing was left half-written", and an operator who kept
// the old key on that word kept a key that opens nothing.
func TestRekeyInterruptedAfterTheSwapSaysItIsDone(t *testing.T) {
	l, _ := newLog(t)
	h := writeHistory(t, l, instA, 1, 20)
	oldKey, newKey := rawDBKey(t, 0xA1), rawDBKey(t, 0xA2)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, oldKey)
	before, err := os.Stat(live)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	more := func() {
		h.messages(3, 1)
		if _, err := h.flush(context.Background(), l); err != nil {
			t.Error(err)
		}
	}
	appended := map[string]bool{}
	o := testReplayOptions()
	o.BatchSize = 1
	o.Progress = func(p Progress) {
		if now, err := os.Stat(live); err == nil && !os.SameFile(before, now) {
			cancel() // swapped: interrupt the catch-up after it
			return
		}
		// Before the swap, events for the catch-up before it (appended
		// while replaying) and for the one after it (appended while
		// catching up, after the end that catch-up reads to).
		if !appended[p.Phase] {
			appended[p.Phase] = true
			more()
		}
	}
	res, err := Rekey(ctx, l, instA, live, oldKey, newKey, o)
	var se *SwappedError
	if !errors.As(err, &se) || !errors.Is(err, context.Canceled) || res == nil {
		t.Fatalf("rekey interrupted after its swap: %v (result %v), want a SwappedError wrapping the cancellation, with the result", err, res)
	}
	if _, err := projections.OpenExisting(live, oldKey, nil); !errors.Is(err, projections.ErrWrongKey) {
		t.Fatalf("the old key after the swap: %v, want ErrWrongKey", err)
	}
	db, err := projections.OpenExisting(live, newKey, nil)
	if err != nil {
		t.Fatalf("the new key after the swap: %v", err)
	}
	cp, err := db.Checkpoint(context.Background())
	db.Close()
	if err != nil || cp != res.Checkpoint || cp == 0 {
		t.Fatalf("checkpoint %d (%v), the result says %d", cp, err, res.Checkpoint)
	}
}

// A rebuild under the caller's writer lock (RebuildOptions.Lock, as
// engine.OpenInstallation migrating by replay passes it) runs without
// taking the lock again, and the caller still holds it afterwards; a
// lock of another database, or one let go of, is refused before anything
// is written.
func TestRebuildUnderTheCallersLock(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 20)
	key := rawDBKey(t, 0xA1)
	dir := t.TempDir()
	live, other := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mustRebuild(t, l, instA, live, key)
	before, err := os.Stat(live)
	if err != nil {
		t.Fatal(err)
	}

	olk, err := projections.Lock(other)
	if err != nil {
		t.Fatal(err)
	}
	defer olk.Unlock()
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), Lock: olk}); err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("rebuild under another database's lock: %v, want a refusal naming %s", err, other)
	}
	lk, err := projections.Lock(live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), Lock: lk}); err != nil {
		t.Fatalf("rebuild under the caller's lock: %v", err)
	}
	if _, err := projections.Lock(live); !errors.Is(err, projections.ErrLocked) {
		t.Fatalf("lock after the rebuild under the caller's lock: %v, want ErrLocked (the caller still holds it)", err)
	}
	lk.Unlock()
	after, err := os.Stat(live)
	if err != nil || os.SameFile(before, after) {
		t.Fatalf("the live database after the rebuild: %v, same file %v; want the rebuilt one", err, err == nil)
	}
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), Lock: lk}); err == nil {
		t.Fatal("rebuild under a lock let go of: nil error")
	}
	if now, err := os.Stat(live); err != nil || !os.SameFile(now, after) {
		t.Fatalf("a refused rebuild replaced the live database (%v)", err)
	}
}
