package projections

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// removedFromGroup appends to s a group that the installation joined by
// Welcome and was removed from by another member's commit, as written
// before schema 3 (no committer, no departure flag).
func removedFromGroup(s *streamBuilder, g int) {
	inst := []byte(s.inst)
	s.group(g, events.WelcomeProcessed{GroupID: gid(g), Epoch: 2, KeyPackageRef: kref(4), Welcome: []byte("welcome-a"),
		EpochAuthenticator: []byte("auth-a"), State: events.NewSecret([]byte("state-a-2"))})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 2, Leaf: 0, Identity: []byte("peer-1")})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 2, Leaf: 1, Identity: inst})
	s.commit(g, 3, []events.Member{{Leaf: 2, Identity: []byte("peer-2")}}, nil)
	s.message(g, 3, 1, true)
	s.group(g, events.MemberRemoved{GroupID: gid(g), Epoch: 3, Leaf: 1, Identity: inst})
}

// v3Extras appends what schema 3 holds: a group whose wire format is set,
// with an own and a received proposal (each with the state it left), an
// own commit, the installation's departure by its own proposal, and its
// return by a second Welcome.
func v3Extras(s *streamBuilder, g int) (beforeRejoin int) {
	inst := []byte(s.inst)
	s.group(g, events.WelcomeProcessed{GroupID: gid(g), Epoch: 2, KeyPackageRef: kref(4), Welcome: []byte("welcome-1"),
		EpochAuthenticator: []byte("auth-2"), State: events.NewSecret([]byte("state-2"))})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 2, Leaf: 0, Identity: []byte("peer-1")})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 2, Leaf: 1, Identity: inst})
	s.group(g, events.HandshakeFormatSet{GroupID: gid(g), WireFormat: 2})
	s.message(g, 2, 100, true)
	s.group(g, events.ProposalStaged{GroupID: gid(g), Epoch: 2, ProposalRef: []byte("ref-own"), ProposalType: 2, SenderLeaf: 1,
		Sender: inst, Own: true, Proposal: []byte("update"), Message: []byte("msg-own"), MessageID: []byte("id-own"), State: events.NewSecret([]byte("state-2-p1"))})
	s.message(g, 2, 101, true)
	s.group(g, events.ProposalStaged{GroupID: gid(g), Epoch: 2, ProposalRef: []byte("ref-peer"), ProposalType: 3, SenderLeaf: 0,
		Sender: []byte("peer-1"), Proposal: []byte("remove"), Message: []byte("msg-peer"), MessageID: []byte("id-peer"), State: events.NewSecret([]byte("state-2-p2"))})
	s.message(g, 2, 102, true)
	s.group(g, events.StateRecorded{GroupID: gid(g), Epoch: 2, State: events.NewSecret([]byte("state-2-r"))})
	s.group(g, events.CommitApplied{GroupID: gid(g), Epoch: 3, EpochAuthenticator: []byte("auth-3"), ConfirmedTranscriptHash: []byte("cth-3"),
		Commit: []byte("commit-3"), State: events.NewSecret([]byte("state-3")), Committer: &events.Committer{Leaf: 1, Identity: inst, Own: true}})
	s.group(g, events.CommitApplied{GroupID: gid(g), Epoch: 4, EpochAuthenticator: []byte("auth-4"), ConfirmedTranscriptHash: []byte("cth-4"),
		Commit: []byte("commit-4"), State: events.NewSecret([]byte("state-4")), Committer: &events.Committer{Leaf: 0, Identity: []byte("peer-1")}})
	s.group(g, events.MemberRemoved{GroupID: gid(g), Epoch: 4, Leaf: 1, Identity: inst, Left: true})
	beforeRejoin = len(s.recs)
	s.group(g, events.WelcomeProcessed{GroupID: gid(g), Epoch: 7, KeyPackageRef: kref(4), Welcome: []byte("welcome-2"),
		EpochAuthenticator: []byte("auth-7"), State: events.NewSecret([]byte("state-7"))})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 7, Leaf: 0, Identity: []byte("peer-1")})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 7, Leaf: 2, Identity: inst})
	s.message(g, 7, 103, false)
	return beforeRejoin
}

