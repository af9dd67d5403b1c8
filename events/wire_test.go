package events

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// wireLens are the lengths at which msgpack's str, bin, array and map
// headers change form, with their neighbours.
var wireLens = []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536}

// wireTimes are times at each of the timestamp extension's three forms and
// their edges.
var wireTimes = []time.Time{
	{}, // zero: negative seconds, 12 bytes
	time.Unix(0, 0),
	time.Unix(1<<32-1, 0),           // 4 bytes, the last
	time.Unix(1<<32, 0),             // 8 bytes
	time.Unix(1<<32-1, 1),           // 8 bytes: nanoseconds
	time.Unix(1<<34-1, 999_999_999), // 8 bytes, the last
	time.Unix(1<<34, 0),             // 12 bytes
	time.Unix(-1, 5),                // 12 bytes, before 1970
	time.Date(2026, 12, 5, 20, 0, 0, 123456789, time.FixedZone("X", 3600)),
}

// fillWire sets every exported field of the struct v points to from r:
// strings, byte slices and Secrets of the lengths in wireLens (bytes nil
// sometimes), unsigned integers across their range, times from wireTimes.
// A field of another type fails the test, so that a body that gains one
// is noticed here.
func fillWire(t testing.TB, r *rand.Rand, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(wireTimes[r.IntN(len(wireTimes))]))
		case f.Kind() == reflect.String:
			f.SetString(strings.Repeat("é", wireLens[r.IntN(len(wireLens))]/2) + "x"[:r.IntN(2)])
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Uint8:
			f.SetBytes(wireBytes(r))
		case f.Type() == secretType:
			f.Set(reflect.ValueOf(NewSecret(wireBytes(r))))
		case f.CanUint():
			f.SetUint(r.Uint64() >> r.IntN(64))
		case f.Kind() == reflect.Bool:
			f.SetBool(r.IntN(2) == 1)
		default:
			t.Fatalf("fillWire: %s.%s is a %s: teach fillWire (and the body's appendMsgpack) about it", v.Type(), sf.Name, f.Type())
		}
	}
}

// wireBytes returns bytes of one of the lengths in wireLens, or nil
// (msgpack nil, not an empty bin) one time in five.
func wireBytes(r *rand.Rand) []byte {
	if r.IntN(5) == 0 {
		return nil
	}
	b := make([]byte, wireLens[r.IntN(len(wireLens))])
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return b
}

// TestWireMatchesMsgpack holds the hand-written encodings to msgpack v5's
// on random values: every body with an appendMsgpack (filled field by
// field, so a field its appendMsgpack leaves out fails), and whole records
// of every kind, with and without a link, against msgpack.Marshal of the
// wireRecord.
func TestWireMatchesMsgpack(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	appenders := 0
	for _, s := range catalogue {
		if _, ok := reflect.New(s.typ).Elem().Interface().(bodyAppender); !ok {
			continue
		}
		appenders++
		for range 200 {
			v := reflect.New(s.typ).Elem()
			fillWire(t, r, v)
			want, err := msgpack.Marshal(v.Interface())
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Interface().(bodyAppender).appendMsgpack([]byte{0xee}); !bytes.Equal(got[1:], want) || got[0] != 0xee {
				t.Fatalf("%s: appendMsgpack differs from msgpack.Marshal for %+v", s.info.Kind, v.Interface())
			}
		}
	}
	if appenders < 5 {
		t.Fatalf("%d bodies with a hand-written encoding, want the 5 of the message and delivery paths", appenders)
	}
	for k, e := range samples(testInst) {
		for i := range 40 {
			h := eventHeader{Aggregate: e.Aggregate, Position: r.Uint64() >> r.IntN(64), Time: wireTimes[i%len(wireTimes)]}
			if i%2 == 1 {
				h.Prev = Link{Seq: 1 + r.Uint64()>>1}
				h.Prev.Digest[0] = byte(i)
			}
			checkRecordWire(t, k, uint16(r.Uint32()), h, e.Body)
		}
	}
}

