package events

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

const testAggPseudonym = "p2"

func mustMessageIDs(t testing.TB, r *Keyring) *MessageIDs {
	t.Helper()
	m, err := NewMessageIDs(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustSealWithID(t testing.TB, m *MessageIDs, pseudo string, e Event, now time.Time) (string, []byte) {
	t.Helper()
	id, env, err := m.Seal(testBinding, pseudo, e, now)
	if err != nil {
		t.Fatalf("seal %s at %d: %v", e.Body.Kind(), e.Position, err)
	}
	return id, env
}

// engineHeader and engineMsgID are the derivation the engine used before it
// moved here (engine/append.go, msgIDHash.begin and id), kept as the
// reference the ids must keep matching: the first five elements encoded as
// a struct, the array marker patched from 5 to 6, then the body's encoding
// (the body encoded with sorted map keys, as the seal encodes it).
type engineHeader struct {
	//lint:ignore U1000 read by msgpack through its tag: encode as an array
	_msgpack  struct{} `msgpack:",as_array"`
	Kind      Kind
	Version   uint16
	Aggregate Aggregate
	Position  uint64
	Time      time.Time
}

func engineMsgID(t testing.TB, r *Keyring, aggPseudo string, e Event, now time.Time) (string, []byte, error) {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(r.Pseudonym("engine", "message id key")))
	if e.Body == nil {
		t.Fatal("reference: no body")
	}
	ht := e.Time
	if ht.IsZero() {
		ht = time.Unix(0, 0).UTC()
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	hdr := engineHeader{Kind: e.Body.Kind(), Version: e.Body.SchemaVersion(), Aggregate: e.Aggregate, Position: e.Position, Time: ht.UTC()}
	if err := enc.Encode(&hdr); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if b[0] != 0x95 {
		t.Fatalf("reference: header starts with %#x", b[0])
	}
	b[0] = 0x96
	mac.Write([]byte(aggPseudo))
	mac.Write(b)
	if e.Time.IsZero() {
		e.Time = now
	}
	env, err := Seal(r, testBinding, e)
	if err != nil {
		return "", nil, err
	}
	// The body encoded as the seal encodes it.
	buf.Reset()
	if err := enc.Encode(e.Body); err != nil {
		t.Fatal(err)
	}
	mac.Write(buf.Bytes())
	enc32 := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	return strconv.FormatUint(e.Position, 10) + "-" + enc32.EncodeToString(mac.Sum(nil)[:16]), env, nil
}

// wholeRecordMsgID is a message id computed the direct way: the six-element
// record, body included, msgpack-encoded in one go.
func wholeRecordMsgID(t testing.TB, r *Keyring, aggPseudo string, e Event) string {
	t.Helper()
	type record struct {
		//lint:ignore U1000 read by msgpack through its tag: encode as an array
		_msgpack  struct{} `msgpack:",as_array"`
		Kind      Kind
		Version   uint16
		Aggregate Aggregate
		Position  uint64
		Time      time.Time
		Body      Body
	}
	if e.Time.IsZero() {
		e.Time = time.Unix(0, 0)
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(&record{Kind: e.Body.Kind(), Version: e.Body.SchemaVersion(), Aggregate: e.Aggregate,
		Position: e.Position, Time: e.Time.UTC(), Body: e.Body}); err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(r.Pseudonym("engine", "message id key")))
	mac.Write([]byte(aggPseudo))
	mac.Write(buf.Bytes())
	return strconv.FormatUint(e.Position, 10) + "-" + msgIDEncoding.EncodeToString(mac.Sum(nil)[:16])
}

// idCases is every sample kind, plus the edges of the digest input: zero,
// zoned and far times (the three msgpack timestamp sizes), large positions
// and a large body.
func idCases() map[string]Event {
	cases := map[string]Event{}
	for k, e := range samples(testInst) {
		cases[string(k)] = e
	}
	s := samples(testInst)
	with := func(k Kind, f func(*Event)) Event {
		e := s[k]
		f(&e)
		return e
	}
	cases["zero time"] = with(KindDeliveryEnqueued, func(e *Event) { e.Time = time.Time{} })
	cases["zoned time"] = with(KindGroupCreated, func(e *Event) { e.Time = testTime.In(time.FixedZone("X", -7200)) })
	cases["whole seconds"] = with(KindMemberAdded, func(e *Event) { e.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) })
	cases["before 1970"] = with(KindMemberRemoved, func(e *Event) { e.Time = time.Date(1960, 5, 6, 7, 8, 9, 10, time.UTC) })
	cases["after 2514"] = with(KindCommitApplied, func(e *Event) { e.Time = time.Date(2600, 1, 1, 0, 0, 0, 1, time.UTC) })
	cases["position 2^40"] = with(KindProposalStaged, func(e *Event) { e.Position = 1 << 40 })
	cases["position max"] = with(KindEpochSecretsRetired, func(e *Event) { e.Position = math.MaxUint64 })
	cases["large body"] = with(KindDeliveryEnqueued, func(e *Event) {
		d := e.Body.(DeliveryEnqueued)
		d.Payload = bytes.Repeat([]byte{0xab}, 100<<10)
		e.Body = d
	})
	cases["pointer body"] = with(KindKeyPackagePublished, func(e *Event) {
		b := e.Body.(KeyPackagePublished)
		e.Body = &b
	})
	return cases
}

// The ids are those the engine derived before the derivation moved here,
// and those of the whole record encoded in one go, for every case; the
// envelope is the event, a zero time sealed as now.
func TestMessageIDsMatchEngineDerivation(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	now := time.Date(2027, 3, 4, 5, 6, 7, 8, time.UTC)
	for name, e := range idCases() {
		t.Run(name, func(t *testing.T) {
			got, env := mustSealWithID(t, m, testAggPseudonym, e, now)
			want, _, err := engineMsgID(t, r, testAggPseudonym, e, now)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("id %s, the engine's derivation gives %s", got, want)
			}
			if whole := wholeRecordMsgID(t, r, testAggPseudonym, e); got != whole {
				t.Errorf("id %s, the whole record digests to %s", got, whole)
			}
			opened, err := Open(r, testInst, testBinding, env)
			if err != nil {
				t.Fatal(err)
			}
			if e.Time.IsZero() {
				e.Time = now
			}
			if p, ok := e.Body.(*KeyPackagePublished); ok {
				e.Body = *p
			}
			assertEventEqual(t, opened, e)
		})
	}
}

