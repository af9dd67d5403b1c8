package eventlog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// rawEnvelope is one stored message, kept to try keys against after an
// erase.
type rawEnvelope struct {
	seq     uint64
	subject string
	data    []byte
}

// writeMixed appends events of every data key class for inst: identity,
// a group with a commit, messages over two days, a delivery queue.
func writeMixed(t testing.TB, l *Log, inst events.InstallationID) int {
	t.Helper()
	ia := events.Aggregate{Installation: inst, Type: events.AggInstallation}
	mustAppend(t, l, 0, events.Event{Aggregate: ia, Time: baseTime, Body: events.InstallationCreated{
		Installation: inst, Ciphersuite: 3, SignaturePublicKey: []byte("pub"), SignaturePrivateKey: events.NewSecret([]byte("priv")), Credential: []byte("c")}})
	g := group(inst, "g1")
	mustAppend(t, l, 0, events.Event{Aggregate: g, Time: baseTime, Body: events.GroupCreated{GroupID: []byte("g1"), Ciphersuite: 3, State: events.NewSecret([]byte("s0"))}},
		events.Event{Aggregate: g, Time: baseTime, Body: events.CommitApplied{GroupID: []byte("g1"), Epoch: 1, EpochAuthenticator: []byte("a"),
			ConfirmedTranscriptHash: []byte("h"), Commit: []byte("c"), State: events.NewSecret([]byte("s1"))}})
	for i := uint64(3); i <= 6; i++ {
		e := msg(g, i, "secret text")
		e.Time = baseTime.Add(time.Duration(i) * 12 * time.Hour) // two days
		mustAppend(t, l, i-1, e)
	}
	q := events.Aggregate{Installation: inst, Type: events.AggDelivery, ID: "inbox"}
	mustAppend(t, l, 0, events.Event{Aggregate: q, Time: baseTime, Body: events.DeliveryEnqueued{Recipient: inst, Channel: "inbox", Sequence: 1,
		Payload: []byte("payload"), ExpiresAt: baseTime.Add(time.Hour), IdempotencyKey: "k1"}})
	return 1 + 2 + 4 + 1
}

// rawOf returns every stored message of inst.
func rawOf(t testing.TB, l *Log, inst events.InstallationID) []rawEnvelope {
	t.Helper()
	var out []rawEnvelope
	for _, r := range readAll(t, l, inst, 0) {
		m := rawGet(t, l, r.Seq)
		out = append(out, rawEnvelope{seq: r.Seq, subject: m.Subject, data: m.Data})
	}
	return out
}

// bucketKeys returns the names and values in the key bucket.
func bucketKeys(t testing.TB, l *Log) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		e, err := l.kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		out[k] = e.Value()
	}
	return out
}

