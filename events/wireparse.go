package events

import (
	"encoding/binary"
	"time"
)

// Reading what the appends of wire.go write. A record or hot body in
// exactly that layout is parsed by hand (reflection was 4 of the 10 µs a
// rebuild spent on each event); anything else (an older writer's layout,
// a field out of order, another integer width, damage) falls back to the
// reflection decoder, which decides, with its errors. TestWireParseMatchesDecoder and FuzzWireParseMatchesDecoder
// hold the parse to the decoder's result wherever the parse accepts.

// wireReader parses b from off. Any byte that is not what the layout
// expects sets bad; the values read after that are zero, and the caller
// falls back.
type wireReader struct {
	b   []byte
	off int
	bad bool
}

// done reports whether every byte was read in the expected layout.
func (r *wireReader) done() bool { return !r.bad && r.off == len(r.b) }

// take returns the next n bytes (aliasing b), or nil and bad.
func (r *wireReader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b)-r.off {
		r.bad = true
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *wireReader) byte1() byte {
	if s := r.take(1); s != nil {
		return s[0]
	}
	return 0
}

// be16, be32 and be64 read big-endian integers (zero when short).
func (r *wireReader) be16() uint16 {
	if s := r.take(2); s != nil {
		return binary.BigEndian.Uint16(s)
	}
	return 0
}

func (r *wireReader) be32() uint32 {
	if s := r.take(4); s != nil {
		return binary.BigEndian.Uint32(s)
	}
	return 0
}

func (r *wireReader) be64() uint64 {
	if s := r.take(8); s != nil {
		return binary.BigEndian.Uint64(s)
	}
	return 0
}

// expect reads the codes in want, or sets bad.
func (r *wireReader) expect(want ...byte) {
	if s := r.take(len(want)); s != nil && string(s) != string(want) {
		r.bad = true
	}
}

// key reads a map key, which the appends write as a fixstr.
func (r *wireReader) key(name string) {
	if s := r.take(1 + len(name)); s != nil && (s[0] != mpFixStr|byte(len(name)) || string(s[1:]) != name) {
		r.bad = true
	}
}

// strLen reads the header of a str in any of its forms.
func (r *wireReader) strLen() int {
	switch c := r.byte1(); {
	case c&0xe0 == mpFixStr:
		return int(c & 0x1f)
	case c == mpStr8:
		return int(r.byte1())
	case c == mpStr16:
		return int(r.be16())
	case c == mpStr32:
		return int(r.be32())
	}
	r.bad = true
	return 0
}

// strBytes reads a str and returns its bytes, aliasing b.
func (r *wireReader) strBytes() []byte { return r.take(r.strLen()) }

func (r *wireReader) str() string { return string(r.strBytes()) }

// bin reads a bin (a copy, non-nil even when empty) or nil, as the
// decoder does into a []byte.
func (r *wireReader) bin() []byte {
	var n int
	switch c := r.byte1(); c {
	case mpNil:
		return nil
	case mpBin8:
		n = int(r.byte1())
	case mpBin16:
		n = int(r.be16())
	case mpBin32:
		n = int(r.be32())
	default:
		r.bad = true
		return nil
	}
	s := r.take(n)
	if s == nil {
		return nil
	}
	return append(make([]byte, 0, n), s...)
}

func (r *wireReader) bool() bool {
	switch r.byte1() {
	case mpTrue:
		return true
	case mpFalse:
	default:
		r.bad = true
	}
	return false
}

func (r *wireReader) uint16() uint16 {
	r.expect(mpUint16)
	return r.be16()
}

func (r *wireReader) uint32() uint32 {
	r.expect(mpUint32)
	return r.be32()
}

func (r *wireReader) uint64() uint64 {
	r.expect(mpUint64)
	return r.be64()
}

// time reads the timestamp extension as the decoder does (time.Unix of
// its fields), in UTC as decodeStrict leaves every time.
func (r *wireReader) time() time.Time {
	var sec, nsec int64
	switch c := r.byte1(); c {
	case mpFixExt4:
		r.expect(mpTimeExt)
		sec = int64(r.be32())
	case mpFixExt8:
		r.expect(mpTimeExt)
		data := r.be64()
		sec, nsec = int64(data&(1<<34-1)), int64(data>>34)
	case mpExt8:
		r.expect(12, mpTimeExt)
		nsec = int64(r.be32())
		sec = int64(r.be64())
	default:
		r.bad = true
	}
	if r.bad {
		return time.Time{}
	}
	return time.Unix(sec, nsec).UTC()
}

// aggregateType returns the catalogue's AggregateType spelled s, without
// allocating, or a new string for one it does not know.
func aggregateType(s []byte) AggregateType {
	for _, t := range [...]AggregateType{AggGroup, AggDelivery, AggKeyPackage, AggInstallation} {
		if string(t) == string(s) {
			return t
		}
	}
	return AggregateType(s)
}

