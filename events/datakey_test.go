package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func mustDataKey(t testing.TB) DataKey {
	t.Helper()
	k, err := GenerateDataKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDataKeySealOpen(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindGroupCreated]
	class, parts := PeriodOf(e, time.Now())
	id, err := r.DataKeyID(testInst, class, parts...)
	if err != nil {
		t.Fatal(err)
	}
	k := mustDataKey(t)
	env, err := SealData(k, id, testBinding, e)
	if err != nil {
		t.Fatal(err)
	}
	if env[3] != envelopeFormat3 || len(env) < Overhead3 {
		t.Fatalf("format %d, %d bytes", env[3], len(env))
	}
	got, ok, err := EnvelopeDataKeyID(env)
	if err != nil || !ok || got != id {
		t.Fatalf("EnvelopeDataKeyID: %v %v %v, want %v", got, ok, err, id)
	}
	back, err := OpenData(k, testInst, testBinding, env)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Body, e.Body) || back.Position != e.Position {
		t.Fatal("round trip changed the event")
	}
	// Root keys do not open it; another data key, another place, or any
	// flipped byte do not either, each with its documented error.
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open of format 3 with root keys: %v", err)
	}
	if _, err := OpenData(mustDataKey(t), testInst, testBinding, env); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another data key: %v", err)
	}
	if _, err := OpenData(k, testInst, Binding{Stream: "S", Subject: "elsewhere"}, env); !errors.Is(err, ErrMoved) {
		t.Fatalf("moved: %v", err)
	}
	for i := range env {
		m := bytes.Clone(env)
		m[i] ^= 0x01
		_, err := OpenData(k, testInst, testBinding, m)
		if err == nil {
			t.Fatalf("flip at %d opened", i)
		}
		ok := false
		for _, s := range []error{ErrMalformed, ErrWrongKey, ErrTampered, ErrMoved, ErrUnknownVersion} {
			ok = ok || errors.Is(err, s)
		}
		if !ok {
			t.Fatalf("flip at %d: undocumented error %v", i, err)
		}
	}
	// A wiped key opens nothing; a clone survives the wipe of its source.
	c := k.Clone()
	k.Wipe()
	if _, err := OpenData(k, testInst, testBinding, env); err == nil {
		t.Fatal("a wiped key opened an envelope")
	}
	if _, err := OpenData(c, testInst, testBinding, env); err != nil {
		t.Fatalf("clone after the source's wipe: %v", err)
	}
}

func TestDataKeyWrap(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	id, _ := r.DataKeyID(testInst, ClassState, "installation")
	k := mustDataKey(t)
	w, err := r.WrapDataKey("S", testInst, id, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != WrappedSize || bytes.Contains(w, k.state().key[:]) {
		t.Fatal("wrapped key has the wrong size or holds the key in clear")
	}
	got, err := r.UnwrapDataKey("S", testInst, id, w)
	if err != nil || !got.Equal(k) {
		t.Fatalf("unwrap: %v", err)
	}
	other, _ := r.DataKeyID(testInst, ClassState, "other")
	for name, f := range map[string]func() error{
		"another stream":       func() error { _, err := r.UnwrapDataKey("T", testInst, id, w); return err },
		"another installation": func() error { _, err := r.UnwrapDataKey("S", "other", id, w); return err },
		"another name":         func() error { _, err := r.UnwrapDataKey("S", testInst, other, w); return err },
	} {
		if err := f(); !errors.Is(err, ErrTampered) {
			t.Fatalf("%s: %v, want ErrTampered", name, err)
		}
	}
	if _, err := mustRing(t, 2, 0x22).UnwrapDataKey("S", testInst, id, w); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("ring without the wrapping key: %v", err)
	}
	if _, err := mustRing(t, 1, 0x33).UnwrapDataKey("S", testInst, id, w); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another key under id 1: %v", err)
	}
	if kid, err := WrappedKeyID(w); err != nil || kid != 1 {
		t.Fatalf("WrappedKeyID: %d %v", kid, err)
	}
}

func TestDataKeyRedacted(t *testing.T) {
	k := mustDataKey(t)
	raw := k.state().key[:]
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "k", k)
	j, _ := json.Marshal(struct{ K DataKey }{k})
	type holder struct{ k DataKey }
	outs := []string{k.String(), k.GoString(), fmt.Sprintf("%v %+v %#v %x %s %q", k, k, k, k, k, k),
		fmt.Sprintf("%v %+v", holder{k}, holder{k}), buf.String(), string(j)}
	for _, o := range outs {
		if strings.Contains(o, fmt.Sprintf("%x", raw)) || strings.Contains(o, string(raw)) || strings.Contains(o, fmt.Sprint(raw)) {
			t.Fatalf("data key bytes printed: %q", o)
		}
	}
}