// TestEraseOpensNothing erases an installation, then tries every key
// material the engine, the keyring and the bus still hold against every
// event of it captured before: none opens. The other installation reads
// back unchanged; reads, appends and a second erase behave.
func TestEraseOpensNothing(t *testing.T) {
	srv := natstestStart(t)
	ring := keyring(t, 1, 0x11)
	if err := ring.Rotate(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, testConfig(srv), ring)
	ctx := context.Background()
	nA := writeMixed(t, l, instA)
	if err := ring.Rotate(3, rootKey(t, 0x33)); err != nil { // later keys wrapped under another root
		t.Fatal(err)
	}
	writeMixed(t, l, instB)
	captured := rawOf(t, l, instA)
	if len(captured) != nA {
		t.Fatalf("captured %d events of %s, want %d", len(captured), instA, nA)
	}
	beforeB := readAll(t, l, instB, 0)
	keysBefore := bucketKeys(t, l)

	res, err := l.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatalf("erase: %v", err)
	}
	if res.Resumed || res.EventsPurged != uint64(nA) || res.KeysPurged == 0 || res.Tombstone.By != "test" || res.Tombstone.LastSeq != captured[len(captured)-1].seq {
		t.Fatalf("erase result %+v", res)
	}
	pa := l.instPseudonym(instA)
	keysAfter := bucketKeys(t, l)
	for name := range keysAfter {
		if strings.HasPrefix(name, pa+".") {
			t.Fatalf("key %s of the erased installation is still in the bucket", name)
		}
	}
	if len(keysBefore)-len(keysAfter) != int(res.KeysPurged) {
		t.Fatalf("bucket had %d keys, has %d, erase says it purged %d", len(keysBefore), len(keysAfter), res.KeysPurged)
	}
	for _, c := range captured {
		if _, err := l.stream.GetMsg(ctx, c.seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("event at seq %d still on the stream: %v", c.seq, err)
		}
	}

	// Every key material against every captured event.
	tryAll := func(what string, open func(rawEnvelope) error) {
		t.Helper()
		for _, c := range captured {
			if err := open(c); err == nil {
				t.Fatalf("%s opened the erased installation's event at seq %d", what, c.seq)
			}
		}
	}
	rings, dks := rootKeyMaterials(t, ring)
	for _, r := range rings {
		tryAll("a root key (as a ring), or the whole ring", func(c rawEnvelope) error {
			_, err := events.Open(r, instA, l.binding(c.subject), c.data)
			return err
		})
	}
	for name, w := range keysAfter {
		// Each remaining wrap, unwrapped as what it is (another
		// installation's key) and tried on the erased events.
		parts := strings.SplitN(name, ".", 3)
		var owner events.InstallationID
		for _, inst := range []events.InstallationID{instA, instB} {
			if l.instPseudonym(inst) == parts[0] {
				owner = inst
			}
		}
		var id events.DataKeyID
		for c := events.ClassState; c <= events.ClassEpoch; c++ {
			if c.String() == parts[1] {
				id.Class = c
			}
		}
		if owner == "" || id.Class == 0 {
			t.Fatalf("bucket key %s names no known installation or class", name)
		}
		var found bool
		for _, c := range captured {
			cid, _, _ := events.EnvelopeDataKeyID(c.data)
			if cid.Token() == parts[2] {
				found = true
			}
		}
		if found {
			t.Fatalf("bucket key %s names a period of the erased installation", name)
		}
		for _, c := range captured {
			cid, _, _ := events.EnvelopeDataKeyID(c.data)
			// Unwrapping under the erased installation's names fails...
			if _, err := ring.UnwrapDataKey(l.cfg.Stream, instA, cid, w); err == nil {
				t.Fatalf("wrap %s unwrapped as a key of the erased installation", name)
			}
		}
		// ...and under its own name it gives a key that opens nothing erased.
		if owner == instB {
			for _, r := range beforeB {
				m := rawGet(t, l, r.Seq)
				cid, _, _ := events.EnvelopeDataKeyID(m.Data)
				if cid.Name(parts[0]) == name {
					dk, err := ring.UnwrapDataKey(l.cfg.Stream, instB, cid, w)
					if err != nil {
						t.Fatalf("unwrap %s: %v", name, err)
					}
					dks = append(dks, withEpochKeys(t, dk, cid)...)
					break
				}
			}
		}
	}
	l.dkCache.mu.Lock()
	for e := l.dkCache.ll.Front(); e != nil; e = e.Next() {
		ent := e.Value.(*dkEntry)
		if ent.key.inst == instA {
			t.Errorf("the Log's cache still holds data key %s of the erased installation", ent.key.id)
		}
		dks = append(dks, ent.dk.Clone())
	}
	l.dkCache.mu.Unlock()
	if len(dks) < len(ring.IDs())+2 {
		t.Fatalf("only %d key materials to try", len(dks))
	}
	for _, dk := range dks {
		tryAll("a data key", func(c rawEnvelope) error {
			_, err := events.OpenData(dk, instA, l.binding(c.subject), c.data)
			return err
		})
	}
	fresh := openLog(t, testConfig(srv), ring)
	for _, lg := range []*Log{l, fresh} {
		tryAll("the Log", func(c rawEnvelope) error {
			_, err := lg.OpenEnvelope(ctx, instA, c.subject, c.data)
			if err != nil && !errors.Is(err, ErrErased) {
				t.Fatalf("the Log opening an erased event: %v, want ErrErased", err)
			}
			return err
		})
		// Reads, appends and rebuilds of it name the erase.
		if _, err := lg.LastSeq(ctx, instA); !errors.Is(err, ErrErased) {
			t.Fatalf("LastSeq of the erased installation: %v", err)
		}
		var ee *ErasedError
		if _, err := tryReadAll(lg, instA, 0); !errors.As(err, &ee) || !ee.ErasedAt.Equal(res.Tombstone.ErasedAt) || !strings.Contains(err.Error(), "erased at") {
			t.Fatalf("read of the erased installation: %v", err)
		}
		if _, err := lg.Append(ctx, 0, msg(group(instA, "new"), 1, "after")); !errors.Is(err, ErrErased) {
			t.Fatalf("append to the erased installation: %v, want ErrErased", err)
		}
		// The other installation is untouched.
		afterB := readAll(t, lg, instB, 0)
		if len(afterB) != len(beforeB) {
			t.Fatalf("%s: %d events after the erase, %d before", instB, len(afterB), len(beforeB))
		}
		for i := range afterB {
			sameEvent(t, afterB[i].Event, beforeB[i].Event)
		}
	}
	mustAppend(t, l, 6, msg(group(instB, "g1"), 7, "still writable"))

	again, err := l.Erase(ctx, instA, nil)
	if err != nil || !again.Resumed || again.KeysPurged != 0 || again.EventsPurged != 0 || again.TombstoneSeq != res.TombstoneSeq {
		t.Fatalf("second erase: %+v %v", again, err)
	}
}

