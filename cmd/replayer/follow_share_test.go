package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