// parseRecord parses a record in appendRecord's layout. ok is false for
// anything else, which the reflection decoder is to read instead. The
// body aliases data.
func parseRecord(data []byte) (rec wireRecord, ok bool) {
	r := wireReader{b: data}
	c := r.byte1()
	if c != mpFixMap|6 && c != mpFixMap|7 {
		return wireRecord{}, false
	}
	r.key("kind")
	kind := r.strBytes()
	if spec, known := byKind[Kind(kind)]; known {
		rec.Kind = spec.info.Kind // the catalogue's string: no allocation
	} else {
		rec.Kind = Kind(kind)
	}
	r.key("version")
	rec.Version = r.uint16()
	r.key("aggregate")
	r.expect(mpFixMap | 3)
	r.key("installation")
	rec.Aggregate.Installation = InstallationID(r.str())
	r.key("type")
	rec.Aggregate.Type = aggregateType(r.strBytes())
	r.key("id")
	rec.Aggregate.ID = r.str()
	r.key("position")
	rec.Position = r.uint64()
	r.key("time")
	rec.Time = r.time()
	r.key("body")
	if r.bad {
		return wireRecord{}, false
	}
	end, err := msgpackValueEnd(data, r.off)
	if err != nil {
		return wireRecord{}, false
	}
	rec.Body = r.take(end - r.off)
	if c == mpFixMap|7 {
		r.key("prev")
		r.expect(mpFixArray | 2)
		rec.Prev = &wireLink{Seq: r.uint64(), Digest: r.bin()}
	}
	if !r.done() {
		return wireRecord{}, false
	}
	return rec, true
}

// bodyParser is a body that parses its own appendMsgpack layout: ok
// false for anything else.
type bodyParser interface {
	parseMsgpack(data []byte) (b Body, ok bool)
}

func (ApplicationMessageSent) parseMsgpack(data []byte) (Body, bool) {
	var m ApplicationMessageSent
	r := wireReader{b: data}
	m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData = parseAppMessage(&r, 8)
	r.key("message")
	m.Message = r.bin()
	return m, r.done()
}

func (ApplicationMessageReceived) parseMsgpack(data []byte) (Body, bool) {
	var m ApplicationMessageReceived
	r := wireReader{b: data}
	m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData = parseAppMessage(&r, 9)
	r.key("generation")
	m.Generation = r.uint32()
	r.key("generation_known")
	m.GenerationKnown = r.bool()
	return m, r.done()
}

// parseAppMessage reads the map header of a body of n fields and the
// fields appendAppMessage writes.
func parseAppMessage(r *wireReader, n byte) (groupID []byte, epoch uint64, senderLeaf uint32, sender InstallationID, messageID []byte, content Secret, ad []byte) {
	r.expect(mpFixMap | n)
	r.key("group_id")
	groupID = r.bin()
	r.key("epoch")
	epoch = r.uint64()
	r.key("sender_leaf")
	senderLeaf = r.uint32()
	r.key("sender")
	sender = InstallationID(r.str())
	r.key("message_id")
	messageID = r.bin()
	r.key("content")
	content = NewSecret(r.bin())
	r.key("authenticated_data")
	ad = r.bin()
	return
}

func (DeliveryEnqueued) parseMsgpack(data []byte) (Body, bool) {
	var d DeliveryEnqueued
	r := wireReader{b: data}
	d.Recipient, d.Channel = parseDeliveryHead(&r, 6)
	r.key("sequence")
	d.Sequence = r.uint64()
	r.key("payload")
	d.Payload = r.bin()
	r.key("expires_at")
	d.ExpiresAt = r.time()
	r.key("idempotency_key")
	d.IdempotencyKey = r.str()
	return d, r.done()
}

func (DeliveryAcknowledged) parseMsgpack(data []byte) (Body, bool) {
	var d DeliveryAcknowledged
	r := wireReader{b: data}
	d.Recipient, d.Channel = parseDeliveryHead(&r, 3)
	r.key("up_to")
	d.UpTo = r.uint64()
	return d, r.done()
}

func (DeliveryExpired) parseMsgpack(data []byte) (Body, bool) {
	var d DeliveryExpired
	r := wireReader{b: data}
	d.Recipient, d.Channel = parseDeliveryHead(&r, 4)
	r.key("sequence")
	d.Sequence = r.uint64()
	r.key("expires_at")
	d.ExpiresAt = r.time()
	return d, r.done()
}

func parseDeliveryHead(r *wireReader, n int) (recipient InstallationID, channel string) {
	r.expect(mpFixMap | byte(n))
	r.key("recipient")
	recipient = InstallationID(r.str())
	r.key("channel")
	return recipient, r.str()
}
