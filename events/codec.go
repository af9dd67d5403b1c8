package events

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// EncodeMsgpack writes the secret as plain msgpack bytes: it only ever
// travels inside a sealed envelope. Without this method msgpack would use
// the redacting MarshalText.
func (s Secret) EncodeMsgpack(enc *msgpack.Encoder) error { return enc.EncodeBytes(s.Bytes()) }

// DecodeMsgpack reads msgpack bytes (or nil) into s.
func (s *Secret) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := dec.DecodeBytes()
	if err != nil {
		return err
	}
	*s = NewSecret(b)
	return nil
}

// wireRecord is the sealed plaintext: msgpack of the event with its kind and
// the schema version of its body.
type wireRecord struct {
	Kind      Kind               `msgpack:"kind"`
	Version   uint16             `msgpack:"version"`
	Aggregate Aggregate          `msgpack:"aggregate"`
	Position  uint64             `msgpack:"position"`
	Time      time.Time          `msgpack:"time"`
	Body      msgpack.RawMessage `msgpack:"body"`
	// Prev is the event's link (envelope format 2 on); absent when zero.
	Prev *wireLink `msgpack:"prev,omitempty"`
}

// wireLink is a Link on the wire: [seq, digest].
type wireLink struct {
	//lint:ignore U1000 read by msgpack through its tag: encode as an array
	_msgpack struct{} `msgpack:",as_array"`
	Seq      uint64
	Digest   []byte
}

// checkEvent validates the header fields of e and returns its catalogue
// entry and the body as a value of the registered type.
func checkEvent(e Event) (*kindSpec, Body, error) {
	spec, body, err := specFor(e.Body)
	if err != nil {
		return nil, nil, err
	}
	if err := e.Aggregate.Validate(); err != nil {
		return nil, nil, err
	}
	if e.Aggregate.Type != spec.info.Aggregate {
		return nil, nil, fmt.Errorf("events: kind %s belongs to %s aggregates, not %s", spec.info.Kind, spec.info.Aggregate, e.Aggregate.Type)
	}
	if e.Position == 0 {
		return nil, nil, fmt.Errorf("events: %s event position is 0 (positions start at 1)", spec.info.Kind)
	}
	if e.Time.IsZero() {
		return nil, nil, fmt.Errorf("events: %s event time is zero (the writer sets Event.Time)", spec.info.Kind)
	}
	return spec, body, nil
}

// encodeRecord encodes the event header with body written as the given kind
// and schema version. Seal always passes the current version; tests pass
// older ones to play an older writer.
func encodeRecord(k Kind, version uint16, h eventHeader, body any) ([]byte, error) {
	re := getRecordEncoder()
	defer re.put()
	plain, err := re.encode(k, version, h, body)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), plain...), nil
}

// recordEncoder encodes event records into reused buffers, so that sealing
// allocates no plaintext: the body's bytes (hand-written for the hot bodies,
// bodyAppender; by reflection for the rest) and the record's (always by
// hand, appendRecord).
type recordEncoder struct {
	body    bytes.Buffer
	bodyEnc *msgpack.Encoder
	rec     []byte
}

// maxPooledRecord is the largest buffer a pooled recordEncoder keeps; a
// bigger one is dropped after use rather than pinned. It holds the events
// of a group of 1,000 (a commit carries about 260 KiB of state and
// commit): a dropped buffer is grown again from nothing by doubling for
// the next such event, copying and clearing each step, which cost about
// a third of sealing one (BenchmarkAtomicBatchLatency, body=180224).
// The pool lets go of idle buffers at the next garbage collections.
const maxPooledRecord = 1 << 20

var recordEncoders = sync.Pool{New: func() any {
	re := &recordEncoder{}
	re.bodyEnc = msgpack.NewEncoder(&re.body)
	return re
}}

func getRecordEncoder() *recordEncoder { return recordEncoders.Get().(*recordEncoder) }

// encode returns the record's msgpack bytes, the same as msgpack.Marshal
// of the wireRecord. They live in re's buffer until the next encode or put.
func (re *recordEncoder) encode(k Kind, version uint16, h eventHeader, body any) ([]byte, error) {
	re.body.Reset()
	if a, ok := body.(bodyAppender); ok {
		avail := re.body.AvailableBuffer()
		out := a.appendMsgpack(avail)
		re.body.Write(out)
		if cap(out) != cap(avail) {
			clear(out) // the append grew into an array of its own: wipe that copy
		}
	} else if err := re.bodyEnc.Encode(body); err != nil {
		return nil, fmt.Errorf("events: encode %s body: %w", k, err)
	}
	re.rec = appendRecord(re.rec[:0], k, version, h, re.body.Bytes())
	return re.rec, nil
}

// put wipes the plaintext the buffers held and returns re to the pool.
func (re *recordEncoder) put() {
	clear(re.body.Bytes())
	clear(re.rec)
	if re.body.Cap() > maxPooledRecord || cap(re.rec) > maxPooledRecord {
		return // let it go rather than pin a large buffer
	}
	recordEncoders.Put(re)
}

// MarshalEvent returns the msgpack encoding of e (the plaintext that Seal
// encrypts), after the same checks as Seal.
func MarshalEvent(e Event) ([]byte, error) {
	spec, body, err := checkEvent(e)
	if err != nil {
		return nil, err
	}
	return encodeRecord(spec.info.Kind, spec.info.Version, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time, Prev: e.Prev}, body)
}

// UnmarshalEvent decodes the msgpack encoding of an event (as written by
// MarshalEvent, or by an older version of this code) and upcasts its body to
// the current version. Errors wrap ErrMalformed or ErrUnknownVersion.
func UnmarshalEvent(data []byte) (Event, error) {
	rec, ok := parseRecord(data) // the layout Seal writes; the decoder reads the rest
	if !ok {
		v, err := decodeStrict[wireRecord](data)
		if err != nil {
			return Event{}, fmt.Errorf("events: decode event: %w: %v", ErrMalformed, err)
		}
		rec = v.(wireRecord)
	}
	h := eventHeader{Aggregate: rec.Aggregate, Position: rec.Position, Time: rec.Time}
	if rec.Prev != nil {
		if rec.Prev.Seq == 0 || len(rec.Prev.Digest) != LinkDigestSize {
			return Event{}, fmt.Errorf("events: decode event: %w: link to seq %d with a digest of %d bytes", ErrMalformed, rec.Prev.Seq, len(rec.Prev.Digest))
		}
		h.Prev.Seq = rec.Prev.Seq
		copy(h.Prev.Digest[:], rec.Prev.Digest)
	}
	body, err := decodeBody(rec.Kind, rec.Version, rec.Body, h)
	if err != nil {
		return Event{}, fmt.Errorf("events: decode event: %w", err)
	}
	e := Event{Aggregate: rec.Aggregate, Position: rec.Position, Time: rec.Time, Body: body, Prev: h.Prev}
	if _, _, err := checkEvent(e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return e, nil
}
