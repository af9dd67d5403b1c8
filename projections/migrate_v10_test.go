package projections

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// ownMessage is an own application message of group 1 by s.inst at leaf
// 0, numbered n; withOutput false is one recorded before
// application.message_sent v2 (its message not recorded).
func (s *streamBuilder) ownMessage(epoch uint64, n int, withOutput bool) OwnMessageOutput {
	o := OwnMessageOutput{Epoch: epoch, MessageID: fmt.Appendf(nil, "id-%d", n)}
	if withOutput {
		o.Message = fmt.Appendf(nil, "private-message-%d", n)
	}
	s.group(1, events.ApplicationMessageSent{GroupID: gid(1), Epoch: epoch, SenderLeaf: 0, Sender: events.InstallationID(s.inst),
		MessageID: o.MessageID, Content: events.NewSecret([]byte(fmt.Sprintf("hello %d", n))), Message: o.Message})
	return o
}

// othersCommit is a commit of group 1 by peer-1 (leaf 1).
func (s *streamBuilder) othersCommit(epoch uint64, added, removed []events.Member) {
	s.group(1, events.CommitApplied{GroupID: gid(1), Epoch: epoch, EpochAuthenticator: fmt.Appendf(nil, "a-%d", epoch),
		ConfirmedTranscriptHash: fmt.Appendf(nil, "c-%d", epoch), Commit: fmt.Appendf(nil, "commit-%d", epoch),
		State: events.NewSecret([]byte(fmt.Sprintf("s-%d", epoch))), Added: added, Removed: removed,
		Committer: &events.Committer{Leaf: 1, Identity: []byte("peer-1")}})
}

// A v9 read model migrated in place to v10 holds what a fresh v10 build
// of the same (v1) events holds: no own message output. The own messages
// recorded after it (v2, with their message) come back from
// OwnMessageOutputs with whom they were for (the members of their epoch
// but the sender, by leaf, even once a removed one's leaf is taken by
// another member), oldest first, bounded by epoch and count, and not
// once their epoch is retired; in both.
func TestMigrateToV10InPlace(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1", 2, "peer-2"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	s.ownMessage(1, 0, false) // before v2: no output
	before := len(s.recs)
	m1 := s.ownMessage(1, 1, true)
	s.group(1, events.ApplicationMessageReceived{GroupID: gid(1), Epoch: 1, SenderLeaf: 1, Sender: "peer-1", MessageID: []byte("id-r"),
		Content: events.NewSecret([]byte("hi"))})
	m2 := s.ownMessage(1, 2, true)
	// peer-1 removes peer-2, then adds peer-3 at the leaf peer-2 left:
	// the members table forgets peer-2, whom epoch 1's messages were for.
	s.othersCommit(2, nil, members(2, "peer-2"))
	s.othersCommit(3, members(2, "peer-3"), nil)
	m3 := s.ownMessage(3, 3, true)
	recs := s.recs
	m1.Ordinal, m2.Ordinal, m3.Ordinal = 2, 4, 5
	m1.Recipients, m2.Recipients, m3.Recipients = ids("peer-1", "peer-2"), ids("peer-1", "peer-2"), ids("peer-1", "peer-3")

	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "migrated.db")
	old := build(t, path, k, &Options{SchemaVersion: 9}, recs[:before])
	if got, err := old.OwnMessageOutputs(ctx, gid(1), 0, 0); err != nil || got != nil {
		t.Fatalf("schema 9: own message outputs %v, %v; want none", got, err)
	}
	old.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, &Options{SchemaVersion: 10}); err != nil || f != 9 || to != 10 {
		t.Fatalf("MigrateInPlace from v9: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, &Options{SchemaVersion: 10})
	defer migrated.Close()
	fresh := build(t, filepath.Join(dir, "fresh.db"), newKey(t), &Options{SchemaVersion: 10}, recs[:before])
	defer fresh.Close()
	same := func(when string) { t.Helper(); sameAsFresh(t, fresh, migrated, 10, when) }
	same("migrated")
	if got, err := migrated.OwnMessageOutputs(ctx, gid(1), 0, 0); err != nil || got != nil {
		t.Fatalf("migrated: own message outputs of v1 events %v, %v; want none", got, err)
	}

	applyAll(t, migrated, recs[before:])
	applyAll(t, fresh, recs[before:])
	same("after own messages")
	for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
		for _, c := range []struct {
			from  uint64
			limit int
			want  []OwnMessageOutput
		}{
			{0, 0, []OwnMessageOutput{m1, m2, m3}},
			{0, 2, []OwnMessageOutput{m2, m3}},
			{2, 0, []OwnMessageOutput{m3}},
			{4, 0, nil},
		} {
			got, err := db.OwnMessageOutputs(ctx, gid(1), c.from, c.limit)
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("%s: own message outputs from epoch %d, limit %d\n got %+v, %v\nwant %+v", name, c.from, c.limit, got, err, c.want)
			}
		}
		if got, err := db.OwnMessageOutputs(ctx, gid(2), 0, 0); err != nil || got != nil {
			t.Fatalf("%s: own message outputs of an unknown group %v, %v", name, got, err)
		}
	}

	// Epoch 1 retired: no member holds its secrets any more.
	s.recs = nil
	s.group(1, events.EpochSecretsRetired{GroupID: gid(1), Epochs: []uint64{1}})
	applyAll(t, migrated, s.recs)
	applyAll(t, fresh, s.recs)
	same("after retiring epoch 1")
	for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
		got, err := db.OwnMessageOutputs(ctx, gid(1), 0, 0)
		if err != nil || !reflect.DeepEqual(got, []OwnMessageOutput{m3}) {
			t.Fatalf("%s: own message outputs after retiring epoch 1\n got %+v, %v\nwant %+v", name, got, err, m3)
		}
	}
}

// A file kept at schema 9 while own messages recorded with their message
// (application.message_sent v2) are applied to it cannot keep them:
// MigrateInPlace refuses it, naming the first such message and writing
// nothing, as for own commits' outputs below schema 9.
func TestMigrateInPlaceRefusesMessageOutputsNotKept(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	s.ownMessage(1, 7, true)
	path := filepath.Join(t.TempDir(), "kept-at-9.db")
	k := newKey(t)
	old := build(t, path, k, &Options{SchemaVersion: 9}, s.recs)
	before, err := old.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	f, to, err := MigrateInPlace(ctx, path, k, nil)
	if !errors.Is(err, ErrOutputsNotKept) || f != 9 || to != 9 {
		t.Fatalf("MigrateInPlace of a v9 file that applied v2 message outputs: %d -> %d, %v; want ErrOutputsNotKept", f, to, err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("group %x epoch 1 message %x", gid(1), "id-7")) ||
		!strings.Contains(msg, "by replay") {
		t.Errorf("error %q does not name the file, the message and what to do", msg)
	}
	openRefusesToLoseOutputs(t, path, k, 9, fmt.Sprintf("group %x epoch 1 message %x", gid(1), "id-7"))
	db, err := OpenExisting(path, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	after, err := db.Digest(ctx)
	if err != nil || after.Schema != 9 {
		t.Fatalf("after the refusal: schema %d, %v; want 9", after.Schema, err)
	}
	if d := Compare(before, after); d != nil {
		t.Fatalf("the refused migration changed the file: %v", d)
	}
	if err := db.OutputsKept(ctx, 9); err != nil {
		t.Fatalf("outputs kept for schema 9 (which keeps no message output): %v", err)
	}
}
