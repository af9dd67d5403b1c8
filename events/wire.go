package events

import (
	"encoding/binary"
	"math"
	"time"
)

// The msgpack encoding of what every seal writes, by hand. Sealing encoded
// the record (and the hot bodies) by reflection, about a third of a seal's
// CPU at 256 bytes. These functions write the bytes msgpack v5's Encoder
// writes with this package's options (no compact ints, no interned
// strings), so the plaintext, and with it every message id, is unchanged:
// TestWireMatchesMsgpack and FuzzWireMatchesMsgpack hold them to the
// library on random values, and fail when a body gains a field its
// appendMsgpack does not write.

// The msgpack codes used here (msgpack spec, "formats").
const (
	mpNil      = 0xc0
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpFixExt4  = 0xd6
	mpFixExt8  = 0xd7
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpMap16    = 0xde
	mpMap32    = 0xdf
	mpFixMap   = 0x80
	mpFixArray = 0x90
	mpFixStr   = 0xa0
	mpTimeExt  = 0xff // extension type -1: timestamp
)

// bodyAppender is a body with a hand-written encoding: appendMsgpack
// appends exactly what msgpack.Marshal of the body writes. Bodies without
// one are encoded by reflection.
type bodyAppender interface {
	appendMsgpack(b []byte) []byte
}

func appendMapLen(b []byte, n int) []byte {
	return appendContainerLen(b, n, mpFixMap, mpMap16, mpMap32)
}

func appendArrayLen(b []byte, n int) []byte {
	return appendContainerLen(b, n, mpFixArray, mpArray16, mpArray32)
}

// appendContainerLen writes the header of a map or an array of n
// elements: the fix form below 16, then 16 and 32 bits.
func appendContainerLen(b []byte, n int, fix, c16, c32 byte) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, c16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, c32), uint32(n))
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, mpFixStr|byte(n))
	case n < 256:
		b = append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpStr16), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	}
	return append(b, s...)
}

// appendBin writes v as bin, or nil when v is nil (an empty, non-nil
// slice is an empty bin), as msgpack's EncodeBytes.
func appendBin(b, v []byte) []byte {
	if v == nil {
		return append(b, mpNil)
	}
	switch n := len(v); {
	case n < 256:
		b = append(b, mpBin8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpBin16), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpBin32), uint32(n))
	}
	return append(b, v...)
}

// appendUint16/32/64 keep the type's width, as the Encoder without
// compact ints does.
func appendUint16(b []byte, v uint16) []byte {
	return binary.BigEndian.AppendUint16(append(b, mpUint16), v)
}

func appendUint32(b []byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, mpUint32), v)
}