// TestReadOnlyWithoutKeyBucket: a read-only Log on a stream whose key
// bucket is gone fails on the first format-3 event, naming the bucket.
func TestReadOnlyWithoutKeyBucket(t *testing.T) {
	srv := natstestStart(t)
	l := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "g"), 1, "x"))
	if err := l.js.DeleteKeyValue(context.Background(), l.KeyBucket()); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv)
	cfg.ReadOnly = true
	ro := openLog(t, cfg, keyring(t, 1, 0x11))
	_, err := tryReadAll(ro, instA, 0)
	if !errors.Is(err, ErrNoKeyBucket) || !strings.Contains(err.Error(), DefaultStream+KeyBucketSuffix) {
		t.Fatalf("read without the key bucket: %v, want ErrNoKeyBucket naming it", err)
	}
	if _, err := ro.js.KeyValue(context.Background(), l.KeyBucket()); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("the read-only Log created the bucket: %v", err)
	}
}

// TestDataKeyCacheBounded: the cache never holds more than its bound and
// wipes what it evicts.
// rootKeyMaterials is what ring's root keys give an attacker: each as a
// ring of its own and the whole ring (for events.Open), and each key's
// bytes used directly as a data key.
func rootKeyMaterials(t *testing.T, ring *events.Keyring) ([]*events.Keyring, []events.DataKey) {
	t.Helper()
	rings := []*events.Keyring{ring}
	var dks []events.DataKey
	for _, id := range ring.IDs() {
		rk, _ := ring.RootKey(id)
		one, err := events.NewKeyring(id, rk)
		if err != nil {
			t.Fatal(err)
		}
		b := rk.Bytes()
		dk, err := events.NewDataKey(b)
		clear(b)
		if err != nil {
			t.Fatal(err)
		}
		rings, dks = append(rings, one), append(dks, dk)
	}
	return rings, dks
}