// externalJoins appends a group joined by the installation's own external
// commit, another member's external commit, and a resync.
func externalJoins(s *streamBuilder, g int) {
	inst := []byte(s.inst)
	s.group(g, events.ExternalJoined{GroupID: gid(g), Epoch: 5, GroupInfo: []byte("gi-4"), Commit: []byte("ext-commit-5"),
		EpochAuthenticator: []byte("auth-5"), State: events.NewSecret([]byte("state-5"))})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 5, Leaf: 0, Identity: []byte("peer-1")})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 5, Leaf: 1, Identity: inst})
	s.group(g, events.CommitApplied{GroupID: gid(g), Epoch: 6, EpochAuthenticator: []byte("auth-6"), ConfirmedTranscriptHash: []byte("cth-6"),
		Commit: []byte("ext-commit-6"), State: events.NewSecret([]byte("state-6")), Added: []events.Member{{Leaf: 2, Identity: []byte("peer-2")}},
		Committer: &events.Committer{Leaf: 2, Identity: []byte("peer-2"), External: true}})
	s.group(g, events.ExternalJoined{GroupID: gid(g), Epoch: 9, GroupInfo: []byte("gi-8"), RatchetTree: []byte("tree-8"), Commit: []byte("ext-commit-9"),
		Resync: true, RemovedLeaf: 1, Reason: "forked", EpochAuthenticator: []byte("auth-9"), State: events.NewSecret([]byte("state-9"))})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 9, Leaf: 0, Identity: []byte("peer-1")})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 9, Leaf: 1, Identity: inst})
	s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 9, Leaf: 2, Identity: []byte("peer-2")})
}

// sampleStreamV3 is sampleStream with v3Extras and externalJoins: every
// kind of the catalogue.
func sampleStreamV3(t testing.TB, inst string) []Record {
	t.Helper()
	s := newStream(inst)
	buildSample(s, 2, 40)
	v3Extras(s, 950)
	externalJoins(s, 951)
	pskEvents(s)
	return s.recs
}

// pskEvents registers two external PSKs and retires one.
func pskEvents(s *streamBuilder) {
	s.add(events.AggInstallation, "", events.ExternalPSKRegistered{PSKID: []byte("psk-a"), Secret: events.NewSecret([]byte("secret-a"))})
	s.add(events.AggInstallation, "", events.ExternalPSKRegistered{PSKID: []byte("psk-b"), Secret: events.NewSecret([]byte("secret-b"))})
	s.add(events.AggInstallation, "", events.ExternalPSKRetired{PSKID: []byte("psk-a")})
}

// External PSKs are held until retired; a retired one's secret is gone,
// and an id is registered once.
func TestExternalPSKsProjected(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 1, 3)
	pskEvents(s)
	db := mustOpen(t, filepath.Join(t.TempDir(), "v3.db"), newKey(t), nil)
	applyAll(t, db, s.recs)
	ps, err := db.ExternalPSKs(ctx)
	if err != nil || len(ps) != 1 || string(ps[0].ID) != "psk-b" || string(ps[0].Secret.Bytes()) != "secret-b" {
		t.Fatalf("held PSKs %+v, %v", ps, err)
	}
	if reg, _ := db.ExternalPSKRegistered(ctx, []byte("psk-a")); !reg {
		t.Fatal("a retired PSK is forgotten")
	}
	var n int
	db.sql.QueryRow(`SELECT count(*) FROM external_psks WHERE secret IS NOT NULL AND psk_id = ?`, []byte("psk-a")).Scan(&n)
	if n != 0 {
		t.Fatal("a retired PSK keeps its secret")
	}
	again := s.add(events.AggInstallation, "", events.ExternalPSKRegistered{PSKID: []byte("psk-a"), Secret: events.NewSecret([]byte("other"))})
	if err := db.Apply(ctx, []Record{again}); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("registering a PSK id again: %v", err)
	}
	retire := s.add(events.AggInstallation, "", events.ExternalPSKRetired{PSKID: []byte("psk-a")})
	retire.Event.Position--
	retire.Seq--
	if err := db.Apply(ctx, []Record{retire}); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("retiring a retired PSK: %v", err)
	}
}

