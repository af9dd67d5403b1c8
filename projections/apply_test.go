package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

var ctx = context.Background()

func lastSeq(recs []Record) uint64 { return recs[len(recs)-1].Seq }

func TestApplyEveryKind(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 40)
	seen := map[events.Kind]bool{}
	for _, r := range sampleStreamV3(t, "inst-a") {
		seen[r.Event.Body.Kind()] = true
	}
	for _, k := range events.Kinds() {
		if !seen[k.Kind] {
			t.Errorf("sample stream lacks kind %s", k.Kind)
		}
		if _, ok := handlers[k.Kind]; !ok {
			t.Errorf("no handler for kind %s", k.Kind)
		}
	}
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
	applyAll(t, db, recs)

	cp, err := db.Checkpoint(ctx)
	if err != nil || cp != lastSeq(recs) {
		t.Fatalf("checkpoint %d (%v), want %d", cp, err, lastSeq(recs))
	}
	groups, err := db.Groups(ctx)
	if err != nil || len(groups) != 3 {
		t.Fatalf("groups: %d, %v", len(groups), err)
	}
	// Most recently active first (v2): the welcome group got the last message.
	if !bytes.Equal(groups[0].ID, gid(900)) || groups[0].JoinedVia != "welcome" || groups[0].Epoch != 4 {
		t.Fatalf("first group %+v", groups[0])
	}
	var g0 Group
	for _, g := range groups {
		if bytes.Equal(g.ID, gid(0)) {
			g0 = g
		}
	}
	if g0.Epoch != 6 || g0.Ciphersuite != 3 || g0.LastMessageAt.IsZero() {
		t.Fatalf("group 0: %+v", g0)
	}
	st, err := db.GroupState(ctx, gid(0))
	if err != nil || string(st.Bytes()) != "state-0-6" {
		t.Fatalf("group state %q, %v", st, err)
	}
	members, err := db.Members(ctx, gid(0))
	if err != nil || len(members) != 2 || string(members[0].Identity) != "inst-a" || string(members[1].Identity) != "peer-1" {
		t.Fatalf("members %+v, %v", members, err)
	}
	// Paging: 40 messages, newest first, pages of 15.
	var got []uint64
	page := Page{Limit: 15}
	for {
		mp, err := db.Messages(ctx, gid(0), page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mp.Messages {
			got = append(got, m.Ordinal)
		}
		if mp.Next == 0 {
			break
		}
		page.Before = mp.Next
	}
	if len(got) != 40 || got[0] != 40 || got[39] != 1 {
		t.Fatalf("paged ordinals %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]-1 {
			t.Fatalf("pages skip or repeat: %v", got)
		}
	}
	mp, _ := db.Messages(ctx, gid(0), Page{Limit: 1})
	m := mp.Messages[0]
	if string(m.Content.Bytes()) != "hello 39 in group 0" || m.Direction != "received" || m.Epoch != 6 || strings.Contains(fmt.Sprint(m), "hello") {
		t.Fatalf("newest message %v (content %q)", m, m.Content)
	}
	pend, err := db.PendingDeliveries(ctx, "inst-a", "welcome", 0, 10)
	if err != nil || len(pend) != 2 || pend[0].Seq != 3 || pend[1].Seq != 5 || string(pend[1].Payload) != "payload-5" {
		t.Fatalf("pending %+v, %v", pend, err)
	}
	if pend, _ := db.PendingDeliveries(ctx, "inst-a", "welcome", 3, 10); len(pend) != 1 || pend[0].Seq != 5 {
		t.Fatalf("pending after 3: %+v", pend)
	}
	kps, err := db.AvailableKeyPackages(ctx)
	if err != nil || len(kps) != 1 || !bytes.Equal(kps[0].Ref, kref(4)) || !kps[0].LastResort {
		t.Fatalf("available key packages %+v, %v", kps, err)
	}
}