// withEpochKeys is dk, and when id names an epoch chain the keys it
// derives for its first 8 epochs too: every key material a chain holds.
func withEpochKeys(t *testing.T, dk events.DataKey, id events.DataKeyID) []events.DataKey {
	t.Helper()
	out := []events.DataKey{dk}
	if id.Class != events.ClassEpoch {
		return out
	}
	for steps := range uint64(8) {
		c, err := events.EpochChainKey(dk, steps)
		if err != nil {
			t.Fatal(err)
		}
		ek, err := events.EpochDataKey(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c, ek)
	}
	return out
}

func TestDataKeyCacheBounded(t *testing.T) {
	c := newDataKeyCache(2)
	key := func(i int) dkCacheKey {
		return dkCacheKey{inst: instA, id: events.DataKeyID{Class: events.ClassState, Period: [16]byte{byte(i)}}}
	}
	var ents []*dkEntry
	for i := range 3 {
		k, err := events.GenerateDataKey()
		if err != nil {
			t.Fatal(err)
		}
		ents = append(ents, c.put(key(i), k))
		if i > 0 {
			ents[i].release() // key 0 stays in use, as by a seal in progress
		}
	}
	if c.len() != 2 {
		t.Fatalf("cache holds %d keys, bound 2", c.len())
	}
	if _, ok := c.get(key(0)); ok {
		t.Fatal("the oldest key was not evicted")
	}
	if !ents[0].dk.Valid() {
		t.Fatal("an evicted key was wiped while still in use")
	}
	ents[0].release()
	if ents[0].dk.Valid() {
		t.Fatal("an evicted key was not wiped when its last user released it")
	}
	k, err := events.GenerateDataKey()
	if err != nil {
		t.Fatal(err)
	}
	if e := c.put(key(1), k); e != ents[1] || k.Valid() {
		t.Fatal("putting a cached key again did not return the cached entry and wipe the duplicate")
	} else {
		e.release()
	}
	c.dropInstallation(instA)
	if c.len() != 0 {
		t.Fatal("dropInstallation left keys")
	}
	for i, e := range ents {
		if e.dk.Valid() {
			t.Fatalf("key %d is still unwiped after eviction and release", i)
		}
	}
}