// Joins by external commit: the first membership, a resync that abandons
// it (the installation still a member of it), committers recorded.
func TestExternalJoinsProjected(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 1, 3)
	externalJoins(s, 951)
	db := mustOpen(t, filepath.Join(t.TempDir(), "v3.db"), newKey(t), &Options{BatchSize: 3})
	applyAll(t, db, s.recs)
	g := gid(951)
	ms, err := db.Memberships(ctx, g)
	if err != nil || len(ms) != 2 || ms[0].JoinedVia != "external" || ms[0].Left != "abandoned" || ms[0].LeftEpoch != 6 ||
		ms[1].JoinedVia != "external" || ms[1].JoinedEpoch != 9 || ms[1].Left != "" {
		t.Fatalf("memberships %+v, %v", ms, err)
	}
	pe, _ := db.PastEpochs(ctx, g, 1)
	if len(pe) != 2 {
		t.Fatalf("past epochs %+v", pe)
	}
	if applied, _ := db.CommitStartedEpoch(ctx, g, 9, []byte("ext-commit-9")); !applied {
		t.Fatal("the own external commit is not the epoch's commit")
	}
	if ec, found, err := db.NewestOwnCommit(ctx, g, func([]byte) bool { return false }); err != nil || !found || ec.Epoch != 9 {
		t.Fatalf("own external commit: %+v %v %v", ec, found, err)
	}
	gr, _, _ := db.Group(ctx, g)
	if gr.JoinedVia != "external" || gr.Membership != 2 || gr.Epoch != 9 {
		t.Fatalf("group %+v", gr)
	}
	one := build(t, filepath.Join(t.TempDir(), "one.db"), newKey(t), &Options{BatchSize: 10000}, s.recs)
	if d, err := CompareDB(ctx, db, one); d != nil || err != nil {
		t.Fatalf("batching changes the content: %v %v", d, err)
	}
}

