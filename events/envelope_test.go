package events

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestRoundTripEveryKind(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	all := samples(testInst)
	for _, ki := range Kinds() {
		e, ok := all[ki.Kind]
		if !ok {
			t.Errorf("no sample for kind %s", ki.Kind)
			continue
		}
		t.Run(string(ki.Kind), func(t *testing.T) {
			if e.Body.SchemaVersion() != ki.Version || e.Aggregate.Type != ki.Aggregate {
				t.Fatalf("catalogue says v%d/%s, body says v%d, sample aggregate %s", ki.Version, ki.Aggregate, e.Body.SchemaVersion(), e.Aggregate.Type)
			}
			env := mustSeal(t, r, testBinding, e)
			got, err := Open(r, testInst, testBinding, env)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			assertEventEqual(t, got, e)

			// The plaintext codec alone round-trips too.
			plain, err := MarshalEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err = UnmarshalEvent(plain)
			if err != nil {
				t.Fatal(err)
			}
			assertEventEqual(t, got, e)
		})
	}
	if len(all) != len(Kinds()) {
		t.Errorf("%d samples for %d kinds", len(all), len(Kinds()))
	}
}

func TestCatalogueIsConsistent(t *testing.T) {
	seen := map[Kind]bool{}
	for _, ki := range Kinds() {
		if seen[ki.Kind] {
			t.Errorf("kind %s listed twice", ki.Kind)
		}
		seen[ki.Kind] = true
		area, what, ok := strings.Cut(string(ki.Kind), ".")
		if !ok || area == "" || what == "" || strings.ToLower(string(ki.Kind)) != string(ki.Kind) {
			t.Errorf("kind %q is not <area>.<what_happened>", ki.Kind)
		}
		if ki.Version == 0 || !ki.Aggregate.Valid() || ki.Doc == "" {
			t.Errorf("kind %s: incomplete info %+v", ki.Kind, ki)
		}
	}
	for _, ki := range Kinds() {
		if got, ok := LookupKind(ki.Kind); !ok || got != ki {
			t.Errorf("LookupKind(%s) = %+v, %v", ki.Kind, got, ok)
		}
	}
	if _, ok := LookupKind("group.teleported"); ok {
		t.Error("LookupKind found an unknown kind")
	}
	// Kinds returns a copy: callers cannot edit the catalogue.
	k := Kinds()
	k[0].Kind = "mutated"
	if Kinds()[0].Kind == "mutated" {
		t.Error("Kinds exposes the catalogue's backing array")
	}
}

func TestOpenRefusesWrongKey(t *testing.T) {
	e := samples(testInst)[KindCommitApplied]
	env := mustSeal(t, mustRing(t, 1, 0x11), testBinding, e)
	_, err := Open(mustRing(t, 1, 0x22), testInst, testBinding, env)
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("got %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "key id 1") {
		t.Errorf("error %q does not name the key id", err)
	}
}

func TestOpenRefusesUnknownKey(t *testing.T) {
	e := samples(testInst)[KindCommitApplied]
	env := mustSeal(t, mustRing(t, 7, 0x11), testBinding, e)
	_, err := Open(mustRing(t, 8, 0x11), testInst, testBinding, env)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
	if !strings.Contains(err.Error(), "key id 7") {
		t.Errorf("error %q does not name the key id", err)
	}
}

// Every single-byte change, truncation or extension of an envelope is
// refused with one of the documented errors, never opened.
func TestOpenRefusesTamperingAtEveryOffset(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindApplicationMessageSent]
	env := mustSeal(t, r, testBinding, e)
	allowed := []error{ErrTampered, ErrMalformed, ErrMoved, ErrWrongKey, ErrUnknownKey, ErrUnknownVersion}
	check := func(what string, mutated []byte) {
		t.Helper()
		_, err := Open(r, testInst, testBinding, mutated)
		if err == nil {
			t.Fatalf("%s: opened", what)
		}
		for _, s := range allowed {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("%s: undocumented error %v", what, err)
	}
	for i := range env {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			m := append([]byte(nil), env...)
			m[i] ^= x
			check(fmt.Sprintf("offset %d xor %#x", i, x), m)
		}
	}
	for n := 0; n < len(env); n++ {
		check(fmt.Sprintf("truncated to %d", n), env[:n])
	}
	check("extended", append(append([]byte(nil), env...), 0))
	// Regions map to the documented errors.
	for _, c := range []struct {
		off  int
		want error
	}{{0, ErrMalformed}, {3, ErrMalformed /* 2 becomes 3: a format 3 header of class 0 */}, {offKeyID + 3, ErrUnknownKey}, {offKeyCheck, ErrWrongKey},
		{offBindTag, ErrMoved}, {offNonce, ErrTampered}, {headerSize, ErrTampered}, {len(env) - 1, ErrTampered}} {
		m := append([]byte(nil), env...)
		m[c.off] ^= 0x01
		if _, err := Open(r, testInst, testBinding, m); !errors.Is(err, c.want) {
			t.Errorf("flip at offset %d: got %v, want %v", c.off, err, c.want)
		}
	}
}