// TestRacingWritersAgreeOnDataKey: two Logs creating the same period's
// key at once (an installation's identity and one of its key packages
// share the installation's state period) end up with one key, and each
// reads the other's events.
func TestRacingWritersAgreeOnDataKey(t *testing.T) {
	srv := natstestStart(t)
	l1 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	evs := []events.Event{
		{Aggregate: events.Aggregate{Installation: instA, Type: events.AggInstallation}, Time: baseTime, Body: events.InstallationCreated{
			Installation: instA, Ciphersuite: 3, SignaturePublicKey: []byte("pub"), SignaturePrivateKey: events.NewSecret([]byte("priv")), Credential: []byte("c")}},
		{Aggregate: events.Aggregate{Installation: instA, Type: events.AggKeyPackage, ID: "00aa"}, Time: baseTime, Body: events.KeyPackagePublished{Ref: []byte{0, 0xaa}, Destination: "d"}},
	}
	errs := make(chan error, 2)
	for i, l := range []*Log{l1, l2} {
		go func() {
			_, err := l.Append(context.Background(), 0, evs[i])
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(bucketKeys(t, l1)); n != 1 {
		t.Fatalf("bucket holds %d keys, want the one both writers agreed on", n)
	}
	for _, l := range []*Log{l1, l2, openLog(t, testConfig(srv), keyring(t, 1, 0x11))} {
		if recs := readAll(t, l, instA, 0); len(recs) != 2 {
			t.Fatalf("read %d events, want 2", len(recs))
		}
	}
}

// An id the stream knows nothing of (a typo) is not erased: a tombstone
// cannot be taken back, and "0 events purged" read as success.
func TestEraseOfAnUnknownInstallationWritesNoTombstone(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	mustAppend(t, l, 0, msg(group(instA, "g"), 1, "kept"))
	_, err := l.Erase(ctx, "inst-typo", &EraseOptions{By: "test"})
	if !errors.Is(err, ErrUnknownInstallation) || !strings.Contains(err.Error(), "inst-typo") {
		t.Fatalf("erase of an unknown id: %v, want ErrUnknownInstallation naming it", err)
	}
	if _, _, found, err := l.Tombstone(ctx, "inst-typo"); err != nil || found {
		t.Fatalf("tombstone of the unknown id: found %v, %v; want none", found, err)
	}
	if _, err := l.Append(ctx, 0, msg(group("inst-typo", "g"), 1, "later")); err != nil {
		t.Fatalf("the id is usable afterwards: %v", err)
	}
}

// TestFollowEndsAtTheErase: a follow of an installation that another
// process erases ends with its *ErasedError as soon as the tombstone is
// written, naming the installation and the tombstone's sequence; a
// follow of the other installation carries on and is told nothing.
// Until 2026-12-07 the follow waited, for good, on purged subjects.
func TestFollowEndsAtTheErase(t *testing.T) {
	l, srv := newLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nA := writeMixed(t, l, instA)
	nB := writeMixed(t, l, instB)
	type follow struct {
		mu   chan struct{} // closed when the follow returned
		got  []Record
		err  error
		seen chan int
	}
	start := func(insts ...events.InstallationID) *follow {
		f := &follow{mu: make(chan struct{}), seen: make(chan int, 100)}
		go func() {
			defer close(f.mu)
			f.err = l.FollowInstallations(ctx, insts, 0, func(r Record) error {
				f.got = append(f.got, r)
				f.seen <- len(f.got)
				return nil
			})
		}()
		return f
	}
	waitN := func(f *follow, n int) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case got := <-f.seen:
				if got >= n {
					return
				}
			case <-f.mu:
				t.Fatalf("follow ended before %d records: %v", n, f.err)
			case <-timeout:
				t.Fatalf("follow did not deliver %d records", n)
			}
		}
	}
	both, onlyB := start(instA, instB), start(instB)
	waitN(both, nA+nB)
	waitN(onlyB, nB)

	other := openLog(t, testConfig(srv), keyring(t, 1, 0x11)) // another process
	res, err := other.Erase(context.Background(), instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-both.mu:
	case <-time.After(30 * time.Second):
		t.Fatal("a follow of the erased installation did not end")
	}
	var ee *ErasedError
	if !errors.As(both.err, &ee) || !errors.Is(both.err, ErrErased) || ee.Installation != instA || ee.Seq != res.TombstoneSeq || ee.By != "test" {
		t.Fatalf("follow of %s and %s after %s's erase: %v, want its *ErasedError at seq %d", instA, instB, instA, both.err, res.TombstoneSeq)
	}
	if len(both.got) != nA+nB {
		t.Fatalf("follow delivered %d records, want %d (the tombstone is not one)", len(both.got), nA+nB)
	}

	// The other installation's follow goes on.
	g := group(instB, "g1")
	mustAppend(t, l, 6, msg(g, 7, "after the erase"))
	waitN(onlyB, nB+1)
	cancel()
	<-onlyB.mu
	if !errors.Is(onlyB.err, context.Canceled) {
		t.Fatalf("follow of %s ended with %v, want the cancel", instB, onlyB.err)
	}
}

// TestFollowStartedAfterTheErase: a follow of an installation erased
// before it started ends with its *ErasedError at once, whatever
// sequence it starts from: before the tombstone, or after it (a
// checkpoint past it, other installations' events since). Until
// 2026-12-07 one from past the tombstone waited, for good, on purged
// subjects (replayer inspect --follow --from N printed nothing and ran
// until interrupted).
func TestFollowStartedAfterTheErase(t *testing.T) {
	l, srv := newLog(t)
	writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	other := openLog(t, testConfig(srv), keyring(t, 1, 0x11)) // another process
	res, err := other.Erase(context.Background(), instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	g := group(instB, "g1")
	after := mustAppend(t, l, 6, msg(g, 7, "after the erase"))
	// A fresh Log knows nothing of the erase from a cache.
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	for _, from := range []uint64{0, res.TombstoneSeq, res.TombstoneSeq + 1, after[0].Seq + 1} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var got []Record
		err := fresh.FollowInstallations(ctx, []events.InstallationID{instB, instA}, from, func(r Record) error {
			got = append(got, r)
			return nil
		})
		cancel()
		var ee *ErasedError
		if !errors.As(err, &ee) || ee.Installation != instA || ee.Seq != res.TombstoneSeq {
			t.Fatalf("follow of %s (erased, tombstone at seq %d) and %s from seq %d: %v after %d records, want %s's *ErasedError",
				instA, res.TombstoneSeq, instB, from, err, len(got), instA)
		}
	}
}