// Golden ids, printed by the engine's code before the derivation moved here
// (engine/append.go msgIDHash with events.SealTo; ring mustRing(1, 0x11),
// aggregate pseudonym "p2"). They pin the stored format:
// a change here means retried appends and the server's deduplication no
// longer recognise events written before it.
func TestMessageIDGolden(t *testing.T) {
	s := samples(testInst)
	at := func(k Kind, pos uint64, tm time.Time) Event {
		e := s[k]
		e.Position, e.Time = pos, tm
		return e
	}
	golden := []struct {
		e    Event
		want string
	}{
		{at(KindInstallationCreated, 1, testTime), "1-a2ekj7jfna7rkwdkxb2ykq7i7m"},
		{at(KindDeliveryEnqueued, 12345, time.Time{}), "12345-gecnrvdfewruedaem6jdibbn4a"},
		{at(KindGroupCreated, 1<<40, time.Date(1960, 5, 6, 7, 8, 9, 10, time.UTC)), "1099511627776-btpiod47rfmscy554ljkmupe44"},
		{at(KindCommitApplied, math.MaxUint64, time.Date(2600, 1, 1, 0, 0, 0, 1, time.UTC)), "18446744073709551615-gzgzygcj5nn7dspdngilni4goq"},
		{at(KindApplicationMessageSent, 7, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), "7-suzyqzquwhrfiqkkdlt2vhmff4"},
		{at(KindKeyPackageConsumed, 3, time.Time{}), "3-4ocvyv4uiafoyloarqzndjvx4a"},
	}
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	// group.commit_applied is at schema version 2 now: its golden id is
	// that of the version 1 body the engine wrote then (kind, version and
	// body are all in the digest).
	if got := msgIDAtVersion(t, r, testAggPseudonym, golden[3].e, 1, commitAppliedV1{GroupID: []byte{0xde, 0xad, 0xbe, 0xef}, Epoch: 5,
		EpochAuthenticator: []byte("auth"), ConfirmedTranscriptHash: []byte("cth"), Commit: []byte("commit"), State: secret("state5"),
		Added: []Member{{Leaf: 3, Identity: []byte("bob")}}, Removed: []Member{{Leaf: 1, Identity: []byte("carol")}}}); got != golden[3].want {
		t.Errorf("group.commit_applied v1: id %s, want %s", got, golden[3].want)
	}
	// group.created is at version 2 (with its members); its golden id is
	// that of the version 1 body.
	gc := golden[2].e.Body.(GroupCreated)
	if got := msgIDAtVersion(t, r, testAggPseudonym, golden[2].e, 1, groupCreatedV1{GroupID: gc.GroupID, Ciphersuite: gc.Ciphersuite,
		Epoch: gc.Epoch, State: gc.State}); got != golden[2].want {
		t.Errorf("group.created v1: id %s, want %s", got, golden[2].want)
	}
	// keypackage.consumed is at version 2 (with replaced_by).
	kc := golden[5].e.Body.(KeyPackageConsumed)
	if got := msgIDAtVersion(t, r, testAggPseudonym, golden[5].e, 1, keyPackageConsumedV1{Ref: kc.Ref, GroupID: kc.GroupID,
		LastResort: kc.LastResort}); got != golden[5].want {
		t.Errorf("keypackage.consumed v1: id %s, want %s", got, golden[5].want)
	}
	// application.message_sent is at version 2 (with message).
	ms := golden[4].e.Body.(ApplicationMessageSent)
	if got := msgIDAtVersion(t, r, testAggPseudonym, golden[4].e, 1, applicationMessageSentV1{GroupID: ms.GroupID, Epoch: ms.Epoch,
		SenderLeaf: ms.SenderLeaf, Sender: ms.Sender, MessageID: ms.MessageID, Content: ms.Content,
		AuthenticatedData: ms.AuthenticatedData}); got != golden[4].want {
		t.Errorf("application.message_sent v1: id %s, want %s", got, golden[4].want)
	}
	golden = golden[:2]
	for _, g := range golden {
		got, _ := mustSealWithID(t, m, testAggPseudonym, g.e, testTime)
		if got != g.want {
			t.Errorf("%s at %d, time %v: id %s, want %s", g.e.Body.Kind(), g.e.Position, g.e.Time, got, g.want)
		}
		// The reference still agrees with the golden value.
		if ref, _, err := engineMsgID(t, r, testAggPseudonym, g.e, testTime); err != nil || ref != g.want {
			t.Errorf("%s at %d: engine derivation gives %s (%v), golden %s", g.e.Body.Kind(), g.e.Position, ref, err, g.want)
		}
	}
}

