package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// TestEraseCommand: erase refuses without --yes when stdin is not a
// terminal, naming the installation; with it, it erases (and deletes the
// read model given); a rebuild of the erased installation then fails
// saying so, and another installation still rebuilds.
func TestEraseCommand(t *testing.T) {
	noTerminal(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"erase-me", "keep-me"} {
		createInstallation(t, l, dir, id)
	}
	db := func(id string) string { return filepath.Join(dir, id+".db") }
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), ringEnv(&out, &errb, nil), args)
		return code, out.String(), errb.String()
	}
	code, _, stderr := cli("erase", "--nats", srv.URL(), "--installation", "erase-me")
	if code != exitUsage || !strings.Contains(stderr, "erase-me") || !strings.Contains(stderr, "--yes") {
		t.Fatalf("erase without --yes: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(db("erase-me")); err != nil {
		t.Fatalf("refused erase touched the read model: %v", err)
	}
	key := func(id string) string { return filepath.Join(dir, id+".key") }
	// An id the stream does not know (a typo) is refused, no tombstone.
	if code, stdout, stderr := cli("erase", "--yes", "--nats", srv.URL(), "--installation", "erase-mee"); code == exitOK || !strings.Contains(stderr, "nothing to erase") {
		t.Fatalf("erase of a typo'd id: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// --db is checked before anything is erased: it must be the
	// installation's own read model, opened with its key. Another
	// installation's file, a link to the right one, a directory, any file
	// at all, or no key: refused, nothing erased or deleted.
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "erase-me.db")
	if err := os.Symlink(db("erase-me"), link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"another installation's read model", []string{"--db", db("keep-me"), "--db-key-file", key("keep-me")}, "installation keep-me's"},
		{"its own file under another's key", []string{"--db", db("erase-me"), "--db-key-file", key("keep-me")}, "wrong key"},
		{"a link to the read model", []string{"--db", link, "--db-key-file", key("erase-me")}, "not a regular file"},
		{"a directory", []string{"--db", dir, "--db-key-file", key("erase-me")}, "not a regular file"},
		{"a text file", []string{"--db", notes, "--db-key-file", key("erase-me")}, notes},
		{"no key", []string{"--db", db("erase-me")}, "no read-model key"},
	} {
		code, _, stderr := cli(append([]string{"erase", "--yes", "--nats", srv.URL(), "--installation", "erase-me"}, c.args...)...)
		if code == exitOK || !strings.Contains(stderr, c.want) {
			t.Fatalf("erase with %s: exit %d, stderr %q; want it refused with %q", c.name, code, stderr, c.want)
		}
		for _, f := range []string{db("erase-me"), db("keep-me"), notes, link} {
			if _, err := os.Lstat(f); err != nil {
				t.Fatalf("erase with %s, refused, removed %s: %v", c.name, f, err)
			}
		}
		if last, err := l.LastSeq(context.Background(), "erase-me"); err != nil || last == 0 {
			t.Fatalf("erase with %s, refused: the installation's last event at %d (%v), want its events kept", c.name, last, err)
		}
	}
	code, stdout, stderr := cli("erase", "--json", "--yes", "--nats", srv.URL(), "--installation", "erase-me", "--db", db("erase-me"), "--db-key-file", key("erase-me"), "--by", "ops")
	if code != exitOK {
		t.Fatalf("erase: exit %d, stderr %q", code, stderr)
	}
	var res struct {
		Installation string `json:"installation"`
		By           string `json:"by"`
		Events       uint64 `json:"events_purged"`
		Keys         uint64 `json:"keys_purged"`
		Resumed      bool   `json:"resumed"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Installation != "erase-me" || res.By != "ops" || res.Events == 0 || res.Keys == 0 || res.Resumed {
		t.Fatalf("erase output %q (%v)", stdout, err)
	}
	if _, err := os.Stat(db("erase-me")); !os.IsNotExist(err) {
		t.Fatalf("read model still there: %v", err)
	}
	// Its own key file went with it (until 2026-12-07 it stayed).
	if _, err := os.Stat(key("erase-me")); !os.IsNotExist(err) || !strings.Contains(stdout, `"key_file_removed":"`+key("erase-me")+`"`) {
		t.Fatalf("the erased read model's key file: %v; erase said %q", err, stdout)
	}
	code, _, stderr = cli("rebuild", "--nats", srv.URL(), "--installation", "erase-me", "--db", db("erase-me"), "--db-key-file", filepath.Join(dir, "keep-me.key"))
	if code == exitOK || !strings.Contains(stderr, "erased at") {
		t.Fatalf("rebuild of the erased installation: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = cli("rebuild", "--nats", srv.URL(), "--installation", "keep-me", "--db", db("keep-me"), "--db-key-file", filepath.Join(dir, "keep-me.key"))
	if code != exitOK {
		t.Fatalf("rebuild of the other installation: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ = cli("erase", "--yes", "--nats", srv.URL(), "--installation", "erase-me", "--db", db("erase-me"), "--db-key-file", key("erase-me"))
	if code != exitOK || !strings.Contains(stdout, "finished erasing installation erase-me") || !strings.Contains(stdout, "nothing removed there") {
		t.Fatalf("erase again: exit %d, stdout %q", code, stdout)
	}
}

// TestEraseNamesWhoWithoutUSER: with no --by and no $USER (a service
// manager, cron, a container), the tombstone names the user running the
// command; it named nobody.
func TestEraseNamesWhoWithoutUSER(t *testing.T) {
	me, err := user.Current()
	if err != nil || me.Username == "" {
		t.Skipf("no user name to expect: %v", err)
	}
	srv, l := startLog(t)
	createInstallation(t, l, t.TempDir(), "erase-me")
	var out, errb bytes.Buffer
	code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"erase", "--json", "--yes", "--nats", srv.URL(), "--installation", "erase-me"})
	if code != exitOK {
		t.Fatalf("erase: exit %d, stderr %q", code, errb.String())
	}
	var res struct {
		By string `json:"by"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.By != me.Username {
		t.Fatalf("erase output %q (%v): want by %q", out.String(), err, me.Username)
	}
	tomb, _, found, err := l.Tombstone(context.Background(), "erase-me")
	if err != nil || !found || tomb.By != me.Username {
		t.Fatalf("tombstone by %q (found %v, %v), want %q", tomb.By, found, err, me.Username)
	}
}

// TestEraseNamesWhatItRemovedFromTheTombstoneSubject: a message another
// publisher put on the installation's tombstone subject does not stop
// erase: it is removed and named, on stdout and in --json. Until
// 2026-12-07 the erase failed for good on it.
func TestEraseNamesWhatItRemovedFromTheTombstoneSubject(t *testing.T) {
	noTerminal(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"squat-a", "squat-b"} {
		createInstallation(t, l, dir, id)
	}
	for _, c := range []struct {
		id   events.InstallationID
		json bool
	}{{"squat-a", false}, {"squat-b", true}} {
		subj, err := l.TombstoneSubject(c.id)
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(l.Conn())
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(context.Background(), subj, []byte("garbage"))
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		args := []string{"erase", "--yes", "--nats", srv.URL(), "--installation", string(c.id)}
		if c.json {
			args = append(args, "--json")
		}
		if code := run(context.Background(), ringEnv(&out, &errb, nil), args); code != exitOK {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
		if !c.json {
			want := fmt.Sprintf("removed the message at seq %d from the tombstone subject: not a tombstone (malformed)", ack.Sequence)
			if !strings.Contains(out.String(), want) {
				t.Fatalf("erase stdout %q, want %q", out.String(), want)
			}
			continue
		}
		var res struct {
			Removed []struct {
				Seq uint64 `json:"seq"`
				Why string `json:"why"`
			} `json:"tombstone_subject_removed"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Removed) != 1 || res.Removed[0].Seq != ack.Sequence || res.Removed[0].Why == "" {
			t.Fatalf("erase --json %q (%v), want seq %d in tombstone_subject_removed", out.String(), err, ack.Sequence)
		}
	}
}
