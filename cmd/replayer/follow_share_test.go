package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// --lease-ttl needs --share; a share group's name and a TTL are checked
// before anything is opened.
func TestFollowShareUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--lease-ttl", "5s"}, "--lease-ttl needs --share"},
		{[]string{"--share", "a.b"}, `--share "a.b": want 1 to 64 letters, digits, - or _`},
		{[]string{"--share", "g", "--lease-ttl", "10ms"}, "--lease-ttl 10ms: must be at least 1s"},
	} {
		var errb bytes.Buffer
		code := run(context.Background(), ringEnv(&errb, &errb, nil), append([]string{"follow", "--db-dir", dir}, c.args...))
		if code != exitUsage || !strings.Contains(errb.String(), c.want) {
			t.Errorf("follow %v: exit %d, %q; want %d saying %q", c.args, code, errb.String(), exitUsage, c.want)
		}
	}
}

// A follower of a share group given a read model it does not have builds
// it from the stream (the installation's service keeps its own elsewhere),
// then follows it like any other; interrupted, it leaves the group and
// says so.
func TestFollowShareBuildsMissingReadModel(t *testing.T) {
	srv, l := startLog(t)
	svc, dir := t.TempDir(), t.TempDir()
	id := events.InstallationID("share-build")
	createInstallation(t, l, svc, id)
	enqueueFor(t, l, id, "before", 5)
	keyText, err := os.ReadFile(filepath.Join(svc, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, string(id)+".key"), keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, string(id)+".db")
	f := startFollow(t, srv.URL(), dir, "--installation", string(id), "--db-keys-beside", "--share", "solo", "--lease-ttl", "2s")
	caughtUp := func() bool {
		if _, err := os.Stat(db); err != nil {
			return false
		}
		return checkpointOf(t, dir, id) == logtest.LastSeq(t, l, id)
	}
	f.waitFor(t, "the read model built and caught up", caughtUp)
	enqueueFor(t, l, id, "after", 3)
	f.waitFor(t, "the read model caught up again", caughtUp)
	if code := f.stop(); code != exitInterrupted {
		t.Fatalf("follow exited %d, want %d: %s", code, exitInterrupted, f.stderr.String())
	}
	for _, want := range []string{
		"no read model here; building it from the stream",
		`msg="the share group gave this follower the read model"`,
		"share group solo: left; 1 read models followed by this member, 1 held when it stopped",
	} {
		if !strings.Contains(f.stderr.String(), want) {
			t.Errorf("follow did not say %q:\n%s", want, f.stderr.String())
		}
	}

	key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	if _, err := replay.Rebuild(context.Background(), l, id, fresh, key, nil); err != nil {
		t.Fatal(err)
	}
	want, _ := digestAt(t, fresh, key)
	got, _ := digestAt(t, db, key)
	if diff := projections.Compare(want, got); diff != nil {
		t.Fatalf("the built read model differs from a rebuild: %v", diff)
	}
}