// TestBindingTagCached: the cached tag is the computed one, per binding,
// and a wiped key forgets its tags.
func TestBindingTagCached(t *testing.T) {
	k := mustDataKey(t)
	st := k.state()
	other := Binding{Stream: testBinding.Stream, Subject: testBinding.Subject + ".x"}
	for range 2 {
		for _, b := range []Binding{testBinding, other} {
			if st.bindingTag(b, testInst) != st.computeBindingTag(b, testInst) {
				t.Fatalf("cached tag of %v differs from the computed one", b)
			}
		}
	}
	if st.bindingTag(testBinding, testInst) == st.bindingTag(other, testInst) {
		t.Fatal("two bindings share a tag")
	}
	for i := range 2 * maxCachedTags {
		b := Binding{Stream: "s", Subject: fmt.Sprint("subj.", i)}
		st.bindingTag(b, testInst)
		if len(st.tags) > maxCachedTags {
			t.Fatalf("%d tags cached, bound %d", len(st.tags), maxCachedTags)
		}
	}
	k.Wipe()
	if st.tags != nil {
		t.Fatal("a wiped key kept its tags")
	}
}

// TestUTCDay: the cached day name is the formatted one, around midnight
// and before 1970 too.
func TestUTCDay(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 3, 1, 23, 59, 59, 999, time.UTC), time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 2, 0, 30, 0, 0, time.FixedZone("x", 3600)), time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		for range 2 { // the second from the cache
			if got, want := utcDay(tm), tm.UTC().Format(time.DateOnly); got != want {
				t.Fatalf("utcDay(%v) = %s, want %s", tm, got, want)
			}
		}
	}
}

func TestPeriodOf(t *testing.T) {
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	g := Aggregate{Installation: testInst, Type: AggGroup, ID: "aa"}
	for _, c := range []struct {
		e     Event
		class DataKeyClass
		parts string
	}{
		{Event{Aggregate: g, Time: day1, Body: ApplicationMessageSent{Epoch: 4}}, ClassMessages, "group aa 2026-03-01"},
		{Event{Aggregate: g, Time: day1.Add(time.Minute), Body: ApplicationMessageReceived{}}, ClassMessages, "group aa 2026-03-02"},
		{Event{Aggregate: g, Body: CommitApplied{Epoch: 7}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: GroupCreated{Epoch: 0}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: ProposalStaged{Epoch: 3}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: StateRecorded{Epoch: 3}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: WelcomeProcessed{Epoch: 9}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: ExternalJoined{Epoch: 9}}, ClassEpoch, "group aa"},
		{Event{Aggregate: g, Body: EpochSecretsRetired{Epochs: []uint64{1}}}, ClassState, "group aa"},
		{Event{Aggregate: g, Body: HandshakeFormatSet{}}, ClassState, "group aa"},
		{Event{Aggregate: Aggregate{Installation: testInst, Type: AggDelivery, ID: "inbox"}, Time: day1, Body: DeliveryAcknowledged{}}, ClassDelivery, "queue inbox 2026-03-01"},
		{Event{Aggregate: Aggregate{Installation: testInst, Type: AggInstallation}, Body: InstallationCreated{}}, ClassState, "installation"},
	} {
		class, parts := PeriodOf(c.e, day1)
		if class != c.class || strings.Join(parts, " ") != c.parts {
			t.Errorf("%s: %s %q, want %s %q", c.e.Body.Kind(), class, parts, c.class, c.parts)
		}
	}
}