func TestApplyTwiceIsNoop(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 20)
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), &Options{BatchSize: 7})
	applyAll(t, db, recs)
	d1, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, db, recs)
	applyAll(t, db, recs[:len(recs)/2])
	applyAll(t, db, recs[len(recs)-1:])
	d2, _ := db.Digest(ctx)
	if d := Compare(d1, d2); d != nil {
		t.Fatalf("re-applying changed the model: %v", d)
	}
	// Resuming from the middle equals applying all at once.
	db2 := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
	applyAll(t, db2, recs[:33])
	applyAll(t, db2, recs[20:])
	d3, _ := db2.Digest(ctx)
	if d := Compare(d1, d3); d != nil {
		t.Fatalf("resumed build differs: %v", d)
	}
}

func TestApplyBatchIsAtomic(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 20)
	// Replace a commit in the middle by one that jumps an epoch.
	bad := -1
	for i, r := range recs {
		if c, ok := r.Event.Body.(events.CommitApplied); ok && c.Epoch == 2 {
			c.Epoch = 3
			recs[i].Event.Body = c
			bad = i
			break
		}
	}
	if bad < 10 {
		t.Fatalf("no commit to corrupt in the middle (%d)", bad)
	}
	path := filepath.Join(t.TempDir(), "ro.db")
	db := mustOpen(t, path, newKey(t), &Options{BatchSize: 1000})
	empty, _ := db.Digest(ctx)
	err := db.Apply(ctx, recs)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Seq != recs[bad].Seq || !errors.Is(err, ErrCannotApply) {
		t.Fatalf("want ApplyError at seq %d wrapping ErrCannotApply, got %v", recs[bad].Seq, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", recs[bad].Seq)) {
		t.Fatalf("error does not name the sequence: %v", err)
	}
	assertNothingApplied(t, db, empty)
	// With smaller batches, the batches before the bad event commit and
	// the checkpoint stops right before the failing batch.
	db2 := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), &Options{BatchSize: 4})
	err = db2.Apply(ctx, recs)
	if !errors.As(err, &ae) || ae.Seq != recs[bad].Seq {
		t.Fatalf("small batches: %v", err)
	}
	cp, _ := db2.Checkpoint(ctx)
	if want := recs[(bad/4)*4-1].Seq; cp != want {
		t.Fatalf("checkpoint %d, want %d (end of the last good batch)", cp, want)
	}
	// The projector stays stopped at the bad event: retrying fails the same way.
	if err := db2.Apply(ctx, recs); !errors.As(err, &ae) || ae.Seq != recs[bad].Seq {
		t.Fatalf("retry: %v", err)
	}
}

type alienBody struct{}

func (alienBody) Kind() events.Kind     { return "alien.landed" }
func (alienBody) SchemaVersion() uint16 { return 1 }