// checkRecordWire checks recordEncoder.encode against msgpack.Marshal of
// the wireRecord it stands for.
func checkRecordWire(t *testing.T, k Kind, version uint16, h eventHeader, body any) {
	t.Helper()
	bodyBytes, err := msgpack.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	rec := wireRecord{Kind: k, Version: version, Aggregate: h.Aggregate, Position: h.Position, Time: h.Time.UTC(), Body: bodyBytes}
	if !h.Prev.IsZero() {
		rec.Prev = &wireLink{Seq: h.Prev.Seq, Digest: h.Prev.Digest[:]}
	}
	want, err := msgpack.Marshal(&rec)
	if err != nil {
		t.Fatal(err)
	}
	re := getRecordEncoder()
	defer re.put()
	got, err := re.encode(k, version, h, body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: record encoding differs from msgpack.Marshal of the wireRecord\n got %x\nwant %x", k, got, want)
	}
}

// FuzzWireMatchesMsgpack is TestWireMatchesMsgpack's comparison on values
// the fuzzer steers: the seed of the filler, the header's position and
// time.
func FuzzWireMatchesMsgpack(f *testing.F) {
	f.Add(uint64(1), uint64(7), int64(1_700_000_000), uint32(0), uint64(0))
	f.Add(uint64(2), uint64(1)<<63, int64(-62135596800), uint32(999_999_999), uint64(9))
	f.Fuzz(func(t *testing.T, seed, position uint64, secs int64, nanos uint32, prev uint64) {
		r := rand.New(rand.NewPCG(seed, seed>>1))
		at := time.Unix(secs, int64(nanos%1_000_000_000))
		for k, e := range samples(testInst) {
			body := e.Body
			if v := reflect.New(reflect.TypeOf(body)).Elem(); reflect.PointerTo(v.Type()).Implements(reflect.TypeFor[bodyAppender]()) {
				fillWire(t, r, v)
				body = v.Interface().(Body)
			}
			checkRecordWire(t, k, body.SchemaVersion(), eventHeader{Aggregate: e.Aggregate, Position: position, Time: at, Prev: Link{Seq: prev}}, body)
		}
	})
}

// TestWireHeadersMatchMsgpack covers the header forms no body reaches
// (maps and arrays of 16 elements and more) against the Encoder's.
func TestWireHeadersMatchMsgpack(t *testing.T) {
	for _, n := range wireLens {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		if err := enc.EncodeMapLen(n); err != nil {
			t.Fatal(err)
		}
		if err := enc.EncodeArrayLen(n); err != nil {
			t.Fatal(err)
		}
		if got := appendArrayLen(appendMapLen(nil, n), n); !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("map and array headers of %d: %x, msgpack writes %x", n, got, buf.Bytes())
		}
	}
}

