package replay

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// historyGen appends a realistic history for one installation: identity,
// key packages, groups with members, messages sent and received, delivery
// queues filled and acknowledged. It continues where it stopped, so tests
// can keep appending while a replay runs.
type historyGen struct {
	inst   events.InstallationID
	pos    map[events.Aggregate]uint64
	t      time.Time
	msgs   int
	queued uint64
	events int // appended so far
	ts     []eventlog.Transition
	// pad, when above zero, is the size of every message's content
	// (a delivery's payload), for histories of large events.
	pad int
}

func newHistoryGen(inst events.InstallationID) *historyGen {
	return &historyGen{inst: inst, pos: map[events.Aggregate]uint64{}, t: baseTime}
}

// add queues one transition of bodies on one aggregate.
func (h *historyGen) add(typ events.AggregateType, id string, bodies ...events.Body) {
	agg := events.Aggregate{Installation: h.inst, Type: typ, ID: id}
	tr := eventlog.Transition{Expected: h.pos[agg]}
	for _, b := range bodies {
		h.pos[agg]++
		h.t = h.t.Add(time.Millisecond)
		tr.Events = append(tr.Events, events.Event{Aggregate: agg, Position: h.pos[agg], Time: h.t, Body: b})
	}
	h.ts = append(h.ts, tr)
}

func genGroupID(g int) []byte { return []byte(fmt.Sprintf("group-%04d", g)) }

// setup queues the installation, two key packages and groups groups with
// one peer each.
func (h *historyGen) setup(groups int) {
	h.add(events.AggInstallation, "", events.InstallationCreated{
		Installation: h.inst, Ciphersuite: 3, SignaturePublicKey: []byte("sigpub-" + h.inst),
		SignaturePrivateKey: events.NewSecret([]byte("sigpriv-" + h.inst)), Credential: []byte("cred-" + h.inst),
	})
	for i := range 2 {
		ref := []byte(fmt.Sprintf("kp-%d", i))
		h.add(events.AggKeyPackage, hex.EncodeToString(ref),
			events.KeyPackageGenerated{Ref: ref, Ciphersuite: 3, KeyPackage: []byte("kp-bytes"),
				InitPrivateKey: events.NewSecret([]byte("init")), EncryptionPrivateKey: events.NewSecret([]byte("enc")), LastResort: i == 1},
			events.KeyPackagePublished{Ref: ref, Destination: "directory"})
	}
	for g := range groups {
		id := hex.EncodeToString(genGroupID(g))
		h.add(events.AggGroup, id, events.GroupCreated{GroupID: genGroupID(g), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("state-0"))})
		peer := events.Member{Leaf: 1, Identity: []byte("peer")}
		h.add(events.AggGroup, id,
			events.CommitApplied{GroupID: genGroupID(g), Epoch: 1, EpochAuthenticator: []byte("auth-1"),
				ConfirmedTranscriptHash: []byte("cth-1"), Commit: []byte("commit-1"), State: events.NewSecret([]byte("state-1")),
				Added: []events.Member{peer}},
			events.MemberAdded{GroupID: genGroupID(g), Epoch: 1, Leaf: 1, Identity: []byte("peer")})
	}
}

// messages queues n messages over groups groups (one event per
// transition), alternating sent, received and delivered ones.
func (h *historyGen) messages(n, groups int) {
	for range n {
		i := h.msgs
		h.msgs++
		g := i % groups
		id := hex.EncodeToString(genGroupID(g))
		mid := []byte(fmt.Sprintf("m-%d", i))
		content := []byte(fmt.Sprintf("message %d", i))
		if h.pad > len(content) {
			content = append(content, make([]byte, h.pad-len(content))...)
		}
		switch i % 3 {
		case 0:
			h.add(events.AggGroup, id, events.ApplicationMessageSent{GroupID: genGroupID(g), Epoch: 1, Sender: h.inst, MessageID: mid, Content: events.NewSecret(content)})
		case 1:
			h.add(events.AggGroup, id, events.ApplicationMessageReceived{GroupID: genGroupID(g), Epoch: 1, SenderLeaf: 1, Sender: "peer", MessageID: mid, Content: events.NewSecret(content)})
		default:
			h.queued++
			h.add(events.AggDelivery, "inbox", events.DeliveryEnqueued{Recipient: h.inst, Channel: "inbox", Sequence: h.queued,
				Payload: content, ExpiresAt: h.t.Add(time.Hour), IdempotencyKey: fmt.Sprintf("idem-%d", i)})
			if h.queued%10 == 0 {
				h.add(events.AggDelivery, "inbox", events.DeliveryAcknowledged{Recipient: h.inst, Channel: "inbox", UpTo: h.queued})
			}
		}
	}
}