func TestCannotApply(t *testing.T) {
	base := func() *streamBuilder {
		s := newStream("inst-a")
		s.installation()
		s.group(0, events.GroupCreated{GroupID: gid(0), Ciphersuite: 3, State: events.NewSecret([]byte("s0"))})
		s.delivery("c", events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: 1, Payload: []byte("p"), IdempotencyKey: "k1"})
		s.keyPackage(7, false)
		return s
	}
	cases := map[string]func(s *streamBuilder){
		"unknown kind":         func(s *streamBuilder) { s.add(events.AggInstallation, "", alienBody{}) },
		"commit to epoch N+2":  func(s *streamBuilder) { s.commit(0, 2, nil, nil) },
		"commit unknown group": func(s *streamBuilder) { s.commit(7, 1, nil, nil) },
		"ack never enqueued": func(s *streamBuilder) {
			s.delivery("c", events.DeliveryAcknowledged{Recipient: "inst-a", Channel: "c", UpTo: 2})
		},
		"ack unknown queue": func(s *streamBuilder) {
			s.delivery("d", events.DeliveryAcknowledged{Recipient: "inst-a", Channel: "d", UpTo: 1})
		},
		"enqueue gap": func(s *streamBuilder) {
			s.delivery("c", events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: 3})
		},
		"duplicate idempotency": func(s *streamBuilder) {
			s.delivery("c", events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: 2, IdempotencyKey: "k1"})
		},
		"expire unknown": func(s *streamBuilder) {
			s.delivery("c", events.DeliveryExpired{Recipient: "inst-a", Channel: "c", Sequence: 9})
		},
		"second installation":  func(s *streamBuilder) { s.installation() },
		"retire current epoch": func(s *streamBuilder) { s.group(0, events.EpochSecretsRetired{GroupID: gid(0), Epochs: []uint64{0}}) },
		"one-time key package rotated": func(s *streamBuilder) {
			s.kpEvent(7, events.KeyPackageConsumed{Ref: kref(7), GroupID: gid(0), ReplacedBy: kref(8)})
		},
		"commit retires its own epoch": func(s *streamBuilder) {
			r := s.commit(0, 1, nil, nil)
			c := r.Event.Body.(events.CommitApplied)
			c.RetiredEpochs = []uint64{1}
			s.recs[len(s.recs)-1].Event.Body = c
		},
		"publish unknown kp":   func(s *streamBuilder) { s.kpEvent(5, events.KeyPackagePublished{Ref: kref(5)}) },
		"remove non-member":    func(s *streamBuilder) { s.group(0, events.MemberRemoved{GroupID: gid(0), Leaf: 4}) },
		"message future epoch": func(s *streamBuilder) { s.message(0, 1, 1, true) },
		"position gap": func(s *streamBuilder) {
			r := s.group(0, events.ProposalStaged{GroupID: gid(0), ProposalRef: []byte("p")})
			s.recs[len(s.recs)-1].Event.Position = r.Event.Position + 1
		},
		"other installation": func(s *streamBuilder) {
			s.recs = append(s.recs, Record{Seq: s.seq + 1, Event: events.Event{
				Aggregate: events.Aggregate{Installation: "inst-b", Type: events.AggGroup, ID: "aa"}, Position: 1,
				Body: events.GroupCreated{GroupID: []byte{0xaa}}}})
			s.seq++
		},
	}
	for name, extend := range cases {
		t.Run(name, func(t *testing.T) {
			s := base()
			good := len(s.recs)
			extend(s)
			db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
			err := db.Apply(ctx, s.recs)
			var ae *ApplyError
			if !errors.As(err, &ae) || !errors.Is(err, ErrCannotApply) {
				t.Fatalf("want ApplyError wrapping ErrCannotApply, got %v", err)
			}
			if ae.Seq != s.recs[good].Seq {
				t.Fatalf("error names seq %d, want %d: %v", ae.Seq, s.recs[good].Seq, err)
			}
			if cp, _ := db.Checkpoint(ctx); cp != 0 {
				t.Fatalf("checkpoint moved to %d although the batch failed", cp)
			}
		})
	}
	t.Run("out of order", func(t *testing.T) {
		s := base()
		recs := append([]Record{}, s.recs...)
		recs[1], recs[2] = recs[2], recs[1]
		db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
		if err := db.Apply(ctx, recs); !errors.Is(err, ErrCannotApply) {
			t.Fatalf("out of order records applied: %v", err)
		}
	})
}