// A member of a share group that cannot follow a read model it owns (here
// every read model: it was given the wrong key) gives it back after a few
// failures in a row, and a member that can takes it: every read model is
// followed. Until 2026-12-06 the failing member held its share for good.
func TestFollowShareMemberThatCannotFollowGivesItBack(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	// Ten read models: the chance that the member with the wrong key owns
	// none of them once the other joined (rendezvous hashing), so that the
	// other gets them all as their owner, is one in a thousand.
	var ids []events.InstallationID
	for i := range 10 {
		ids = append(ids, events.InstallationID(fmt.Sprintf("give-%d", i)))
	}
	for _, id := range ids {
		createInstallation(t, l, dir, id)
		enqueueFor(t, l, id, "before", 2)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	if _, err := writeDBKeyFile(wrong); err != nil {
		t.Fatal(err)
	}
	// The member with the wrong key starts alone, so it owns every read
	// model and must give them back; the other starts once it did. (Both
	// started at once, the other could take every read model before it
	// saw the first, follow them all, and pass with none given back.)
	bad := startFollow(t, srv.URL(), dir, "--db-key-file", wrong, "--share", "give", "--lease-ttl", "2s")
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(bad.stderr.String(), "giving it back to the share group") {
		if time.Now().After(deadline) {
			t.Fatalf("the member with the wrong key, alone in its group, gave nothing back two minutes on: %s", bad.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	good := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "give", "--lease-ttl", "2s")
	caughtUp := func() bool {
		for _, id := range ids {
			last, err := l.LastSeq(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if checkpointOf(t, dir, id) != last {
				return false
			}
		}
		return true
	}
	deadline = time.Now().Add(2 * time.Minute)
	for !caughtUp() {
		if time.Now().After(deadline) {
			t.Fatalf("not every read model is followed two minutes on\nthe member with the wrong key said: %s\nthe other said: %s", bad.stderr.String(), good.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A --db-dir that does not exist, or is a file, is named as such, not
// reported as holding no read models.
func TestFollowNamesAMissingReadModelDirectory(t *testing.T) {
	srv, _ := startLog(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		filepath.Join(t.TempDir(), "missing"): "no such file or directory",
		file:                                  "is not a directory",
		t.TempDir():                           "no read models to follow in",
	} {
		var errb bytes.Buffer
		code := run(context.Background(), ringEnv(&errb, &errb, nil), []string{"follow", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"})
		if code != exitUsage || !strings.Contains(errb.String(), want) {
			t.Errorf("follow --db-dir %s: exit %d, %q; want %d saying %q", dir, code, errb.String(), exitUsage, want)
		}
	}
}

// A member given a read model whose file another writer still has locked
// (on one host: a member that was stopped, SIGSTOP or a hang, past its
// lease and still holds the writer's lock) keeps the read model and
// follows it as soon as the lock is let go, within the takeover bound,
// rather than giving it back: no other member can open it either. Until
// 2026-12-06 it gave it back after three failures and left it to the
// others, here none, for shareRest: the read model went unfollowed for
// two minutes after the stopped member died.
func TestFollowShareWaitsOutAStaleWriterLock(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("share-locked")
	createInstallation(t, l, dir, id)
	enqueueFor(t, l, id, "before", 2)
	// The stopped member: it holds the read model's lock.
	stale, err := projections.LockAs(filepath.Join(dir, string(id)+".db"), "replayer follow (stopped)")
	if err != nil {
		t.Fatal(err)
	}
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "stale", "--lease-ttl", "2s")
	deadline := time.Now().Add(time.Minute)
	// More tries than a member makes before giving a read model back.
	for strings.Count(f.stderr.String(), "following read model again") < shareGiveUpAfter {
		if strings.Contains(f.stderr.String(), "giving it back to the share group") {
			t.Fatalf("the member gave a locked read model back: %s", f.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not try the locked read model %d times within a minute: %s", shareGiveUpAfter+1, f.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(f.stderr.String(), "read model failed"); n != 1 {
		t.Errorf("the locked read model's failure logged %d times, want once: %s", n, f.stderr.String())
	}
	// The stopped member dies: its lock goes with it.
	if err := stale.Unlock(); err != nil {
		t.Fatal(err)
	}
	enqueueFor(t, l, id, "after", 2)
	// Well within shareRest, well beyond the takeover bound (a few seconds).
	deadline = time.Now().Add(time.Minute)
	for checkpointOf(t, dir, id) != logtest.LastSeq(t, l, id) {
		if time.Now().After(deadline) {
			t.Fatalf("the read model is not followed a minute after its stale lock was let go: %s", f.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(f.stderr.String(), "giving it back to the share group") {
		t.Errorf("the member gave a locked read model back: %s", f.stderr.String())
	}
}

// A member following every *.db of --db-dir lists the directory again at
// each pass, and picks up a read model that appears meanwhile. A file
// there whose name is no installation id ("alice.old.db", a copy left by
// hand) is skipped with a warning, and does not stop read models that
// appear after it from being picked up. Until 2026-12-06 it made every
// later listing fail, and no new read model was followed until restart.
func TestFollowShareSkipsAStrayFileWhenListingAgain(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	first := events.InstallationID("share-first")
	createInstallation(t, l, dir, first)
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "rescan", "--lease-ttl", "2s")
	f.waitFor(t, "the first read model followed", func() bool {
		return strings.Contains(f.stderr.String(), `msg="the share group gave this follower the read model"`)
	})
	if err := os.WriteFile(filepath.Join(dir, "share-first.old.db"), []byte("a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a few passes list the directory with the stray file
	later := events.InstallationID("share-later")
	createInstallation(t, l, dir, later)
	enqueueFor(t, l, later, "after", 3)
	deadline := time.Now().Add(time.Minute)
	for checkpointOf(t, dir, later) != logtest.LastSeq(t, l, later) {
		if time.Now().After(deadline) {
			t.Fatalf("a read model that appeared in --db-dir is not followed a minute on: %s", f.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(f.stderr.String(), "share-first.old.db") {
		t.Errorf("the stray file was not named in a warning: %s", f.stderr.String())
	}
}

// A member gives a read model back to its share group after failures of
// its own copy (a key it lacks, a file it cannot open), which another
// member may not have; not after the stream's or the connection's (the
// server gone, a read stalled), which every member meets alike: given
// back for those, the read models of the whole group went unfollowed for
// shareRest after an outage. Until 2026-12-06 every failure counted.
// The errors here are real ones: a follow's catch-up with the server
// gone, and a read model opened with another key.
func TestFollowShareGivesBackOnlyForItsOwnFailures(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("share-outage")
	createInstallation(t, l, dir, id)
	enqueueFor(t, l, id, "before", 2)
	path := filepath.Join(dir, string(id)+".db")

	other, err := projections.GenerateRawKey()
	if err != nil {
		t.Fatal(err)
	}
	_, wrongKey := projections.OpenExisting(path, other, nil)
	if wrongKey == nil || everyMembers(wrongKey) {
		t.Errorf("a read model opened with another key (%v) counts as every member's failure", wrongKey)
	}

	srv.Shutdown()
	defer srv.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, gone := l.LastSeq(ctx, id)
	if gone == nil || !everyMembers(gone) {
		t.Errorf("the server gone (%v) counts as this member's own failure", gone)
	}
}

// A member that starts (or restarts) while a stray file lies in --db-dir
// skips it as a later listing does, and follows the read models there:
// a share group's directory is listed alike at start and at each pass.
// Until now the first listing refused the stray file as a usage error,
// so no member could start, or be restarted, on that directory.
func TestFollowShareStartsBesideAStrayFile(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	first := events.InstallationID("share-first")
	createInstallation(t, l, dir, first)
	if err := os.WriteFile(filepath.Join(dir, "share-first.old.db"), []byte("a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "stray", "--lease-ttl", "2s")
	f.waitFor(t, "the read model followed", func() bool {
		return strings.Contains(f.stderr.String(), `msg="the share group gave this follower the read model"`)
	})
	if !strings.Contains(f.stderr.String(), "share-first.old.db") {
		t.Errorf("the stray file was not named in a warning: %s", f.stderr.String())
	}
}