// TestEraseDeletesTheSnapshots: an erase deletes the installation's
// read-model snapshots from the snapshots bucket: they are sealed under
// a key derived from the root key, which the erase does not shred, so
// whoever holds the root key (every process of the archive) could open
// the erased installation's whole read model (its private keys, group
// states, message plaintext) from them. The other installation's stay.
// Until 2026-12-07 they stayed, and opened.
func TestEraseDeletesTheSnapshots(t *testing.T) {
	l, srv := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	for _, inst := range []events.InstallationID{instA, instB} {
		for _, cp := range []uint64{3, 5} {
			if _, err := l.PutSnapshot(ctx, inst, cp, []byte("read model of "+string(inst))); err != nil {
				t.Fatal(err)
			}
		}
	}
	sealedA, err := l.SealedSnapshot(ctx, instA, 5)
	if err != nil {
		t.Fatal(err)
	}
	other := openLog(t, testConfig(srv), keyring(t, 1, 0x11)) // another process
	if _, err := other.Erase(ctx, instA, &EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if refs, err := fresh.Snapshots(ctx, instA); err != nil || len(refs) != 0 {
		t.Fatalf("snapshots of erased %s: %v (%v), want none", instA, refs, err)
	}
	for _, cp := range []uint64{3, 5} {
		if b, err := fresh.SealedSnapshot(ctx, instA, cp); !errors.Is(err, ErrNoSnapshot) {
			t.Fatalf("snapshot of erased %s at %d: %d bytes (%v), want ErrNoSnapshot", instA, cp, len(b), err)
		}
	}
	// What a copy taken before shows: it opened under the root key alone.
	if _, err := events.OpenSnapshot(fresh.keys, events.SnapshotBinding{Stream: fresh.cfg.Stream, Installation: instA, Checkpoint: 5}, sealedA); err != nil {
		t.Fatalf("the test's premise: %v", err)
	}
	if refs, err := fresh.Snapshots(ctx, instB); err != nil || len(refs) != 2 {
		t.Fatalf("snapshots of %s after %s's erase: %v (%v), want both", instB, instA, refs, err)
	}
	// Erasing again is a no-op on the bucket.
	if _, err := other.Erase(ctx, instA, nil); err != nil {
		t.Fatal(err)
	}
}

// TestNoSnapshotOfAnErasedInstallation: a snapshot put for an
// installation erased meanwhile (a follower's, made while the erase ran)
// is refused with its *ErasedError and not stored. Until 2026-12-07 it
// was stored, after the erase, and stayed.
func TestNoSnapshotOfAnErasedInstallation(t *testing.T) {
	l, srv := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA)
	other := openLog(t, testConfig(srv), keyring(t, 1, 0x11)) // the eraser
	if _, err := other.Erase(ctx, instA, &EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	_, err := l.PutSnapshot(ctx, instA, 3, []byte("read model of "+string(instA)))
	if !errors.Is(err, ErrErased) {
		t.Fatalf("put snapshot of erased %s: %v, want ErrErased", instA, err)
	}
	if refs, err := other.Snapshots(ctx, instA); err != nil || len(refs) != 0 {
		t.Fatalf("snapshots of erased %s: %v (%v), want none", instA, refs, err)
	}
}