func TestRetention(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 40) // group 0 ends at epoch 6
	// The stream retires epoch e-4 at each commit to epoch e > 3 (a window
	// of 3 past epochs, the writer's): the read model retires exactly
	// those, so epochs 0-2 lose their secrets and 3-6 keep them.
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
	applyAll(t, db, recs)
	eps, err := db.Epochs(ctx, gid(0))
	if err != nil || len(eps) != 7 {
		t.Fatalf("epochs %d, %v", len(eps), err)
	}
	for _, e := range eps {
		if e.Retired != (e.State.IsZero()) {
			t.Fatalf("epoch %d: retired=%v with state %v", e.Epoch, e.Retired, !e.State.IsZero())
		}
		if want := e.Epoch < 3; e.Retired != want {
			t.Errorf("epoch %d retired %v, want %v (only the listed epochs)", e.Epoch, e.Retired, want)
		}
	}
	// Key packages: the private keys of at most two last-resort packages
	// remain (current and previous); the consumed one-time package has none.
	rows, err := db.sql.Query(`SELECT ref, state, init_private_key IS NOT NULL, encryption_private_key IS NOT NULL FROM key_packages ORDER BY ref`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := map[string][2]any{"kp-0001": {"rotated", false}, "kp-0002": {"consumed", false}, "kp-0003": {"rotated", true}, "kp-0004": {"generated", true}}
	n := 0
	for rows.Next() {
		var ref, state string
		var hasInit, hasEnc bool
		rows.Scan(&ref, &state, &hasInit, &hasEnc)
		w := want[ref]
		if state != w[0] || hasInit != w[1] || hasEnc != w[1] {
			t.Errorf("key package %s: state %s private %v/%v, want %v", ref, state, hasInit, hasEnc, w)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("%d key packages", n)
	}
}

func TestDeliveryQueue(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(24 * time.Hour)
	for i := uint64(1); i <= 4; i++ {
		exp := future
		if i == 2 {
			exp = past
		}
		s.delivery("c", events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: i, Payload: []byte{byte(i)}, ExpiresAt: exp, IdempotencyKey: fmt.Sprint("k", i)})
	}
	s.delivery("c", events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: 5, Payload: []byte{5}})
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil)
	applyAll(t, db, s.recs)
	seqs := func(after uint64, limit int) []uint64 {
		t.Helper()
		ds, err := db.PendingDeliveries(ctx, "inst-a", "c", after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, d := range ds {
			out = append(out, d.Seq)
		}
		return out
	}
	// Seq 2 is past its expiry: not delivered although no expiry event yet.
	if got := fmt.Sprint(seqs(0, 10)); got != "[1 3 4 5]" {
		t.Fatalf("pending %s", got)
	}
	if got := fmt.Sprint(seqs(1, 2)); got != "[3 4]" {
		t.Fatalf("pending after 1, limit 2: %s", got)
	}
	s.delivery("c", events.DeliveryExpired{Recipient: "inst-a", Channel: "c", Sequence: 2, ExpiresAt: past})
	s.delivery("c", events.DeliveryAcknowledged{Recipient: "inst-a", Channel: "c", UpTo: 3})
	s.delivery("c", events.DeliveryAcknowledged{Recipient: "inst-a", Channel: "c", UpTo: 1}) // older ack: no-op
	applyAll(t, db, s.recs)
	if got := fmt.Sprint(seqs(0, 10)); got != "[4 5]" {
		t.Fatalf("pending after ack 3: %s", got)
	}
	var states string
	if err := db.sql.QueryRow(`SELECT group_concat(seq || ':' || state || ':' || (payload IS NULL), ',') FROM (SELECT * FROM deliveries ORDER BY seq)`).Scan(&states); err != nil {
		t.Fatal(err)
	}
	if states != "1:acked:1,2:expired:1,3:acked:1,4:pending:0,5:pending:0" {
		t.Fatalf("delivery rows %s", states)
	}
}

// The applier keeps some rows of a batch in memory until the batch ends
// (groups' newest state, new epochs, the retention window, queue heads):
// the content must not depend on where batches start and end.
func TestBatchBoundariesDoNotChangeContent(t *testing.T) {
	recs := sampleStream(t, "inst-a", 3, 300)
	var want Digest
	for i, size := range []int{1, 7, 512} {
		db := mustOpen(t, filepath.Join(t.TempDir(), "b.db"), newKey(t), &Options{BatchSize: size})
		applyAll(t, db, recs)
		d, err := db.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = d
			continue
		}
		if diff := Compare(want, d); diff != nil {
			t.Fatalf("batch size %d gives other content than batch size 1: %v", size, diff)
		}
	}
}

// A message in an epoch retired earlier in the same batch is refused, as it
// is when the retirement was committed in an earlier batch.
func TestMessageInEpochRetiredWithinBatch(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 40) // group 0 ends at epoch 6, epochs below 3 retired
	var agg events.Aggregate
	var pos uint64
	for _, r := range recs {
		if b, ok := r.Event.Body.(events.ApplicationMessageReceived); ok && string(b.GroupID) == string(gid(0)) {
			agg = r.Event.Aggregate
		}
	}
	for _, r := range recs {
		if r.Event.Aggregate == agg {
			pos = r.Event.Position
		}
	}
	late := Record{Seq: lastSeq(recs) + 1, Event: events.Event{Aggregate: agg, Position: pos + 1, Time: recs[len(recs)-1].Event.Time,
		Body: events.ApplicationMessageReceived{GroupID: gid(0), Epoch: 1, SenderLeaf: 1, Sender: "peer-1", MessageID: []byte("late"), Content: events.NewSecret([]byte("late"))}}}
	for _, size := range []int{1, 512} {
		db := mustOpen(t, filepath.Join(t.TempDir(), "late.db"), newKey(t), &Options{BatchSize: size})
		err := db.Apply(ctx, append(slices.Clone(recs), late))
		var ae *ApplyError
		if !errors.Is(err, ErrCannotApply) || !errors.As(err, &ae) || ae.Seq != late.Seq {
			t.Fatalf("batch size %d: message in a retired epoch: %v, want ErrCannotApply at seq %d", size, err, late.Seq)
		}
	}
}

