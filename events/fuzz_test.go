package events

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

var fuzzRing = func() *Keyring {
	k1, _ := NewRootKey(bytes.Repeat([]byte{0x11}, RootKeySize))
	k2, _ := NewRootKey(bytes.Repeat([]byte{0x22}, RootKeySize))
	r, _ := NewKeyring(1, k1)
	_ = r.Rotate(2, k2)
	return r
}()

var documented = []error{ErrUnknownKey, ErrWrongKey, ErrTampered, ErrMoved, ErrUnknownVersion, ErrMalformed}

func isDocumented(err error) bool {
	for _, s := range documented {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzOpen feeds Open real envelopes of every kind (sealed under two keys,
// plus a v1 event) and mutations of them. With asPlaintext set, the bytes
// are instead sealed as the event plaintext under the real key first, so
// that mutations reach the decoder behind the AEAD. Open must never panic,
// must fail only with documented errors, and whatever opens must re-seal
// and re-open to an equal event.
func FuzzOpen(f *testing.F) {
	for _, e := range samples(testInst) {
		env, err := Seal(fuzzRing, testBinding, e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(env, false)
		plain, err := MarshalEvent(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(plain, true)
	}
	old := mustRing(f, 1, 0x11)
	e := samples(testInst)[KindDeliveryEnqueued]
	v1, err := seal(old, testBinding, testInst, KindDeliveryEnqueued, 1, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time},
		deliveryEnqueuedV1{Recipient: "r", Channel: "c", Sequence: 1, ExpiresInSeconds: 60})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v1, false)
	f.Add([]byte("ELG\x01"), false)
	f.Add([]byte{}, false)

	f.Fuzz(func(t *testing.T, env []byte, asPlaintext bool) {
		if asPlaintext {
			var err error
			if env, err = sealPlaintext(fuzzRing, testBinding, testInst, env); err != nil {
				t.Fatal(err)
			}
		}
		got, err := Open(fuzzRing, testInst, testBinding, env)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		again, err := Seal(fuzzRing, testBinding, got)
		if err != nil {
			t.Fatalf("re-seal of an opened event: %v", err)
		}
		back, err := Open(fuzzRing, testInst, testBinding, again)
		if err != nil {
			t.Fatalf("re-open: %v", err)
		}
		if !reflect.DeepEqual(back, got) {
			t.Fatalf("re-sealed event differs:\n%+v\n%+v", back, got)
		}
	})
}

// FuzzDecodeBody decodes arbitrary bytes as a body of any kind and version.
// It must never panic, fail only with documented errors, and a decoded body
// must encode, decode to an equal value and re-encode to the same bytes.
func FuzzDecodeBody(f *testing.F) {
	kinds := Kinds()
	for i, ki := range kinds {
		b, err := msgpack.Marshal(samples(testInst)[ki.Kind].Body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), ki.Version, b)
	}
	v1, err := msgpack.Marshal(deliveryEnqueuedV1{Recipient: "r", Channel: "c", Sequence: 1, Payload: []byte{1}, ExpiresInSeconds: 60})
	if err != nil {
		f.Fatal(err)
	}
	for i, ki := range kinds {
		if ki.Kind == KindDeliveryEnqueued {
			f.Add(uint8(i), uint16(1), v1)
		}
	}
	f.Add(uint8(200), uint16(1), []byte{0x80})
	h := eventHeader{Aggregate: Aggregate{Installation: testInst, Type: AggGroup, ID: "g"}, Position: 1, Time: testTime}

	f.Fuzz(func(t *testing.T, ki uint8, version uint16, data []byte) {
		k := Kind("unknown.kind")
		if int(ki) < len(kinds) {
			k = kinds[ki].Kind
		}
		body, err := decodeBody(k, version, data, h)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		enc, err := msgpack.Marshal(body)
		if err != nil {
			t.Fatalf("encode decoded body: %v", err)
		}
		back, err := decodeBody(k, body.SchemaVersion(), enc, h)
		if err != nil {
			t.Fatalf("decode re-encoded body: %v", err)
		}
		if !reflect.DeepEqual(back, body) {
			t.Fatalf("round trip differs:\n%#v\n%#v", back, body)
		}
		enc2, err := msgpack.Marshal(back)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable (err %v)", err)
		}
	})
}

// FuzzUnmarshalEvent does the same for the whole msgpack event record.
func FuzzUnmarshalEvent(f *testing.F) {
	for _, e := range samples(testInst) {
		b, err := MarshalEvent(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := UnmarshalEvent(data)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		enc, err := MarshalEvent(e)
		if err != nil {
			t.Fatalf("encode decoded event: %v", err)
		}
		back, err := UnmarshalEvent(enc)
		if err != nil {
			t.Fatalf("decode re-encoded event: %v", err)
		}
		if !reflect.DeepEqual(back, e) {
			t.Fatalf("round trip differs:\n%+v\n%+v", back, e)
		}
		if enc2, err := MarshalEvent(back); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable (err %v)", err)
		}
	})
}