// parseAgrees checks the hand-written parse of data against the
// reflection decoder wherever the parse accepts: the decoder must accept
// too, with an equal result. It returns whether the parse accepted.
func parseAgrees(t *testing.T, data []byte) bool {
	t.Helper()
	accepted := false
	if rec, ok := parseRecord(data); ok {
		accepted = true
		v, err := decodeStrict[wireRecord](data)
		if err != nil {
			t.Fatalf("parseRecord accepted %x, the decoder refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(rec, v.(wireRecord)) {
			t.Fatalf("parseRecord of %x:\n%#v\nthe decoder:\n%#v", data, rec, v)
		}
	}
	for _, s := range catalogue {
		p, ok := reflect.New(s.typ).Elem().Interface().(bodyParser)
		if !ok {
			continue
		}
		b, ok := p.parseMsgpack(data)
		if !ok {
			continue
		}
		accepted = true
		v, err := s.versions[s.info.Version].decode(data) // the parse again, then:
		if err != nil || !reflect.DeepEqual(b, v) {
			t.Fatalf("%s: decode after an accepted parse: %v", s.info.Kind, err)
		}
		strict, err := decodeStrictOf(s.typ, data)
		if err != nil {
			t.Fatalf("%s: parse accepted %x, the decoder refuses it: %v", s.info.Kind, data, err)
		}
		if !reflect.DeepEqual(b, strict) {
			t.Fatalf("%s: parse of %x:\n%#v\nthe decoder:\n%#v", s.info.Kind, data, b, strict)
		}
	}
	return accepted
}

// decodeStrictOf is decodeStrict for the body type typ.
func decodeStrictOf(typ reflect.Type, data []byte) (any, error) {
	switch typ {
	case reflect.TypeFor[ApplicationMessageSent]():
		return decodeStrict[ApplicationMessageSent](data)
	case reflect.TypeFor[ApplicationMessageReceived]():
		return decodeStrict[ApplicationMessageReceived](data)
	case reflect.TypeFor[DeliveryEnqueued]():
		return decodeStrict[DeliveryEnqueued](data)
	case reflect.TypeFor[DeliveryAcknowledged]():
		return decodeStrict[DeliveryAcknowledged](data)
	case reflect.TypeFor[DeliveryExpired]():
		return decodeStrict[DeliveryExpired](data)
	}
	return nil, errors.New("decodeStrictOf: teach it " + typ.String())
}

// wireSamples returns encodings in the appends' layout: the records of
// every sample event (with and without a link) and bodies of the hot
// kinds filled at random.
func wireSamples(t testing.TB, r *rand.Rand) (records, bodies [][]byte) {
	for k, e := range samples(testInst) {
		for i := range 4 {
			// Events that UnmarshalEvent takes whole: a position and a time
			// (the zero time is read in the delivery bodies).
			h := eventHeader{Aggregate: e.Aggregate, Position: max(1, r.Uint64()>>r.IntN(64)), Time: wireTimes[1+r.IntN(len(wireTimes)-1)]}
			if i%2 == 1 {
				h.Prev = Link{Seq: 1 + r.Uint64()>>1}
			}
			plain, err := encodeRecord(k, e.Body.SchemaVersion(), h, e.Body)
			if err != nil {
				t.Fatal(err)
			}
			records = append(records, plain)
		}
	}
	for _, s := range catalogue {
		if _, ok := reflect.New(s.typ).Elem().Interface().(bodyParser); !ok {
			continue
		}
		for range 20 {
			v := reflect.New(s.typ).Elem()
			fillWire(t, r, v)
			bodies = append(bodies, v.Interface().(bodyAppender).appendMsgpack(nil))
		}
	}
	return records, bodies
}

// TestWireParseMatchesDecoder checks that what the appends write is read
// by the hand-written parse (not silently by the fallback), to what the
// reflection decoder reads; and that the parse refuses, for the fallback,
// each of those encodings cut short or with a byte changed wherever the
// result would differ.
func TestWireParseMatchesDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	records, bodies := wireSamples(t, r)
	for _, data := range append(records, bodies...) {
		if !parseAgrees(t, data) {
			t.Fatalf("the parse refused an encoding in the appends' own layout: %x", data)
		}
		for range 64 {
			parseAgrees(t, data[:r.IntN(len(data))])
		}
		for range 64 {
			m := bytes.Clone(data)
			m[r.IntN(len(m))] ^= byte(1 + r.IntN(255))
			parseAgrees(t, m)
		}
	}
	for _, data := range records {
		e, err := UnmarshalEvent(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := MarshalEvent(e); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzWireParseMatchesDecoder is TestWireParseMatchesDecoder's property
// on any bytes: wherever the hand-written parse accepts, the decoder
// accepts the same value.
func FuzzWireParseMatchesDecoder(f *testing.F) {
	records, bodies := wireSamples(f, rand.New(rand.NewPCG(5, 6)))
	for _, d := range append(records, bodies...) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) { parseAgrees(t, data) })
}