// TestStatementsKeptAcrossBatches: with memory security OFF the writer
// keeps its statements prepared across transactions (and Apply calls);
// the result is the same read model as preparing them per transaction,
// and a failed batch does not poison the kept statements.
func TestStatementsKeptAcrossBatches(t *testing.T) {
	recs := sampleStream(t, "inst-a", 3, 60)
	perTx := build(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), &Options{BatchSize: 7}, recs)
	want, err := perTx.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := SetMemorySecurity(false); err != nil {
		t.Fatal(err)
	}
	defer SetMemorySecurity(true)
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), &Options{BatchSize: 7})
	half := len(recs) / 2
	if err := db.Apply(ctx, recs[:half]); err != nil {
		t.Fatal(err)
	}
	if len(db.stmts) == 0 {
		t.Fatal("no statement kept after the first batches")
	}
	// A batch that fails half-way rolls back; the kept statements still work.
	bad := append([]Record(nil), recs[half:half+3]...)
	bad[2].Event.Position += 5
	if err := db.Apply(ctx, bad); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("gap in positions: %v", err)
	}
	if err := db.Apply(ctx, recs[half:]); err != nil {
		t.Fatal(err)
	}
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("kept statements built another read model: %v", d)
	}
}

// TestApplyCancelled: a cancelled context stops Apply between events and
// rolls the current batch back; nothing half-applied stays.
func TestApplyCancelled(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 20)
	db := mustOpen(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), &Options{BatchSize: 1000})
	empty, _ := db.Digest(ctx)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.Apply(cctx, recs); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply under a cancelled context: %v", err)
	}
	assertNothingApplied(t, db, empty)
	if err := db.Apply(ctx, recs); err != nil {
		t.Fatalf("Apply after a cancelled one: %v", err)
	}
}

// TestApplyCancelledMidBatchReturnsContextError: a context cancelled while
// a batch is being applied rolls the batch back and Apply returns the
// context's error (the CLI's exit 130), not an event that "could not be
// applied". The batch's transaction must not be begun under the
// cancellable context: database/sql would roll it back on its own the
// moment the context ends, and the next statement would fail with
// sql.ErrTxDone, reported against whatever event it belonged to.
func TestApplyCancelledMidBatchReturnsContextError(t *testing.T) {
	recs := mlsSizedStream(t, "inst-a", 4, 300)
	dir := t.TempDir()
	bad := 0
	var example error
	for i := 0; i < 30 && bad == 0; i++ {
		db := mustOpen(t, filepath.Join(dir, "c"+string(rune('a'+i))+".db"), newKey(t), &Options{BatchSize: 100000})
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(time.Duration(2+i%10)*time.Millisecond, cancel)
		err := db.Apply(cctx, recs)
		cancel()
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			bad++
			example = err
		}
	}
	if bad > 0 {
		t.Fatalf("Apply cancelled mid-batch returned an error that is not the context's (exit 1 instead of 130 in the CLI): %v", example)
	}
}

// assertNothingApplied checks that db still has the content of the empty
// digest and its checkpoint has not moved.
func assertNothingApplied(t *testing.T, db *DB, empty Digest) {
	t.Helper()
	after, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(empty, after); d != nil {
		t.Fatalf("rows of a failed or cancelled batch stayed: %v", d)
	}
	if cp, _ := db.Checkpoint(ctx); cp != 0 {
		t.Fatalf("checkpoint moved to %d", cp)
	}
}

