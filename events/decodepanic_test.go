package events

import (
	"errors"
	"testing"
	"time"
)

// TestDecoderPanicsAreMalformed feeds the strict decoder the well-formed
// msgpack that made msgpack v5 panic (a nil where a struct is expected:
// the record's time or aggregate, a body's time, a tombstone's time), in
// each place it decodes; each must be ErrMalformed, not a panic.
func TestDecoderPanicsAreMalformed(t *testing.T) {
	agg := Aggregate{Installation: testInst, Type: AggDelivery, ID: "inbox"}
	body := DeliveryAcknowledged{Recipient: testInst, Channel: "inbox", UpTo: 1}.appendMsgpack(nil)
	record := func(nilAggregate, nilTime bool) []byte {
		b := appendMapLen(nil, 6)
		b = appendUint16(appendStr(appendStr(appendStr(b, "kind"), string(KindDeliveryAcknowledged)), "version"), 1)
		if b = appendStr(b, "aggregate"); nilAggregate {
			b = append(b, mpNil)
		} else {
			b = appendAggregate(b, agg)
		}
		b = appendUint64(appendStr(b, "position"), 1)
		if b = appendStr(b, "time"); nilTime {
			b = append(b, mpNil)
		} else {
			b = appendTime(b, time.Unix(1_700_000_000, 0))
		}
		return append(appendStr(b, "body"), body...)
	}
	if _, err := UnmarshalEvent(record(false, false)); err != nil {
		t.Fatalf("the record without nils: %v", err)
	}
	for name, data := range map[string][]byte{"time": record(false, true), "aggregate": record(true, false)} {
		if _, err := UnmarshalEvent(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("a record whose %s is nil: %v, want ErrMalformed", name, err)
		}
	}

	b := appendDeliveryHead(nil, 6, testInst, "inbox")
	b = appendBin(appendStr(appendUint64(appendStr(b, "sequence"), 1), "payload"), []byte{1})
	b = append(appendStr(b, "expires_at"), mpNil)
	b = appendStr(appendStr(b, "idempotency_key"), "k")
	if _, err := decodeBody(KindDeliveryEnqueued, 2, b, eventHeader{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("a delivery.enqueued body whose expires_at is nil: %v, want ErrMalformed", err)
	}

	r := mustRing(t, 1, 0x11)
	plain := appendMapLen(nil, 2)
	plain = appendStr(appendStr(plain, "installation"), string(testInst))
	plain = append(appendStr(plain, "erased_at"), mpNil)
	sealed, err := sealTombstonePlain(r, testBinding, testInst, plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTombstone(r, testInst, testBinding, sealed); !errors.Is(err, ErrMalformed) {
		t.Errorf("a tombstone whose erased_at is nil: %v, want ErrMalformed", err)
	}
}