func TestOpenRefusesMovedEnvelope(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindGroupCreated]
	env := mustSeal(t, r, testBinding, e)
	for name, c := range map[string]struct {
		inst InstallationID
		b    Binding
	}{
		"other stream":       {testInst, Binding{Stream: "OTHER", Subject: testBinding.Subject}},
		"other subject":      {testInst, Binding{Stream: testBinding.Stream, Subject: "el.ev.p1.group.p3"}},
		"other installation": {"inst-mallory", testBinding},
		"installation and its subject": {"inst-mallory", Binding{Stream: testBinding.Stream,
			Subject: "el.ev." + r.Pseudonym("inst-mallory") + ".group.p2"}},
	} {
		if _, err := Open(r, c.inst, c.b, env); !errors.Is(err, ErrMoved) {
			t.Errorf("%s: got %v, want ErrMoved", name, err)
		}
	}
}

// A sealer that puts one installation's event under another's key and
// binding is caught after decryption.
func TestOpenRefusesEventOfAnotherInstallation(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples("inst-bob")[KindGroupCreated]
	env, err := seal(r, testBinding, testInst, e.Body.Kind(), e.Body.SchemaVersion(), eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time}, e.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMoved) {
		t.Fatalf("got %v, want ErrMoved", err)
	}
}

func TestKeyRotation(t *testing.T) {
	k1, k2 := mustRootKey(t, 0x11), mustRootKey(t, 0x22)
	r, err := NewKeyring(1, k1)
	if err != nil {
		t.Fatal(err)
	}
	e := samples(testInst)[KindDeliveryEnqueued]
	old := mustSeal(t, r, testBinding, e)
	pseudoBefore := r.Pseudonym(string(testInst), "group", "deadbeef")

	if err := r.Rotate(2, k2); err != nil {
		t.Fatal(err)
	}
	if r.Current() != 2 || !r.Has(1) || !r.Has(2) || r.Has(3) {
		t.Fatalf("after rotate: current %d, has1 %v has2 %v has3 %v", r.Current(), r.Has(1), r.Has(2), r.Has(3))
	}
	fresh := mustSeal(t, r, testBinding, e)
	if id, err := EnvelopeKeyID(fresh); err != nil || id != 2 {
		t.Fatalf("new envelope sealed under key id %d (%v), want 2", id, err)
	}
	if id, err := EnvelopeKeyID(old); err != nil || id != 1 {
		t.Fatalf("old envelope reports key id %d (%v), want 1", id, err)
	}
	if _, err := EnvelopeKeyID(old[:20]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("EnvelopeKeyID of a truncated envelope: %v", err)
	}
	for name, env := range map[string][]byte{"old": old, "new": fresh} {
		got, err := Open(r, testInst, testBinding, env)
		if err != nil {
			t.Fatalf("%s envelope: %v", name, err)
		}
		assertEventEqual(t, got, e)
	}
	if got := r.Pseudonym(string(testInst), "group", "deadbeef"); got != pseudoBefore {
		t.Fatalf("pseudonym changed across rotation: %s -> %s", pseudoBefore, got)
	}

	// A reader with only the new key cannot read the old envelope.
	onlyNew, err := NewKeyring(2, k2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(onlyNew, testInst, testBinding, old); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
	// A ring assembled in another order (current first, older added)
	// yields the same pseudonyms.
	if err := onlyNew.Add(1, k1); err != nil {
		t.Fatal(err)
	}
	if onlyNew.Current() != 2 {
		t.Fatalf("Add changed the current key to %d", onlyNew.Current())
	}
	if got := onlyNew.Pseudonym(string(testInst), "group", "deadbeef"); got != pseudoBefore {
		t.Fatalf("pseudonym depends on the order keys were added: %s vs %s", got, pseudoBefore)
	}
}

func TestKeyringRejectsBadKeys(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	if err := r.Add(1, mustRootKey(t, 0x22)); err == nil || !strings.Contains(err.Error(), "key id 1") {
		t.Errorf("duplicate id with another key: %v", err)
	}
	if err := r.Add(1, mustRootKey(t, 0x11)); err != nil {
		t.Errorf("re-adding the same key: %v", err)
	}
	if err := r.Add(0, mustRootKey(t, 0x22)); err == nil {
		t.Error("key id 0 accepted")
	}
	if err := r.Rotate(3, RootKey{}); err == nil || r.Current() != 1 {
		t.Errorf("zero root key accepted: %v (current %d)", err, r.Current())
	}
	if _, err := NewKeyring(0, mustRootKey(t, 1)); err == nil {
		t.Error("NewKeyring accepted key id 0")
	}
	if got := r.IDs(); len(got) != 1 || got[0] != 1 {
		t.Errorf("IDs = %v after refused adds", got)
	}
}

func TestPseudonym(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	p := r.Pseudonym("inst-a", "group", "x")
	if len(p) != 26 || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Fatalf("pseudonym %q is not 26 chars of lowercase base32", p)
	}
	if r.Pseudonym("inst-a", "group", "x") != p {
		t.Fatal("pseudonym not deterministic")
	}
	distinct := map[string]bool{p: true}
	for _, parts := range [][]string{{"inst-b", "group", "x"}, {"inst-agroup", "x"}, {"inst-a", "groupx"}, {"inst-a", "group", "x", ""}, {}} {
		q := r.Pseudonym(parts...)
		if distinct[q] {
			t.Errorf("parts %q collide with an earlier pseudonym", parts)
		}
		distinct[q] = true
	}
	if mustRing(t, 1, 0x22).Pseudonym("inst-a", "group", "x") == p {
		t.Error("pseudonym does not depend on the key")
	}
	if strings.Contains(p, "inst") {
		t.Error("pseudonym leaks the input")
	}
}

