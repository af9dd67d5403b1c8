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
	mpFalse    = 0xc2
	mpTrue     = 0xc3
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
func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

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
	b = appendAppMessage(b, 8, m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData)
	b = appendStr(b, "message")
	return appendBin(b, m.Message)
}

func (m ApplicationMessageReceived) appendMsgpack(b []byte) []byte {
	b = appendAppMessage(b, 9, m.GroupID, m.Epoch, m.SenderLeaf, m.Sender, m.MessageID, m.Content, m.AuthenticatedData)
	b = appendStr(b, "generation")
	b = appendUint32(b, m.Generation)
	b = appendStr(b, "generation_known")
	return appendBool(b, m.GenerationKnown)
}

// appendAppMessage writes the map header of a body of n fields and the
// fields ApplicationMessageSent and ApplicationMessageReceived share, in
// their order.
func appendAppMessage(b []byte, n int, groupID []byte, epoch uint64, senderLeaf uint32, sender InstallationID, messageID []byte, content Secret, ad []byte) []byte {
	b = appendMapLen(b, n)
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
	b = appendBin(b, content.Bytes())
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