// fuzzSnapBinding is the binding FuzzOpenSnapshot's seeds are sealed for.
var fuzzSnapBinding = SnapshotBinding{Stream: "EPOCHLOG", Installation: testInst, Checkpoint: 42}

// FuzzOpenSnapshot feeds OpenSnapshot sealed snapshots (under both keys of
// the ring, of several sizes) and mutations of them; with asPlaintext set,
// the bytes are sealed as the snapshot first. OpenSnapshot must never
// panic, must fail only with documented errors, must agree with
// SnapshotKeyID on the header, and what opens must re-seal and re-open to
// the same bytes.
func FuzzOpenSnapshot(f *testing.F) {
	old := mustRing(f, 1, 0x11)
	for _, plain := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("read model rows "), 40)} {
		for _, r := range []*Keyring{fuzzRing, old} {
			sealed, err := SealSnapshot(r, fuzzSnapBinding, plain)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(sealed, false)
		}
		f.Add(plain, true)
	}
	f.Add([]byte("ELS\x01"), false)
	f.Add([]byte{}, false)

	f.Fuzz(func(t *testing.T, sealed []byte, asPlaintext bool) {
		if asPlaintext {
			var err error
			if sealed, err = SealSnapshot(fuzzRing, fuzzSnapBinding, sealed); err != nil {
				t.Fatal(err)
			}
		}
		id, idErr := SnapshotKeyID(sealed)
		plain, err := OpenSnapshot(fuzzRing, fuzzSnapBinding, sealed)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			if idErr != nil && !errors.Is(err, errors.Unwrap(idErr)) {
				t.Fatalf("SnapshotKeyID: %v, but OpenSnapshot: %v", idErr, err)
			}
			return
		}
		if idErr != nil || !fuzzRing.Has(id) {
			t.Fatalf("opened a snapshot whose header SnapshotKeyID reads as key id %d, %v", id, idErr)
		}
		if len(plain) != len(sealed)-SnapshotOverhead {
			t.Fatalf("opened %d bytes out of a %d-byte snapshot", len(plain), len(sealed))
		}
		again, err := SealSnapshot(fuzzRing, fuzzSnapBinding, plain)
		if err != nil {
			t.Fatalf("re-seal: %v", err)
		}
		back, err := OpenSnapshot(fuzzRing, fuzzSnapBinding, again)
		if err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("re-open: %v (equal %v)", err, bytes.Equal(back, plain))
		}
	})
}