func TestSealValidatesEvent(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	good := samples(testInst)[KindGroupCreated]
	for name, mut := range map[string]func(*Event){
		"nil body":             func(e *Event) { e.Body = nil },
		"nil pointer body":     func(e *Event) { e.Body = (*GroupCreated)(nil) },
		"position 0":           func(e *Event) { e.Position = 0 },
		"zero time":            func(e *Event) { e.Time = time.Time{} },
		"wrong aggregate type": func(e *Event) { e.Aggregate.Type = AggDelivery },
		"bad installation":     func(e *Event) { e.Aggregate.Installation = "a.b" },
		"empty aggregate id":   func(e *Event) { e.Aggregate.ID = "" },
	} {
		e := good
		mut(&e)
		if _, err := Seal(r, testBinding, e); err == nil {
			t.Errorf("%s: sealed", name)
		}
	}
	if _, err := Seal(r, Binding{Stream: "S"}, good); err == nil {
		t.Error("empty subject: sealed")
	}
	if _, err := Seal(nil, testBinding, good); err == nil {
		t.Error("nil keyring: sealed")
	}
	// A pointer to a catalogue body is accepted and opens as the value.
	e := good
	gc := good.Body.(GroupCreated)
	e.Body = &gc
	got, err := Open(r, testInst, testBinding, mustSeal(t, r, testBinding, e))
	if err != nil {
		t.Fatal(err)
	}
	assertEventEqual(t, got, good)
}

type alienBody struct{}

func (alienBody) Kind() Kind            { return KindGroupCreated }
func (alienBody) SchemaVersion() uint16 { return 1 }

func TestSealRefusesBodiesOutsideTheCatalogue(t *testing.T) {
	e := samples(testInst)[KindGroupCreated]
	e.Body = alienBody{}
	if _, err := Seal(mustRing(t, 1, 0x11), testBinding, e); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("got %v, want ErrUnknownVersion", err)
	}
}

func TestValidateIdentifiers(t *testing.T) {
	for _, ok := range []InstallationID{"a", "inst-01_X", InstallationID(strings.Repeat("z", 128))} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []InstallationID{"", "a.b", "a*", "a>", "a b", "tab\t", "é", InstallationID(strings.Repeat("z", 129))} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, a := range []Aggregate{
		{Installation: "i", Type: AggInstallation, ID: "x"},
		{Installation: "i", Type: "nope", ID: "x"},
		{Installation: "i", Type: AggGroup},
		{Installation: "", Type: AggGroup, ID: "x"},
		{Installation: "i", Type: AggDelivery, ID: "in.box"},
	} {
		if err := a.Validate(); err == nil {
			t.Errorf("%+v accepted", a)
		}
	}
	if err := (Aggregate{Installation: "i", Type: AggInstallation}).Validate(); err != nil {
		t.Error(err)
	}
}

// The pooled record encoder that Seal uses writes exactly what
// msgpack.Marshal of the record does, whatever it encoded before (a large
// state, then a small body: no stale bytes survive between uses).
func TestPooledRecordEncodingMatchesMarshal(t *testing.T) {
	evs := slices.Collect(maps.Values(samples(testInst)))
	// A whole event, not a copy of a sample: the samples come in map order,
	// and not every sample's aggregate id is a valid group id.
	big := Event{Aggregate: Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}, Position: 7,
		Time: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
		Body: ApplicationMessageSent{GroupID: []byte("g"), Epoch: 1, Sender: testInst, MessageID: []byte("m"),
			Content: NewSecret([]byte(strings.Repeat("x", 100<<10)))}} // larger than a pooled buffer may stay
	for round := range 3 {
		for _, e := range append([]Event{big}, evs...) {
			spec, body, err := checkEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			bb, err := msgpack.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			want, err := msgpack.Marshal(&wireRecord{Kind: spec.info.Kind, Version: spec.info.Version,
				Aggregate: e.Aggregate, Position: e.Position, Time: e.Time.UTC(), Body: bb})
			if err != nil {
				t.Fatal(err)
			}
			got, err := MarshalEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("round %d, %s: pooled encoding differs from msgpack.Marshal", round, spec.info.Kind)
			}
		}
	}
}
