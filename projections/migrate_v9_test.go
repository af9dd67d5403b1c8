package projections

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// ownCommit is an own commit of group 1 by s.inst at leaf 0; out nil is
// one recorded before group.commit_applied v5 (its output not recorded).
func (s *streamBuilder) ownCommit(epoch uint64, added, removed []events.Member, out *events.OwnOutput) {
	s.group(1, events.CommitApplied{GroupID: gid(1), Epoch: epoch, EpochAuthenticator: fmt.Appendf(nil, "a-%d", epoch),
		ConfirmedTranscriptHash: fmt.Appendf(nil, "c-%d", epoch), Commit: fmt.Appendf(nil, "commit-%d", epoch),
		State: events.NewSecret([]byte(fmt.Sprintf("s-%d", epoch))), Added: added, Removed: removed,
		Committer: &events.Committer{Leaf: 0, Identity: []byte(s.inst), Own: true}, OwnOutput: out})
}

func members(ms ...any) []events.Member {
	var out []events.Member
	for i := 0; i < len(ms); i += 2 {
		out = append(out, events.Member{Leaf: uint32(ms[i].(int)), Identity: []byte(ms[i+1].(string))})
	}
	return out
}

func ids(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, id := range s {
		out[i] = []byte(id)
	}
	return out
}

// A v8 read model migrated in place to v9 holds what a fresh v9 build of
// the same (v4) events holds: no own commit output. The own commits
// recorded after it (v5, with own_output) come back from
// OwnCommitOutputs with whom they were for (the epoch's members then,
// by leaf, one removed by the commit included, even once its leaf is
// taken by another member), their Welcome and its members, and a join
// by external commit recorded after it (v3) with the group's other
// members, sorted; in both.
func TestMigrateToV9InPlace(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1", 2, "peer-2"), nil, nil) // before v5: no output
	s.group(1, events.CommitApplied{GroupID: gid(1), Epoch: 2, EpochAuthenticator: []byte("a-2"), ConfirmedTranscriptHash: []byte("c-2"),
		Commit: []byte("commit-2"), State: events.NewSecret([]byte("s-2")), Committer: &events.Committer{Leaf: 1, Identity: []byte("peer-1")}})
	s.group(3, events.ExternalJoined{GroupID: gid(3), Epoch: 4, Commit: []byte("ext-3"), EpochAuthenticator: []byte("a-4"),
		State: events.NewSecret([]byte("s-4")), Members: members(0, "zed", 1, "inst-a")}) // before v3: no output
	before := len(s.recs)
	s.group(2, events.ExternalJoined{GroupID: gid(2), Epoch: 7, Commit: []byte("ext-2"), EpochAuthenticator: []byte("a-7"),
		State: events.NewSecret([]byte("s-7")), Members: members(0, "zed", 1, "inst-a", 2, "amy"), OwnOutput: &events.OwnOutput{}})
	s.ownCommit(3, members(3, "peer-3"), members(2, "peer-2"), &events.OwnOutput{Welcome: []byte("welcome-3")})
	s.ownCommit(4, nil, members(1, "peer-1"), &events.OwnOutput{})
	// peer-3 adds peer-5 at the leaf peer-1 left: the members table
	// forgets peer-1, whom epoch 4's commit was for.
	s.group(1, events.CommitApplied{GroupID: gid(1), Epoch: 5, EpochAuthenticator: []byte("a-5"), ConfirmedTranscriptHash: []byte("c-5"),
		Commit: []byte("commit-5"), State: events.NewSecret([]byte("s-5")), Added: members(1, "peer-5"),
		Committer: &events.Committer{Leaf: 3, Identity: []byte("peer-3")}})
	recs := s.recs

	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "migrated.db")
	old := build(t, path, k, &Options{SchemaVersion: 8}, recs[:before])
	if got, err := old.OwnCommitOutputs(ctx, gid(1), 0); err != nil || got != nil {
		t.Fatalf("schema 8: own commit outputs %v, %v; want none", got, err)
	}
	old.Close()
	v9 := &Options{SchemaVersion: 9}
	if f, to, err := MigrateInPlace(ctx, path, k, v9); err != nil || f != 8 || to != 9 {
		t.Fatalf("MigrateInPlace from v8: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, &Options{NoMigrate: true})
	defer migrated.Close()
	fresh := build(t, filepath.Join(dir, "fresh.db"), newKey(t), v9, recs[:before])
	defer fresh.Close()
	same := func(when string) { t.Helper(); sameAsFresh(t, fresh, migrated, 9, when) }
	same("migrated")
	if got, err := migrated.OwnCommitOutputs(ctx, gid(1), 0); err != nil || got != nil {
		t.Fatalf("migrated: own commit outputs of v4 events %v, %v; want none", got, err)
	}

	applyAll(t, migrated, recs[before:])
	applyAll(t, fresh, recs[before:])
	same("after own commits")
	want := []OwnCommitOutput{
		{Epoch: 3, Commit: []byte("commit-3"), Recipients: ids("peer-1", "peer-2"), Welcome: []byte("welcome-3"), Added: ids("peer-3")},
		{Epoch: 4, Commit: []byte("commit-4"), Recipients: ids("peer-1", "peer-3")},
	}
	for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
		got, err := db.OwnCommitOutputs(ctx, gid(1), 0)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: own commit outputs\n got %+v, %v\nwant %+v", name, got, err, want)
		}
		got, err = db.OwnCommitOutputs(ctx, gid(1), 4)
		if err != nil || !reflect.DeepEqual(got, want[1:]) {
			t.Fatalf("%s: own commit outputs from epoch 4\n got %+v, %v\nwant %+v", name, got, err, want[1:])
		}
		ext := []OwnCommitOutput{{Epoch: 7, Commit: []byte("ext-2"), Recipients: ids("amy", "zed")}}
		if got, err := db.OwnCommitOutputs(ctx, gid(2), 0); err != nil || !reflect.DeepEqual(got, ext) {
			t.Fatalf("%s: external join's output\n got %+v, %v\nwant %+v", name, got, err, ext)
		}
		for _, g := range []int{3, 4} { // joined before v3; unknown
			if got, err := db.OwnCommitOutputs(ctx, gid(g), 0); err != nil || got != nil {
				t.Fatalf("%s: own commit outputs of group %d: %v, %v; want none", name, g, got, err)
			}
		}
	}
}