// The one-event forms of transitions that used to be atomic batches
// project into the same rows as the batches did, applied one event per
// transaction or many: a commit that lists its retirements
// (group.commit_applied v3) as a commit and a group.epoch_secrets_retired,
// a join that lists its members (v2 of group.created,
// group.welcome_processed, group.external_joined) as a join and its
// group.member_added events, a key package generated as published
// (keypackage.generated v2) as keypackage.generated and
// keypackage.published, a successor group created with its first commit
// (group.created v3) as group.created and group.commit_applied. Only the
// stream's positions differ.
func TestOneEventFormsEqualTheirBatches(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 2, 40)
	// A successor group (ReInit, branch): its creation and its first,
	// own commit adding a member, then a message in the new epoch.
	created := s.group(7, events.GroupCreated{GroupID: gid(7), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("state-7-0")),
		Members: []events.Member{{Leaf: 0, Identity: []byte("inst-a")}}})
	first := s.commit(7, 1, []events.Member{{Leaf: 1, Identity: []byte("peer-1")}}, nil)
	c := first.Event.Body.(events.CommitApplied)
	c.Committer = &events.Committer{Leaf: 0, Identity: []byte("inst-a"), Own: true}
	c.OwnOutput = &events.OwnOutput{Welcome: []byte("welcome-7-1")}
	s.recs[len(s.recs)-1].Event.Body = c
	s.recs[len(s.recs)-1].Event.Time = created.Event.Time
	s.message(7, 1, 1, true)
	recs := s.recs
	// The events of one batch carry one time, as the engine records them
	// (the sample's times step by a second per event).
	for i := 1; i < len(recs); i++ {
		if _, ok := recs[i].Event.Body.(events.KeyPackagePublished); ok && recs[i].Event.Aggregate == recs[i-1].Event.Aggregate {
			recs[i].Event.Time = recs[i-1].Event.Time
		}
		if _, ok := recs[i].Event.Body.(events.KeyPackageRotated); ok {
			if j := lastOn(recs[:i], recs[i].Event.Aggregate); j >= 0 {
				recs[i].Event.Time = recs[j].Event.Time
			}
		}
	}
	folded, n := foldTransitions(recs)
	for _, k := range []events.Kind{events.KindEpochSecretsRetired, events.KindMemberAdded, events.KindKeyPackagePublished, events.KindKeyPackageRotated, events.KindCommitApplied} {
		if n[k] == 0 {
			t.Fatalf("the sample stream has no %s to fold", k)
		}
	}
	content := func(db *DB) Digest {
		d, err := db.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d.Tables = slices.DeleteFunc(d.Tables, func(td TableDigest) bool {
			return td.Name == "checkpoint" || td.Name == "aggregate_positions"
		})
		return d
	}
	batches := mustOpen(t, filepath.Join(t.TempDir(), "batches.db"), newKey(t), nil)
	applyAll(t, batches, recs)
	for _, batch := range []int{1, 64} {
		one := mustOpen(t, filepath.Join(t.TempDir(), "one.db"), newKey(t), &Options{BatchSize: batch})
		applyAll(t, one, folded)
		if d := Compare(content(batches), content(one)); d != nil {
			t.Fatalf("batch %d: the one-event forms differ from the batches: %v", batch, d)
		}
		held, err := one.HeldEpochs(ctx, gid(0))
		if err != nil {
			t.Fatal(err)
		}
		if len(held) == 0 || held[0] == 0 {
			t.Fatalf("batch %d: held epochs %v: the folded retirements were not applied", batch, held)
		}
	}
}

