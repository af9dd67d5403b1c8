package projections

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// The queries the engine asks, on a read model built by applying the
// sample stream.
func TestEngineQueries(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 40)
	db := mustOpen(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), nil)

	// Before any event: nothing is found, nothing fails.
	if inst, found, err := db.Installation(ctx); err != nil || found || inst.ID != "" {
		t.Fatalf("installation of an empty read model: %+v, %v, %v", inst, found, err)
	}
	if state, found, err := db.KeyPackageState(ctx, kref(1)); err != nil || found || state != "" {
		t.Fatalf("key package state of an empty read model: %q, %v, %v", state, found, err)
	}
	applyAll(t, db, recs)

	t.Run("installation", func(t *testing.T) {
		inst, found, err := db.Installation(ctx)
		if err != nil || !found {
			t.Fatalf("installation: %v, %v", found, err)
		}
		if inst.ID != "inst-a" || inst.Ciphersuite != 3 || string(inst.SignaturePrivateKey.Bytes()) != "sigpriv-inst-a" ||
			string(inst.SignaturePublicKey) != "sigpub-inst-a" || string(inst.Credential) != "cred-inst-a" || !inst.CreatedAt.Equal(recs[0].Event.Time) {
			t.Fatalf("installation %+v (private key %q)", inst, inst.SignaturePrivateKey)
		}
		assertRedacted(t, inst, "sigpriv")
	})

	t.Run("position", func(t *testing.T) {
		want := map[events.Aggregate]uint64{}
		for _, r := range recs {
			want[r.Event.Aggregate] = r.Event.Position
		}
		for agg, pos := range want {
			if got, err := db.Position(ctx, agg); err != nil || got != pos {
				t.Errorf("position of %v: %d, %v; want %d", agg, got, err, pos)
			}
		}
		unknown := events.Aggregate{Installation: "inst-a", Type: events.AggGroup, ID: hex.EncodeToString(gid(77))}
		if got, err := db.Position(ctx, unknown); err != nil || got != 0 {
			t.Errorf("position of an unknown aggregate: %d, %v", got, err)
		}
	})

	t.Run("key packages", func(t *testing.T) {
		for _, c := range []struct {
			ref   []byte
			state string
			held  bool
		}{
			{kref(1), KeyPackageRotated, false},  // rotated out by kp 3's rotation
			{kref(2), KeyPackageConsumed, false}, // one-time: keys went with its use
			{kref(3), KeyPackageRotated, true},   // the previous last-resort package
			{kref(4), KeyPackageGenerated, true}, // the current one
		} {
			state, found, err := db.KeyPackageState(ctx, c.ref)
			if err != nil || !found || state != c.state {
				t.Errorf("state of %s: %q, %v, %v; want %q", c.ref, state, found, err, c.state)
			}
			kp, found, err := db.HeldKeyPackage(ctx, c.ref)
			if err != nil || found != c.held {
				t.Errorf("held key package %s: found %v, %v; want %v", c.ref, found, err, c.held)
				continue
			}
			if !c.held {
				if kp.Ref != nil || !kp.InitPrivateKey.IsZero() {
					t.Errorf("held key package %s not found, but returned %+v", c.ref, kp)
				}
				continue
			}
			n := c.ref[len(c.ref)-1] - '0'
			if !bytes.Equal(kp.Ref, c.ref) || kp.State != c.state || !kp.LastResort || kp.Ciphersuite != 3 ||
				string(kp.KeyPackage.KeyPackage) != fmt.Sprintf("kp-bytes-%d", n) || kp.GeneratedAt.IsZero() ||
				string(kp.InitPrivateKey.Bytes()) != fmt.Sprintf("init-priv-%d", n) || string(kp.EncryptionPrivateKey.Bytes()) != fmt.Sprintf("enc-priv-%d", n) {
				t.Errorf("held key package %s: %+v", c.ref, kp)
			}
			assertRedacted(t, kp, "priv")
		}
		if _, found, err := db.KeyPackageState(ctx, kref(9)); found || err != nil {
			t.Errorf("state of an unknown key package: %v, %v", found, err)
		}
		if _, found, err := db.HeldKeyPackage(ctx, kref(9)); found || err != nil {
			t.Errorf("unknown held key package: %v, %v", found, err)
		}
	})

	t.Run("groups", func(t *testing.T) {
		g := gid(0) // epochs 0-6; peer-2 added at 3, removed at 5; epochs 0-2 retired
		for _, c := range []struct {
			who    string
			member bool
		}{{"inst-a", true}, {"peer-1", true}, {"peer-2", false}, {"stranger", false}} {
			if got, err := db.IsMember(ctx, g, []byte(c.who)); err != nil || got != c.member {
				t.Errorf("IsMember(%s): %v, %v; want %v", c.who, got, err, c.member)
			}
		}
		if got, err := db.IsMember(ctx, gid(77), []byte("inst-a")); err != nil || got {
			t.Errorf("IsMember of an unknown group: %v, %v", got, err)
		}
		for _, c := range []struct {
			who     string
			epoch   uint64
			removed bool
		}{{"peer-2", 5, true}, {"peer-2", 4, false}, {"peer-2", 6, false}, {"inst-a", 5, false}} {
			if got, err := db.MemberRemovedAt(ctx, g, []byte(c.who), c.epoch); err != nil || got != c.removed {
				t.Errorf("MemberRemovedAt(%s, %d): %v, %v; want %v", c.who, c.epoch, got, err, c.removed)
			}
		}
		for e := uint64(0); e <= 7; e++ {
			got, err := db.EpochRetired(ctx, g, e)
			if want := e < 3; err != nil || got != want {
				t.Errorf("EpochRetired(%d): %v, %v; want %v", e, got, err, want)
			}
		}
		if ok, err := db.CommitStartedEpoch(ctx, g, 3, []byte("commit-0-3")); err != nil || !ok {
			t.Errorf("commit of epoch 3: %v, %v", ok, err)
		}
		for _, c := range []struct {
			epoch  uint64
			commit []byte
		}{{3, []byte("commit-0-4")}, {4, []byte("commit-0-3")}, {0, nil}, {0, []byte{}}} {
			if ok, err := db.CommitStartedEpoch(ctx, g, c.epoch, c.commit); err != nil || ok {
				t.Errorf("CommitStartedEpoch(%d, %q): %v, %v", c.epoch, c.commit, ok, err)
			}
		}
	})

	t.Run("newest commit", func(t *testing.T) {
		commitTime := map[string]events.Event{}
		for _, r := range recs {
			if c, ok := r.Event.Body.(events.CommitApplied); ok {
				commitTime[string(c.Commit)] = r.Event
			}
		}
		var seen []string
		ec, found, err := db.NewestCommit(ctx, gid(0), func(c []byte) bool {
			if c == nil {
				t.Error("match called for an epoch without commit")
			}
			seen = append(seen, string(c))
			return string(c) == "commit-0-3"
		})
		if err != nil || !found || ec.Epoch != 3 || string(ec.Commit) != "commit-0-3" || !ec.CreatedAt.Equal(commitTime["commit-0-3"].Time) {
			t.Fatalf("newest commit matching epoch 3: %+v, %v, %v", ec, found, err)
		}
		if got := strings.Join(seen, ","); got != "commit-0-6,commit-0-5,commit-0-4,commit-0-3" {
			t.Fatalf("match saw %s: not newest first, or did not stop at the match", got)
		}
		any := func([]byte) bool { return true }
		if ec, found, err := db.NewestCommit(ctx, gid(0), any); err != nil || !found || ec.Epoch != 6 {
			t.Fatalf("newest commit: %+v, %v, %v", ec, found, err)
		}
		// The joined group's only epoch came with the Welcome: no commit.
		if ec, found, err := db.NewestCommit(ctx, gid(900), any); err != nil || found {
			t.Fatalf("newest commit of a group joined without commits since: %+v, %v, %v", ec, found, err)
		}
		if _, found, err := db.NewestCommit(ctx, gid(0), func([]byte) bool { return false }); err != nil || found {
			t.Fatalf("no match: %v, %v", found, err)
		}
	})

	t.Run("messages", func(t *testing.T) {
		// Group 0, epoch 1: messages 0-6, the even ones sent.
		ms, err := db.MessagesSentInEpoch(ctx, gid(0), 1)
		if err != nil || len(ms) != 4 {
			t.Fatalf("sent in epoch 1: %d, %v", len(ms), err)
		}
		for i, m := range ms {
			n := 2 * i
			if string(m.Content.Bytes()) != fmt.Sprintf("hello %d in group 0", n) || string(m.AuthenticatedData) != "ad" ||
				m.Direction != "sent" || m.Epoch != 1 || m.Sender != "inst-a" || string(m.ID) != fmt.Sprintf("msg-0-%d", n) {
				t.Errorf("sent message %d: %+v (content %q)", i, m, m.Content)
			}
		}
		if ms, err := db.MessagesSentInEpoch(ctx, gid(900), 4); err != nil || len(ms) != 0 {
			t.Errorf("sent in a group with received messages only: %+v, %v", ms, err)
		}
		for _, c := range []struct {
			group []byte
			id    string
			has   bool
		}{{gid(0), "msg-0-0", true}, {gid(0), "msg-0-39", true}, {gid(1), "msg-0-0", false}, {gid(0), "msg-9-9", false}} {
			if got, err := db.HasMessage(ctx, c.group, []byte(c.id)); err != nil || got != c.has {
				t.Errorf("HasMessage(%s, %s): %v, %v; want %v", c.group, c.id, got, err, c.has)
			}
		}
	})

	t.Run("group joined with key package", func(t *testing.T) {
		if g, found, err := db.GroupJoinedWith(ctx, kref(2), []byte("inst-a")); err != nil || !found || !bytes.Equal(g, gid(900)) {
			t.Fatalf("group joined with the one-time package: %q, %v, %v", g, found, err)
		}
		for _, c := range []struct {
			ref    []byte
			member string
		}{
			{kref(2), "peer-1"}, // not a member of that group
			{kref(1), "inst-a"}, // last resort: says nothing about one join
			{kref(4), "inst-a"}, // not consumed
			{kref(9), "inst-a"}, // unknown
		} {
			if g, found, err := db.GroupJoinedWith(ctx, c.ref, []byte(c.member)); err != nil || found || g != nil {
				t.Errorf("GroupJoinedWith(%s, %s): %q, %v, %v", c.ref, c.member, g, found, err)
			}
		}
	})

	// Removed from the joined group: the join no longer counts, and the
	// removal is found at its epoch.
	s := newStream("inst-a")
	s.recs, s.seq = recs, lastSeq(recs)
	for _, r := range recs {
		s.pos[r.Event.Aggregate] = r.Event.Position
	}
	s.commit(900, 5, nil, []events.Member{{Leaf: 3, Identity: []byte("inst-a")}})
	applyAll(t, db, s.recs)
	if g, found, err := db.GroupJoinedWith(ctx, kref(2), []byte("inst-a")); err != nil || found {
		t.Fatalf("group joined with the package after leaving it: %q, %v, %v", g, found, err)
	}
	if ok, err := db.MemberRemovedAt(ctx, gid(900), []byte("inst-a"), 5); err != nil || !ok {
		t.Fatalf("removal from the joined group: %v, %v", ok, err)
	}
	if ok, err := db.IsMember(ctx, gid(900), []byte("inst-a")); err != nil || ok {
		t.Fatalf("still a member after the removal: %v, %v", ok, err)
	}
}

