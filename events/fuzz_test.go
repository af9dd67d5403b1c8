package events

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

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