// foldTransitions returns recs with the events that followed another in
// one batch moved into it, as the current versions record them (see
// TestOneEventFormsEqualTheirBatches), positions and sequences
// renumbered, and how many of each kind were folded.
func foldTransitions(recs []Record) ([]Record, map[events.Kind]int) {
	var out []Record
	folded := map[events.Kind]int{}
	fold := func(r Record) bool {
		if len(out) == 0 || out[len(out)-1].Event.Aggregate != r.Event.Aggregate {
			return false
		}
		prev := &out[len(out)-1]
		switch b := r.Event.Body.(type) {
		case events.CommitApplied:
			if j, ok := prev.Event.Body.(events.GroupCreated); ok && j.FirstCommit == nil && b.Epoch == j.Epoch+1 {
				j.FirstCommit = &b
				prev.Event.Body = j
				return true
			}
		case events.EpochSecretsRetired:
			if c, ok := prev.Event.Body.(events.CommitApplied); ok {
				c.RetiredEpochs = append(slices.Clone(c.RetiredEpochs), b.Epochs...)
				prev.Event.Body = c
				return true
			}
		case events.MemberAdded:
			m := events.Member{Leaf: b.Leaf, Identity: b.Identity}
			switch j := prev.Event.Body.(type) {
			case events.GroupCreated:
				j.Members = append(slices.Clone(j.Members), m)
				prev.Event.Body = j
				return true
			case events.WelcomeProcessed:
				j.Members = append(slices.Clone(j.Members), m)
				prev.Event.Body = j
				return true
			case events.ExternalJoined:
				j.Members = append(slices.Clone(j.Members), m)
				prev.Event.Body = j
				return true
			}
		case events.KeyPackagePublished:
			if g, ok := prev.Event.Body.(events.KeyPackageGenerated); ok && !g.Published {
				g.Published, g.Destination = true, b.Destination
				prev.Event.Body = g
				return true
			}
		}
		return false
	}
	// A rotation went with the consumption before it on its aggregate
	// (the replacement's generation may lie between them).
	foldRotation := func(r Record) bool {
		b, ok := r.Event.Body.(events.KeyPackageRotated)
		if !ok {
			return false
		}
		j := lastOn(out, r.Event.Aggregate)
		if j < 0 {
			return false
		}
		c, ok := out[j].Event.Body.(events.KeyPackageConsumed)
		if !ok || !c.LastResort || c.ReplacedBy != nil {
			return false
		}
		c.ReplacedBy = b.ReplacedBy
		out[j].Event.Body = c
		return true
	}
	for _, r := range recs {
		if fold(r) || foldRotation(r) {
			folded[r.Event.Body.Kind()]++
			continue
		}
		out = append(out, r)
	}
	pos := map[events.Aggregate]uint64{}
	for i := range out {
		out[i].Seq = uint64(i + 1)
		pos[out[i].Event.Aggregate]++
		out[i].Event.Position = pos[out[i].Event.Aggregate]
	}
	return out, folded
}

// lastOn returns the index of the last of recs on aggregate agg, or -1.
func lastOn(recs []Record, agg events.Aggregate) int {
	for j := len(recs) - 1; j >= 0; j-- {
		if recs[j].Event.Aggregate == agg {
			return j
		}
	}
	return -1
}

// ApplyIf commits only when its guard, called after the records are
// written, returns nil: a refusal leaves the read model as it was and
// returns the guard's error; a later ApplyIf (or Apply) of the same
// records applies them.
func TestApplyIfCommitsOnlyWhenGuarded(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 10)
	db := mustOpen(t, filepath.Join(t.TempDir(), "if.db"), newKey(t), &Options{BatchSize: 4})
	head, tail := recs[:len(recs)/2], recs[len(recs)/2:]
	applyAll(t, db, head)
	before, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("not proven")
	called := 0
	err = db.ApplyIf(ctx, tail, func(from uint64) error {
		called++
		if want := head[len(head)-1].Seq; from != want {
			t.Errorf("guard told the transaction started from checkpoint %d, want %d", from, want)
		}
		return refused
	})
	if !errors.Is(err, refused) || called != 1 {
		t.Fatalf("ApplyIf refused by its guard: %v (guard called %d times), want the guard's error once", err, called)
	}
	if after, _ := db.Digest(ctx); Compare(before, after) != nil {
		t.Fatalf("a refused ApplyIf changed the read model: %v", Compare(before, after))
	}
	if cp, _ := db.Checkpoint(ctx); cp != head[len(head)-1].Seq {
		t.Fatalf("checkpoint %d after a refused ApplyIf, want %d", cp, head[len(head)-1].Seq)
	}
	// One transaction whatever BatchSize: the guard is asked once.
	called = 0
	if err := db.ApplyIf(ctx, tail, func(uint64) error { called++; return nil }); err != nil || called != 1 {
		t.Fatalf("ApplyIf: %v, guard called %d times", err, called)
	}
	whole := mustOpen(t, filepath.Join(t.TempDir(), "whole.db"), newKey(t), nil)
	applyAll(t, whole, recs)
	want, _ := whole.Digest(ctx)
	if got, _ := db.Digest(ctx); Compare(want, got) != nil {
		t.Fatalf("ApplyIf of the tail differs from applying everything: %v", Compare(want, got))
	}
}