// FuzzOpenTombstone does the same for sealed tombstones; with asPlaintext
// the bytes are sealed as the tombstone's msgpack, so that mutations reach
// the decoder behind the AEAD. What opens must re-seal and re-open equal.
func FuzzOpenTombstone(f *testing.F) {
	old := mustRing(f, 1, 0x11)
	for _, ts := range []Tombstone{
		{Installation: testInst, ErasedAt: testTime, LastSeq: 9, By: "ops"},
		{Installation: testInst},
	} {
		for _, r := range []*Keyring{fuzzRing, old} {
			sealed, err := SealTombstone(r, testBinding, ts)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(sealed, false)
		}
		plain, err := msgpack.Marshal(&ts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(plain, true)
	}
	f.Add([]byte("ELT\x01"), false)
	f.Add([]byte{0x80}, true)
	f.Add([]byte{0x80, 0xc0}, true) // a record with a byte after it

	f.Fuzz(func(t *testing.T, sealed []byte, asPlaintext bool) {
		if asPlaintext {
			var err error
			if sealed, err = sealTombstonePlain(fuzzRing, testBinding, testInst, sealed); err != nil {
				t.Fatal(err)
			}
		}
		got, err := OpenTombstone(fuzzRing, testInst, testBinding, sealed)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if got.Installation != testInst || got.ErasedAt.Location() != time.UTC {
			t.Fatalf("opened a tombstone of %q erased at %v", got.Installation, got.ErasedAt)
		}
		again, err := SealTombstone(fuzzRing, testBinding, got)
		if err != nil {
			t.Fatalf("re-seal: %v", err)
		}
		back, err := OpenTombstone(fuzzRing, testInst, testBinding, again)
		if err != nil || back != got {
			t.Fatalf("re-open: %+v, %v; want %+v", back, err, got)
		}
	})
}

// FuzzUnwrapDataKey feeds UnwrapDataKey real wraps of every class (a
// period key under both root keys, an epoch chain) and mutations of them,
// read under a name of the class the fuzzer picks. It must never panic
// and fail only with documented errors; WrappedKeyID and
// WrappedChainEpoch must read what the unwrap authenticated, and the key
// must re-wrap and unwrap to the same key at the same epoch.
func FuzzUnwrapDataKey(f *testing.F) {
	old := mustRing(f, 1, 0x11)
	ids := map[DataKeyClass]DataKeyID{}
	for c := ClassState; c <= ClassEpoch; c++ {
		id, err := fuzzRing.DataKeyID(testInst, c, "group", "g")
		if err != nil {
			f.Fatal(err)
		}
		ids[c] = id.WithEpoch(7)
	}
	k, err := NewDataKey(bytes.Repeat([]byte{0x5a}, DataKeySize))
	if err != nil {
		f.Fatal(err)
	}
	for c, id := range ids {
		for _, r := range []*Keyring{fuzzRing, old} {
			w, err := r.WrapDataKey("S", testInst, id, k)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(c), w)
		}
	}
	f.Add(uint8(0), []byte("ELK\x01"))
	f.Add(uint8(200), bytes.Repeat([]byte{0}, WrappedChainSize))

	f.Fuzz(func(t *testing.T, class uint8, wrapped []byte) {
		id, ok := ids[DataKeyClass(class)]
		if !ok {
			id = DataKeyID{Class: DataKeyClass(class)}
		}
		got, err := fuzzRing.UnwrapDataKey("S", testInst, id, wrapped)
		if err != nil {
			if !isDocumented(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if !got.Valid() {
			t.Fatal("unwrapped an invalid key")
		}
		kid, err := WrappedKeyID(wrapped)
		if err != nil || !fuzzRing.Has(kid) {
			t.Fatalf("unwrapped a key whose wrap WrappedKeyID reads as key id %d, %v", kid, err)
		}
		wid := id
		if id.Class == ClassEpoch {
			n, err := WrappedChainEpoch(wrapped)
			if err != nil {
				t.Fatalf("unwrapped an epoch chain whose epoch does not read: %v", err)
			}
			wid = id.WithEpoch(n)
		} else if _, err := WrappedChainEpoch(wrapped); err == nil {
			t.Fatalf("a %s key's wrap reads as an epoch chain's", id.Class)
		}
		again, err := fuzzRing.WrapDataKey("S", testInst, wid, got)
		if err != nil {
			t.Fatalf("re-wrap: %v", err)
		}
		if len(again) != len(wrapped) {
			t.Fatalf("re-wrapped in %d bytes, read from %d", len(again), len(wrapped))
		}
		back, err := fuzzRing.UnwrapDataKey("S", testInst, id, again)
		if err != nil || !back.Equal(got) {
			t.Fatalf("unwrap of the re-wrap: %v (equal %v)", err, err == nil && back.Equal(got))
		}
		if id.Class == ClassEpoch {
			want, _ := wid.Epoch()
			if n, err := WrappedChainEpoch(again); err != nil || n != want {
				t.Fatalf("re-wrapped at epoch %d (%v), read at %s", n, err, wid)
			}
		}
	})
}

// FuzzParseDataKeyName parses key bucket names (the names of real wraps
// of every class and mutations of them): never a panic, only ErrMalformed,
// and a name that parses is the name its parts give back: one entry per
// key, whatever bytes the bucket holds.
func FuzzParseDataKeyName(f *testing.F) {
	for c := ClassState; c <= ClassEpoch; c++ {
		id, err := fuzzRing.DataKeyID(testInst, c, "group", "g")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(id.Name(fuzzRing.Pseudonym(string(testInst))))
	}
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, name string) {
		pseudo, id, err := ParseDataKeyName(name)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if !id.Class.Valid() {
			t.Fatalf("parsed class %d", id.Class)
		}
		if got := id.Name(pseudo); got != name {
			t.Fatalf("name %q parses to %q %s, whose name is %q", name, pseudo, id, got)
		}
	})
}

// FuzzStateOf rebuilds a commit's state from a recorded delta, digest and
// the base a reader holds, all as read from outside: never a panic, only
// ErrStateBase or ErrMalformed, a state given only when its digest is the
// one recorded, and that state recorded again from the same base rebuilds
// the same.
func FuzzStateOf(f *testing.F) {
	base := bytes.Repeat([]byte("ratchet tree node "), 40)
	state := append(bytes.Clone(base[:300]), "a new path, then the rest"...)
	state = append(state, base[320:]...)
	c := CommitApplied{GroupID: []byte{1}, Epoch: 2}.WithStateFrom(base, state)
	if c.StateDelta.IsZero() {
		f.Fatal("the seed state was recorded whole")
	}
	f.Add(base, c.StateDelta.Bytes(), c.StateSHA256)
	f.Add(state, c.StateDelta.Bytes(), c.StateSHA256)
	f.Add([]byte{}, []byte{1, 0}, make([]byte, 32))
	f.Fuzz(func(t *testing.T, base, delta, sum []byte) {
		c := CommitApplied{GroupID: []byte{1}, Epoch: 2, StateDelta: NewSecret(delta), StateSHA256: sum}
		st, err := c.StateOf(base)
		if err != nil {
			if !errors.Is(err, ErrStateBase) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if c.StateDelta.IsZero() {
			return // recorded whole (here: nothing)
		}
		if s := sha256.Sum256(st.Bytes()); !bytes.Equal(s[:], sum) {
			t.Fatalf("gave a state of digest %x, recorded %x", s, sum)
		}
		again := CommitApplied{GroupID: []byte{1}, Epoch: 2}.WithStateFrom(base, st.Bytes())
		back, err := again.StateOf(base)
		if err != nil || !back.Equal(st) {
			t.Fatalf("recorded again from the same base: %v (equal %v)", err, err == nil && back.Equal(st))
		}
	})
}