// A v1 or v2 read model migrated in place to v3 holds what a fresh v3
// build of the same events holds: memberships (ended ones included),
// committers unknown, messages of membership 1.
func TestMigrateToV3InPlace(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 2, 20)
	removedFromGroup(s, 960)
	recs := s.recs
	dir := t.TempDir()
	k := newKey(t)
	fresh := build(t, filepath.Join(dir, "v3.db"), newKey(t), nil, recs)
	want, _ := fresh.Digest(ctx)
	for _, from := range []int{1, 2} {
		path := filepath.Join(dir, "old.db")
		if from == 2 {
			path = filepath.Join(dir, "old2.db")
		}
		build(t, path, k, &Options{SchemaVersion: from}, recs).Close()
		if f, to, err := MigrateInPlace(ctx, path, k, nil); err != nil || f != from || to != LatestSchema {
			t.Fatalf("MigrateInPlace from v%d: %d -> %d, %v", from, f, to, err)
		}
		db := mustOpen(t, path, k, nil)
		got, _ := db.Digest(ctx)
		if d := Compare(want, got); d != nil {
			dd, _ := CompareDB(ctx, fresh, db)
			t.Fatalf("v%d migrated in place differs from a fresh v3 build: %v (%v)", from, d, dd)
		}
		ms, err := db.Memberships(ctx, gid(960))
		if err != nil || len(ms) != 1 || ms[0].JoinedVia != "welcome" || ms[0].JoinedEpoch != 2 || ms[0].Left != "removed" || ms[0].LeftEpoch != 3 {
			t.Fatalf("v%d: memberships %+v, %v", from, ms, err)
		}
		var fk int
		if err := db.sql.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("v%d: foreign keys %d after the migration, %v", from, fk, err)
		}
		var idx int
		db.sql.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'groups_by_activity'`).Scan(&idx)
		if idx != 1 {
			t.Fatalf("v%d: groups_by_activity index lost in the migration", from)
		}
		if err := db.IntegrityCheck(ctx); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

// Schema 3: proposals with the state they left, who committed, the
// wire format, and a second membership after the installation left.
func TestMembershipsAndProposals(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 2, 20)
	before := v3Extras(s, 950)
	recs := s.recs
	db := mustOpen(t, filepath.Join(t.TempDir(), "v3.db"), newKey(t), &Options{BatchSize: 4})
	// Up to the proposals (the own commit is later).
	upTo := func(kind events.Kind, ordinal int) int {
		n := 0
		for i, r := range recs {
			if r.Event.Body.Kind() == kind && r.Event.Aggregate.ID == "67726f75702d30393530" {
				n++
				if n == ordinal {
					return i + 1
				}
			}
		}
		t.Fatalf("no %s #%d", kind, ordinal)
		return 0
	}
	i := upTo(events.KindApplicationMessageSent, 3)
	applyAll(t, db, recs[:i])
	g := gid(950)
	if st, err := db.GroupState(ctx, g); err != nil || string(st.Bytes()) != "state-2-p2" {
		t.Fatalf("state after the proposals %q, %v", st, err)
	}
	// The third message was sent after the second proposal's state; the
	// two before it are behind that state.
	if n, err := db.SentSinceState(ctx, g, 2); err != nil || n != 1 {
		t.Fatalf("messages sent since the snapshot: %d, %v; want 1", n, err)
	}
	ps, err := db.PendingProposals(ctx, g)
	if err != nil || len(ps) != 2 || !ps[0].Own || string(ps[1].Sender) != "peer-1" || ps[1].Type != 3 {
		t.Fatalf("pending proposals %+v, %v", ps, err)
	}
	if dup, err := db.HasProposalMessage(ctx, g, []byte("id-peer")); err != nil || !dup {
		t.Fatalf("proposal message not found: %v", err)
	}
	groups, _ := db.Groups(ctx)
	for _, gr := range groups {
		if bytes.Equal(gr.ID, g) && (gr.HandshakeWireFormat != 2 || gr.Membership != 1) {
			t.Fatalf("group %+v", gr)
		}
	}
	applyAll(t, db, recs[:before])
	if st, _ := db.GroupState(ctx, g); string(st.Bytes()) != "state-4" {
		t.Fatalf("state after the commits %q", st)
	}
	if n, err := db.SentSinceState(ctx, g, 4); err != nil || n != 0 {
		t.Fatalf("messages since epoch 4 began: %d, %v; want 0", n, err)
	}
	if ps, _ := db.PendingProposals(ctx, g); len(ps) != 0 {
		t.Fatalf("proposals outlive their epoch: %+v", ps)
	}
	ec, found, err := db.NewestOwnCommit(ctx, g, func([]byte) bool { return true })
	if err != nil || !found || ec.Epoch != 3 {
		t.Fatalf("newest own commit %+v %v %v", ec, found, err)
	}
	if member, _ := db.IsMember(ctx, g, []byte("inst-a")); member {
		t.Fatal("still a member after leaving")
	}
	applyAll(t, db, recs)
	ms, err := db.Memberships(ctx, g)
	if err != nil || len(ms) != 2 || ms[0].Left != "left" || ms[0].LeftEpoch != 4 || ms[1].Left != "" || ms[1].JoinedEpoch != 7 || ms[1].Membership != 2 {
		t.Fatalf("memberships %+v, %v", ms, err)
	}
	pm, err := db.PastMembers(ctx, g, 1)
	if err != nil || len(pm) != 2 || string(pm[1].Identity) != "inst-a" || !pm[1].Removed || pm[1].RemovedEpoch != 4 || pm[0].Removed {
		t.Fatalf("past members %+v, %v", pm, err)
	}
	pe, err := db.PastEpochs(ctx, g, 1)
	if err != nil || len(pe) != 3 || pe[0].Epoch != 2 || pe[2].Epoch != 4 || !pe[2].State.IsZero() {
		t.Fatalf("past epochs %+v, %v", pe, err)
	}
	if eps, _ := db.Epochs(ctx, g); len(eps) != 1 || eps[0].Epoch != 7 {
		t.Fatalf("current epochs %+v", eps)
	}
	if members, _ := db.Members(ctx, g); len(members) != 2 || members[1].Leaf != 2 {
		t.Fatalf("current members %+v", members)
	}
	if member, _ := db.IsMember(ctx, g, []byte("inst-a")); !member {
		t.Fatal("not a member after the second Welcome")
	}
	if removed, _ := db.MemberRemovedAt(ctx, g, []byte("inst-a"), 4); !removed {
		t.Fatal("the departure of the first membership is forgotten")
	}
	if applied, _ := db.CommitStartedEpoch(ctx, g, 3, []byte("commit-3")); !applied {
		t.Fatal("a commit of the first membership is forgotten")
	}
	if _, found, _ := db.NewestOwnCommit(ctx, g, func([]byte) bool { return true }); found {
		t.Fatal("the new membership has an own commit")
	}
	if st, _ := db.GroupState(ctx, g); string(st.Bytes()) != "state-7" {
		t.Fatalf("state after the second Welcome %q", st)
	}
	// One batch or many: the same content.
	one := build(t, filepath.Join(t.TempDir(), "one.db"), newKey(t), &Options{BatchSize: 10000}, recs)
	if d, err := CompareDB(ctx, db, one); d != nil || err != nil {
		t.Fatalf("batching changes the content: %v %v", d, err)
	}
}

// What schema 3 introduced is refused by an older read model, and a
// second join while still a member is refused by any.
func TestV3EventsRefused(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 1, 3)
	before := v3Extras(s, 950)
	recs := s.recs
	// An older schema keeps what it can of the proposals, the wire format
	// and the PSKs, and refuses the second membership.
	v2 := mustOpen(t, filepath.Join(t.TempDir(), "v2.db"), newKey(t), &Options{SchemaVersion: 2})
	err := v2.Apply(ctx, recs)
	var ae *ApplyError
	if !errors.Is(err, ErrCannotApply) || !errors.As(err, &ae) || ae.Kind != string(events.KindWelcomeProcessed) || ae.Seq != recs[before].Seq {
		t.Fatalf("v2 read model applying a second membership: %v", err)
	}
	ext := newStream("inst-a")
	buildSample(ext, 1, 3)
	externalJoins(ext, 951)
	pskEvents(ext)
	v1 := mustOpen(t, filepath.Join(t.TempDir(), "v1.db"), newKey(t), &Options{SchemaVersion: 1})
	if err := v1.Apply(ctx, ext.recs); !errors.Is(err, ErrCannotApply) || !errors.As(err, &ae) || ae.Kind != string(events.KindExternalJoined) {
		t.Fatalf("v1 read model applying an external join: %v", err)
	}
	v3 := mustOpen(t, filepath.Join(t.TempDir(), "v3.db"), newKey(t), nil)
	applyAll(t, v3, recs[:before-1]) // not the departure
	again := recs[before]
	again.Seq = recs[before-1].Seq
	again.Event.Position = recs[before-1].Event.Position
	if err := v3.Apply(ctx, []Record{again}); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("joining again while a member: %v", err)
	}
	created := events.Event{Aggregate: again.Event.Aggregate, Position: again.Event.Position, Time: again.Event.Time,
		Body: events.GroupCreated{GroupID: gid(950), Ciphersuite: 3, State: events.NewSecret([]byte("s"))}}
	if err := v3.Apply(ctx, []Record{{Seq: again.Seq, Event: created}}); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("creating a group that exists: %v", err)
	}
}