// msgIDAtVersion derives the message id of e with body written at an
// older schema version, as MessageIDs.Seal derived it when that version
// was current.
func msgIDAtVersion(t testing.TB, r *Keyring, aggPseudo string, e Event, version uint16, body any) string {
	t.Helper()
	key := r.Pseudonym("engine", "message id key")
	s := newMsgIDState([]byte(key))
	digestTime := e.Time
	if e.Time.IsZero() { // as MessageIDs.seal: sealed with the time of sealing, digested unset
		digestTime, e.Time = unsetTime, testTime
	}
	s.begin(aggPseudo, e.Body.Kind(), version, e.Aggregate, e.Position, digestTime)
	if _, err := sealTo(sealer{r: r}, testBinding, e.Aggregate.Installation, e.Body.Kind(), version,
		eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time}, body, s.mac); err != nil {
		t.Fatal(err)
	}
	return s.id(e.Position)
}

func TestMessageIDDeterministicAndKeyed(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	id := func(m *MessageIDs, pseudo string, e Event) string {
		t.Helper()
		v, _ := mustSealWithID(t, m, pseudo, e, time.Now())
		return v
	}
	e := s3(KindDeliveryEnqueued)
	first := id(m, testAggPseudonym, e)
	if !strings.HasPrefix(first, "3-") || len(first) != len("3-")+26 {
		t.Fatalf("message id %q, want 3-<26 base32 chars>", first)
	}
	if strings.Trim(first[2:], "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Fatalf("message id %q has characters outside lowercase base32", first)
	}
	// Stable across calls, also after a huge event grew the pooled state.
	big := e
	big.Body = benchEvent(1 << 20).Body
	id(m, testAggPseudonym, big)
	if again := id(m, testAggPseudonym, e); again != first {
		t.Fatalf("message id changed: %s then %s", first, again)
	}
	// The time's location does not matter; its instant does.
	local := e
	local.Time = e.Time.In(time.FixedZone("X", 3600))
	if id(m, testAggPseudonym, local) != first {
		t.Fatal("message id depends on the time's location")
	}
	other := func(f func(*Event)) Event { o := e; f(&o); return o }
	for name, o := range map[string]Event{
		"content": other(func(o *Event) {
			d := o.Body.(DeliveryEnqueued)
			d.Payload = []byte("ciphertexu")
			o.Body = d
		}),
		"position":  other(func(o *Event) { o.Position++ }),
		"time":      other(func(o *Event) { o.Time = o.Time.Add(time.Nanosecond) }),
		"zero time": other(func(o *Event) { o.Time = time.Time{} }),
		"aggregate": other(func(o *Event) { o.Aggregate.ID = "outbox" }),
	} {
		if id(m, testAggPseudonym, o) == first {
			t.Errorf("message id ignores the %s", name)
		}
	}
	if id(m, "p3", e) == first {
		t.Error("message id ignores the aggregate pseudonym")
	}
	// Keyed: another ring gives another id for the same event.
	if id(mustMessageIDs(t, mustRing(t, 1, 0x22)), testAggPseudonym, e) == first {
		t.Fatal("message id does not depend on the key")
	}
	// Keyed by the pseudonym key: rotating to a new current key keeps ids,
	// and the envelope is sealed under the new key.
	rotated := mustRing(t, 1, 0x11)
	if err := rotated.Rotate(2, mustRootKey(t, 0x33)); err != nil {
		t.Fatal(err)
	}
	rid, env := mustSealWithID(t, mustMessageIDs(t, rotated), testAggPseudonym, e, time.Now())
	if rid != first {
		t.Errorf("message id changed with key rotation: %s then %s", first, rid)
	}
	if kid, err := EnvelopeKeyID(env); err != nil || kid != 2 {
		t.Errorf("envelope key id %d (%v), want the current key 2", kid, err)
	}
}