// A query that fails says which database and which query, as a *FileError.
func TestQueryErrorsNameTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "closed.db")
	db, err := Open(path, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	checks := map[string]func() error{
		"membership":       func() error { _, err := db.IsMember(ctx, gid(0), []byte("x")); return err },
		"installation":     func() error { _, _, err := db.Installation(ctx); return err },
		"held key package": func() error { _, _, err := db.HeldKeyPackage(ctx, kref(1)); return err },
		"epoch commits":    func() error { _, _, err := db.NewestCommit(ctx, gid(0), func([]byte) bool { return true }); return err },
		"sent messages":    func() error { _, err := db.MessagesSentInEpoch(ctx, gid(0), 0); return err },
		"aggregate position": func() error {
			_, err := db.Position(ctx, events.Aggregate{Installation: "i", Type: events.AggGroup, ID: "aa"})
			return err
		},
	}
	for op, f := range checks {
		err := f()
		var fe *FileError
		if !errors.As(err, &fe) || fe.Path != path || fe.Op != op || !strings.Contains(err.Error(), path) {
			t.Errorf("%s on a closed database: %v, want a *FileError naming %s and the query", op, err, path)
		}
	}
}

// assertRedacted fails if any printed or JSON form of v contains secret.
func assertRedacted(t *testing.T, v any, secret string) {
	t.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v), fmt.Sprintf("%s", v), fmt.Sprintf("%x", v), string(j)} {
		if strings.Contains(s, secret) || strings.Contains(s, hex.EncodeToString([]byte(secret))) {
			t.Errorf("printed form shows the secret: %s", s)
		}
	}
}