// A corrupt identity list is ErrCorrupt, never a panic or a short list.
func TestDecodeIdentities(t *testing.T) {
	for _, l := range [][][]byte{nil, ids(""), ids("a", "bb", "")} {
		got, err := decodeIdentities(encodeIdentities(l))
		if err != nil || len(got) != len(l) || (len(l) > 0 && !reflect.DeepEqual(got, l)) {
			t.Fatalf("round trip of %q: %q, %v", l, got, err)
		}
	}
	for _, b := range [][]byte{nil, {}, {2, 1, 'a'}, {1, 5, 'a'}, {1, 1, 'a', 'b'}, {0xff}} {
		if _, err := decodeIdentities(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode %x: %v, want ErrCorrupt", b, err)
		}
	}
}

// A file kept at schema 8 while own commits recorded with their output
// (v5, v3) are applied to it (follow keeps a file at its schema) cannot
// keep them: MigrateInPlace refuses it, naming the first such commit and
// writing nothing, since the migrated file would lack what a fresh build
// has. A file that applied none migrates as before
// (TestMigrateToV9InPlace).
func TestMigrateInPlaceRefusesOutputsNotKept(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group int
		add   func(s *streamBuilder)
	}{
		{"commit", 1, func(s *streamBuilder) {
			s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
		}},
		{"external join", 2, func(s *streamBuilder) {
			s.group(2, events.ExternalJoined{GroupID: gid(2), Epoch: 7, Commit: []byte("ext-2"), EpochAuthenticator: []byte("a-7"),
				State: events.NewSecret([]byte("s-7")), Members: members(0, "zed", 1, "inst-a"), OwnOutput: &events.OwnOutput{}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream("inst-a")
			s.installation()
			s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
				Members: members(0, "inst-a")})
			tc.add(s)
			path := filepath.Join(t.TempDir(), "kept-at-8.db")
			k := newKey(t)
			old := build(t, path, k, &Options{SchemaVersion: 8}, s.recs)
			before, err := old.Digest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			old.Close()
			f, to, err := MigrateInPlace(ctx, path, k, nil)
			if !errors.Is(err, ErrOutputsNotKept) || f != 8 || to != 8 {
				t.Fatalf("MigrateInPlace of a v8 file that applied v5/v3 outputs: %d -> %d, %v; want ErrOutputsNotKept", f, to, err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("group %x", gid(tc.group))) || !strings.Contains(msg, "by replay") {
				t.Errorf("error %q does not name the file, the group and what to do", msg)
			}
			openRefusesToLoseOutputs(t, path, k, 8, fmt.Sprintf("group %x", gid(tc.group)))
			db, err := OpenExisting(path, k, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			after, err := db.Digest(ctx)
			if err != nil || after.Schema != 8 {
				t.Fatalf("after the refusal: schema %d, %v; want 8", after.Schema, err)
			}
			if d := Compare(before, after); d != nil {
				t.Fatalf("the refused migration changed the file: %v", d)
			}
		})
	}
}

// openRefusesToLoseOutputs checks that Open, asked for the latest schema,
// refuses the file at path (schema from, which applied own outputs it did
// not keep, the first named by first) as MigrateInPlace does, naming the
// file, its schema, what was not kept and what to do, and leaves the file
// byte-identical. Until 2026-12-06 Open migrated it in place, losing them.
func openRefusesToLoseOutputs(t *testing.T, path string, k Key, from int, first string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, k, nil)
	if err == nil {
		v := db.SchemaVersion()
		db.Close()
		t.Fatalf("Open of a schema %d file that did not keep own outputs migrated it to schema %d", from, v)
	}
	var fe *FileError
	if !errors.Is(err, ErrOutputsNotKept) || !errors.As(err, &fe) || fe.Path != path {
		t.Fatalf("Open of a schema %d file that did not keep own outputs: %v; want a *FileError of %s wrapping ErrOutputsNotKept", from, err, path)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("schema %d applied", from)) || !strings.Contains(msg, first) || !strings.Contains(msg, "by replay") {
		t.Errorf("error %q does not name the schema, what was not kept and what to do", msg)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sb, sa := sha256.Sum256(before), sha256.Sum256(after); !bytes.Equal(sb[:], sa[:]) {
		t.Fatalf("the refused Open changed %s (sha256 %x -> %x)", path, sb, sa)
	}
}