// s3 is the sample of kind k at position 3.
func s3(k Kind) Event {
	e := samples(testInst)[k]
	e.Position = 3
	return e
}

// A zero time is sealed as now and digested as unset: a retry at another
// now has the same id, and a fresh envelope.
func TestMessageIDZeroTimeIsUnset(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	e := s3(KindDeliveryEnqueued)
	e.Time = time.Time{}
	now1 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	now2 := now1.Add(time.Hour)
	id1, env1 := mustSealWithID(t, m, testAggPseudonym, e, now1)
	id2, env2 := mustSealWithID(t, m, testAggPseudonym, e, now2)
	if id1 != id2 {
		t.Fatalf("retry with another now: id %s then %s", id1, id2)
	}
	if bytes.Equal(env1, env2) {
		t.Fatal("two seals gave the same envelope (nonce reused?)")
	}
	for _, c := range []struct {
		env []byte
		now time.Time
	}{{env1, now1}, {env2, now2}} {
		opened, err := Open(r, testInst, testBinding, c.env)
		if err != nil {
			t.Fatal(err)
		}
		if !opened.Time.Equal(c.now) {
			t.Errorf("sealed time %v, want now %v", opened.Time, c.now)
		}
	}
	// A time set to the Unix epoch digests like an unset one (the engine's
	// rule, kept so that ids do not change).
	epoch := e
	epoch.Time = time.Unix(0, 0)
	if id, _ := mustSealWithID(t, m, testAggPseudonym, epoch, now1); id != id1 {
		t.Errorf("Unix 0 digests as %s, a zero time as %s", id, id1)
	}
}

func TestMessageIDsErrors(t *testing.T) {
	if _, err := NewMessageIDs(nil); err == nil {
		t.Error("NewMessageIDs(nil) succeeded")
	}
	if _, err := NewMessageIDs(&Keyring{}); err == nil {
		t.Error("NewMessageIDs of a zero Keyring succeeded")
	}
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	good := s3(KindDeliveryEnqueued)
	bad := func(f func(*Event)) Event { e := good; f(&e); return e }
	for name, e := range map[string]Event{
		"no body":           bad(func(e *Event) { e.Body = nil }),
		"nil pointer body":  bad(func(e *Event) { e.Body = (*DeliveryEnqueued)(nil) }),
		"position 0":        bad(func(e *Event) { e.Position = 0 }),
		"wrong aggregate":   bad(func(e *Event) { e.Aggregate.Type = AggGroup }),
		"bad installation":  bad(func(e *Event) { e.Aggregate.Installation = "no spaces allowed" }),
		"zero time and now": bad(func(e *Event) { e.Time = time.Time{} }),
	} {
		if id, env, err := m.Seal(testBinding, testAggPseudonym, e, time.Time{}); err == nil {
			t.Errorf("%s: sealed, id %s, %d bytes", name, id, len(env))
		}
	}
	if _, _, err := m.Seal(Binding{Stream: "S"}, testAggPseudonym, good, time.Now()); err == nil {
		t.Error("sealed with a binding without subject")
	}
	// A failed seal leaves the pooled state usable.
	got, _ := mustSealWithID(t, m, testAggPseudonym, good, time.Now())
	if want, _, _ := engineMsgID(t, r, testAggPseudonym, good, time.Now()); got != want {
		t.Errorf("after failed seals: id %s, want %s", got, want)
	}
}