// flush appends the queued transitions and returns how many events.
func (h *historyGen) flush(ctx context.Context, l *eventlog.Log) (int, error) {
	n := 0
	for _, tr := range h.ts {
		n += len(tr.Events)
	}
	if !l.AtomicBatches() {
		var single []eventlog.Transition
		for _, tr := range h.ts {
			for i, e := range tr.Events {
				single = append(single, eventlog.Transition{Expected: tr.Expected + uint64(i), Events: []events.Event{e}})
			}
		}
		h.ts = single
	}
	_, err := l.AppendBulk(ctx, h.ts)
	h.ts = h.ts[:0]
	if err == nil {
		h.events += n
	}
	return n, err
}

// writeHistory appends a history of the given size for inst.
func writeHistory(t testing.TB, l *eventlog.Log, inst events.InstallationID, groups, messages int) *historyGen {
	t.Helper()
	h := newHistoryGen(inst)
	h.setup(groups)
	h.messages(messages, groups)
	if _, err := h.flush(context.Background(), l); err != nil {
		t.Fatalf("append history of %s: %v", inst, err)
	}
	return h
}

// fastArgon2 keeps passphrase tests quick; the parameters are stored in
// the salt sidecar, so every open uses them.
var fastArgon2 = projections.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func passKey(t testing.TB, s string) projections.Key {
	t.Helper()
	k, err := projections.PassphraseKey([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testReplayOptions skips the MLS re-derivation: the generated histories
// carry placeholder MLS states (engine's tests replay real ones).
func testReplayOptions() *Options {
	return &Options{BatchSize: 64, DB: projections.Options{Argon2: fastArgon2}, SkipMLSCheck: true}
}

// openDB opens an existing read model at whatever schema it has.
func openDB(t testing.TB, path string, key projections.Key) *projections.DB {
	t.Helper()
	db, err := openAsIs(path, key, projections.Options{Argon2: fastArgon2})
	if err != nil {
		t.Fatalf("open %s: %v", filepath.Base(path), err)
	}
	return db
}

// digestOf opens, digests and closes a read model.
func digestOf(t testing.TB, path string, key projections.Key) (projections.Digest, uint64) {
	t.Helper()
	db := openDB(t, path, key)
	defer db.Close()
	d, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := db.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d, cp
}

// projectUntil runs Project on inst's read model db until it has applied
// up to stream sequence last, then stops it; it returns the number of
// events of each committed batch, in order. It fails t if Project stops
// first or a minute passes.
func projectUntil(t testing.TB, l *eventlog.Log, inst events.InstallationID, db *projections.DB, last uint64) []int {
	t.Helper()
	return projectUntilWith(t, l, inst, db, last, nil)
}

// projectUntilWith is projectUntil that also calls onApply, when not nil,
// after each committed batch, before Project goes on.
func projectUntilWith(t testing.TB, l *eventlog.Log, inst events.InstallationID, db *projections.DB, last uint64, onApply func()) []int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var batches []int
	reached := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Project(ctx, l, []Projection{{Installation: inst, DB: db}}, &ProjectOptions{
			OnApply: func(_ events.InstallationID, n int, cp uint64) {
				mu.Lock()
				defer mu.Unlock()
				batches = append(batches, n)
				if onApply != nil {
					onApply()
				}
				if cp == last {
					close(reached)
				}
			}})
	}()
	select {
	case <-reached:
	case err := <-done:
		t.Fatalf("Project stopped before seq %d: %v", last, err)
	case <-time.After(60 * time.Second):
		t.Fatalf("Project did not reach seq %d in a minute", last)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	return batches
}