func appendUint64(b []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

// appendTime writes t as the timestamp extension in its shortest of the
// three forms, as msgpack's EncodeTime (the zero time takes the 12-byte
// form: its seconds are negative).
func appendTime(b []byte, t time.Time) []byte {
	secs := uint64(t.Unix())
	if secs>>34 == 0 {
		data := uint64(t.Nanosecond())<<34 | secs
		if data&0xffffffff00000000 == 0 {
			return binary.BigEndian.AppendUint32(append(b, mpFixExt4, mpTimeExt), uint32(data))
		}
		return binary.BigEndian.AppendUint64(append(b, mpFixExt8, mpTimeExt), data)
	}
	b = append(b, mpExt8, 12, mpTimeExt)
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	return binary.BigEndian.AppendUint64(b, secs)
}

// appendAggregate writes a as msgpack writes the Aggregate struct.
func appendAggregate(b []byte, a Aggregate) []byte {
	b = appendMapLen(b, 3)
	b = appendStr(b, "installation")
	b = appendStr(b, string(a.Installation))
	b = appendStr(b, "type")
	b = appendStr(b, string(a.Type))
	b = appendStr(b, "id")
	return appendStr(b, a.ID)
}

// appendRecord appends the wireRecord of an event: its header, and body,
// the body's msgpack bytes, written as they are.
func appendRecord(b []byte, k Kind, version uint16, h eventHeader, body []byte) []byte {
	n := 6
	if !h.Prev.IsZero() {
		n = 7
	}
	b = appendMapLen(b, n)
	b = appendStr(b, "kind")
	b = appendStr(b, string(k))
	b = appendStr(b, "version")
	b = appendUint16(b, version)
	b = appendStr(b, "aggregate")
	b = appendAggregate(b, h.Aggregate)
	b = appendStr(b, "position")
	b = appendUint64(b, h.Position)
	b = appendStr(b, "time")
	b = appendTime(b, h.Time)
	b = appendStr(b, "body")
	if body == nil {
		b = append(b, mpNil) // msgpack.RawMessage(nil)
	} else {
		b = append(b, body...)
	}
	if n == 7 {
		b = appendStr(b, "prev")
		b = appendArrayLen(b, 2)
		b = appendUint64(b, h.Prev.Seq)
		b = appendBin(b, h.Prev.Digest[:])
	}
	return b
}

func (m ApplicationMessageSent) appendMsgpack(b []byte) []byte {
	return appendAppMessage(b, m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData)
}

func (m ApplicationMessageReceived) appendMsgpack(b []byte) []byte {
	return appendAppMessage(b, m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData)
}

// appendAppMessage writes the fields ApplicationMessageSent and
// ApplicationMessageReceived share, in their order.
func appendAppMessage(b, groupID []byte, epoch uint64, senderLeaf uint32, sender InstallationID, messageID []byte, content Secret, ad []byte) []byte {
	b = appendMapLen(b, 7)
	b = appendStr(b, "group_id")
	b = appendBin(b, groupID)
	b = appendStr(b, "epoch")
	b = appendUint64(b, epoch)
	b = appendStr(b, "sender_leaf")
	b = appendUint32(b, senderLeaf)
	b = appendStr(b, "sender")
	b = appendStr(b, string(sender))
	b = appendStr(b, "message_id")
	b = appendBin(b, messageID)
	b = appendStr(b, "content")
	b = appendBin(b, content)
	b = appendStr(b, "authenticated_data")
	return appendBin(b, ad)
}

func (d DeliveryEnqueued) appendMsgpack(b []byte) []byte {
	b = appendDeliveryHead(b, 6, d.Recipient, d.Channel)
	b = appendStr(b, "sequence")
	b = appendUint64(b, d.Sequence)
	b = appendStr(b, "payload")
	b = appendBin(b, d.Payload)
	b = appendStr(b, "expires_at")
	b = appendTime(b, d.ExpiresAt)
	b = appendStr(b, "idempotency_key")
	return appendStr(b, d.IdempotencyKey)
}

func (d DeliveryAcknowledged) appendMsgpack(b []byte) []byte {
	b = appendDeliveryHead(b, 3, d.Recipient, d.Channel)
	b = appendStr(b, "up_to")
	return appendUint64(b, d.UpTo)
}

func (d DeliveryExpired) appendMsgpack(b []byte) []byte {
	b = appendDeliveryHead(b, 4, d.Recipient, d.Channel)
	b = appendStr(b, "sequence")
	b = appendUint64(b, d.Sequence)
	b = appendStr(b, "expires_at")
	return appendTime(b, d.ExpiresAt)
}

// appendDeliveryHead writes the map header of a delivery body of n fields
// and the two fields every delivery body starts with.
func appendDeliveryHead(b []byte, n int, recipient InstallationID, channel string) []byte {
	b = appendMapLen(b, n)
	b = appendStr(b, "recipient")
	b = appendStr(b, string(recipient))
	b = appendStr(b, "channel")
	return appendStr(b, channel)
}

// The other direction: reading what the appends above write. A record or
// hot body in exactly that layout is parsed by hand; anything else (an
// older writer's layout, a field out of order, another integer width,
// damage) falls back to the reflection decoder, which decides, with its
// errors. TestWireParseMatchesDecoder and FuzzWireParseMatchesDecoder
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
	m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData = parseAppMessage(&r)
	return m, r.done()
}

func (ApplicationMessageReceived) parseMsgpack(data []byte) (Body, bool) {
	var m ApplicationMessageReceived
	r := wireReader{b: data}
	m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData = parseAppMessage(&r)
	return m, r.done()
}

func parseAppMessage(r *wireReader) (groupID []byte, epoch uint64, senderLeaf uint32, sender InstallationID, messageID []byte, content Secret, ad []byte) {
	r.expect(mpFixMap | 7)
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
	content = r.bin()
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