// Many goroutines sealing with one MessageIDs get the ids of a lone caller
// (run with -race).
func TestMessageIDsConcurrent(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	cases := idCases()
	want := map[string]string{}
	for name, e := range cases {
		want[name], _, _ = engineMsgID(t, r, testAggPseudonym, e, testTime)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(cases))
	for range 8 {
		wg.Go(func() {
			for name, e := range cases {
				id, _, err := m.Seal(testBinding, testAggPseudonym, e, testTime)
				if err != nil || id != want[name] {
					errs <- name + ": " + id
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error("concurrent seal gave a wrong id:", e)
	}
}

// Sealing with an id costs at most one allocation more than Seal: the id.
func TestMessageIDsSealAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop entries")
	}
	r := mustRing(t, 1, 0x11)
	m := mustMessageIDs(t, r)
	e := benchEvent(4096)
	seal := testing.AllocsPerRun(100, func() { mustSeal(t, r, testBinding, e) })
	withID := testing.AllocsPerRun(100, func() { mustSealWithID(t, m, testAggPseudonym, e, testTime) })
	if withID > seal+1 {
		t.Errorf("MessageIDs.Seal: %.0f allocations, Seal: %.0f", withID, seal)
	}
}

func TestMessageIDPosition(t *testing.T) {
	for _, c := range []struct {
		id  string
		pos uint64
		ok  bool
	}{
		{"1-abc", 1, true},
		{"12345-bvbbdfxqmbqilbvnjtqf2cr34q", 12345, true},
		{"18446744073709551615-x", math.MaxUint64, true},
		{"3-", 3, true},
		{"18446744073709551616-x", 0, false}, // overflows
		{"0-abc", 0, false},
		{"-abc", 0, false},
		{"+1-abc", 0, false},
		{"abc", 0, false},
		{"", 0, false},
		{"x1-abc", 0, false},
		{"1 -abc", 0, false},
	} {
		pos, ok := MessageIDPosition(c.id)
		if ok != c.ok || (ok && pos != c.pos) {
			t.Errorf("MessageIDPosition(%q) = %d, %v, want %d, %v", c.id, pos, ok, c.pos, c.ok)
		}
	}
	// Every id Seal gives parses back to its position.
	m := mustMessageIDs(t, mustRing(t, 1, 0x11))
	for name, e := range idCases() {
		id, _ := mustSealWithID(t, m, testAggPseudonym, e, testTime)
		if pos, ok := MessageIDPosition(id); !ok || pos != e.Position {
			t.Errorf("%s: id %s parses to %d, %v, want %d", name, id, pos, ok, e.Position)
		}
	}
}

// FuzzMessageID compares the ids of delivery events built from fuzzed
// fields with the engine's derivation: equal ids, or both refuse the event.
func FuzzMessageID(f *testing.F) {
	f.Add([]byte("ciphertext"), "inbox", uint64(3), testTime.UnixNano(), false, "p2")
	f.Add([]byte{}, "c", uint64(math.MaxUint64), int64(0), true, "")
	f.Add(bytes.Repeat([]byte{0}, 300), "a.b", uint64(0), int64(-1), false, "p")
	r := mustRing(f, 1, 0x11)
	m := mustMessageIDs(f, r)
	f.Fuzz(func(t *testing.T, payload []byte, channel string, pos uint64, unixNano int64, zeroTime bool, pseudo string) {
		e := Event{Aggregate: Aggregate{Installation: testInst, Type: AggDelivery, ID: "inbox"}, Position: pos,
			Time: time.Unix(0, unixNano), Body: DeliveryEnqueued{Recipient: "inst-bob", Channel: channel, Sequence: pos,
				Payload: payload, ExpiresAt: time.Unix(0, unixNano/2), IdempotencyKey: channel}}
		if zeroTime {
			e.Time = time.Time{}
		}
		got, _, err := m.Seal(testBinding, pseudo, e, testTime)
		want, _, refErr := engineMsgID(t, r, pseudo, e, testTime)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("Seal error %v, engine derivation error %v", err, refErr)
		}
		if got != want {
			t.Fatalf("id %s, the engine's derivation gives %s", got, want)
		}
	})
}