// TestEpochChain: epoch keys derive along a group's chain: from any
// chain position the later epochs' keys, never an earlier one's; the
// chain is wrapped with its epoch, which the unwrap authenticates.
func TestEpochChain(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	g := Aggregate{Installation: testInst, Type: AggGroup, ID: "aa"}
	p := PeriodKeyOf(Event{Aggregate: g, Body: CommitApplied{Epoch: 5}}, time.Now())
	if p.Class != ClassEpoch || p.Epoch != 5 {
		t.Fatalf("period of a commit to epoch 5: %+v", p)
	}
	id5, err := r.PeriodID(testInst, p)
	if err != nil {
		t.Fatal(err)
	}
	p.Epoch = 6
	id6, _ := r.PeriodID(testInst, p)
	if n, _ := id5.Epoch(); n != 5 || id5.Name("inst") != id6.Name("inst") || id5 == id6 {
		t.Fatalf("epochs 5 and 6 of one group: %s and %s, names %s and %s", id5, id6, id5.Name("inst"), id6.Name("inst"))
	}
	if _, parsed, err := ParseDataKeyName(id5.Name("inst")); err != nil || parsed != id5.WithEpoch(0) {
		t.Fatalf("parse %s: %s %v", id5.Name("inst"), parsed, err)
	}

	c3 := mustDataKey(t)
	c5, err := EpochChainKey(c3, 2)
	if err != nil {
		t.Fatal(err)
	}
	c5b, _ := EpochChainKey(c3, 2)
	if !c5.Equal(c5b) || c5.Equal(c3) {
		t.Fatal("chain steps are not deterministic, or a step is the identity")
	}
	e5, _ := EpochDataKey(c5)
	if e5.Equal(c5) {
		t.Fatal("an epoch's data key is its chain key")
	}
	// Sealed under epoch 5's key, the event opens with the key derived
	// from the chain at 3, and with nothing derived from the chain at 6.
	e := Event{Aggregate: g, Position: 1, Time: time.Now().UTC().Truncate(time.Microsecond), Body: CommitApplied{GroupID: []byte{1}, Epoch: 5, State: NewSecret([]byte("s"))}}
	env, err := SealData(e5, id5, testBinding, e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenData(e5, testInst, testBinding, env); err != nil {
		t.Fatalf("open under epoch 5's key: %v", err)
	}
	c6, _ := EpochChainKey(c5, 1)
	for steps := range uint64(4) {
		c, _ := EpochChainKey(c6, steps)
		k, _ := EpochDataKey(c)
		if _, err := OpenData(k, testInst, testBinding, env); err == nil {
			t.Fatalf("epoch 5's event opened under a key derived from the chain at epoch %d", 6+steps)
		}
		if _, err := OpenData(c, testInst, testBinding, env); err == nil {
			t.Fatal("epoch 5's event opened under a chain key")
		}
	}

	w, err := r.WrapDataKey("S", testInst, id5.WithEpoch(3), c3)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != WrappedChainSize {
		t.Fatalf("wrapped chain is %d bytes, want %d", len(w), WrappedChainSize)
	}
	if n, err := WrappedChainEpoch(w); err != nil || n != 3 {
		t.Fatalf("wrapped chain epoch: %d %v", n, err)
	}
	got, err := r.UnwrapDataKey("S", testInst, id5, w) // the id's own epoch does not matter
	if err != nil || !got.Equal(c3) {
		t.Fatalf("unwrap the chain: %v", err)
	}
	moved := bytes.Clone(w)
	binary.BigEndian.PutUint64(moved[16:24], 1) // claim an earlier epoch
	if _, err := r.UnwrapDataKey("S", testInst, id5, moved); !errors.Is(err, ErrTampered) {
		t.Fatalf("a chain with its epoch changed: %v", err)
	}
}

func TestTombstone(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	ts := Tombstone{Installation: testInst, ErasedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), LastSeq: 9, By: "ops"}
	env, err := SealTombstone(r, testBinding, ts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenTombstone(r, testInst, testBinding, env)
	if err != nil || got != ts {
		t.Fatalf("tombstone round trip: %+v %v", got, err)
	}
	if _, err := OpenTombstone(r, "other", testBinding, env); !errors.Is(err, ErrTampered) {
		t.Fatalf("another installation: %v", err)
	}
	// It is not an event envelope, and no event envelope is a tombstone.
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Open of a tombstone: %v", err)
	}
}

// TestTombstoneTrailingBytes: a tombstone whose sealed msgpack carries
// bytes after the record is refused, as the event decoders refuse them,
// naming how many; the same record without them opens.
func TestTombstoneTrailingBytes(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	ts := Tombstone{Installation: testInst, ErasedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), LastSeq: 9, By: "ops"}
	plain, err := msgpack.Marshal(&ts)
	if err != nil {
		t.Fatal(err)
	}
	for name, tail := range map[string][]byte{"none": nil, "a nil": {0xc0}, "a second record": plain} {
		sealed, err := sealTombstonePlain(r, testBinding, testInst, append(bytes.Clone(plain), tail...))
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenTombstone(r, testInst, testBinding, sealed)
		if len(tail) == 0 {
			if err != nil || got != ts {
				t.Fatalf("%s: %+v, %v; want %+v", name, got, err, ts)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s after the tombstone: opened %+v, %v; want ErrMalformed", name, got, err)
		}
		if want := fmt.Sprintf("%d trailing bytes", len(tail)); !strings.Contains(err.Error(), want) {
			t.Errorf("%s after the tombstone: %q does not say %q", name, err, want)
		}
	}
}
