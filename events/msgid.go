package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The message id format. The digest input's bytes are a stored format: a
// writer compares ids with those of events written by earlier versions
// (and the server deduplicates on them), so they must never change.
//
//	id    = position "-" token
//	token = base32(HMAC-SHA256(key, aggregate pseudonym || input)[:16])
//	key   = the bytes of Keyring.Pseudonym("engine", "message id key")
//	input = msgpack array of 6: kind (str), schema version (uint16),
//	        aggregate (map of installation, type, id, in that order),
//	        position (uint64), time (timestamp; Unix 0 for a zero time),
//	        body (its msgpack encoding, the bytes sealed)
//
// with position in decimal and base32 lowercase (a-z2-7) without padding.
const msgIDTokenSize = 16 // bytes of the MAC kept

var msgIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// unsetTime stands in for a zero Event.Time in message ids, so that a
// retry of an append that let the writer pick the time has the same id.
var unsetTime = time.Unix(0, 0).UTC()

// MessageIDs seals events together with their message ids: deterministic,
// keyed ids that a writer sends as the JetStream Nats-Msg-Id, so that the
// server drops a repeated publish and a writer retrying an append can
// recognise its events on the stream.
//
// An id is "<position>-<token>": the event's position in decimal, and 26
// characters of lowercase base32 (a-z, 2-7) of 16 bytes of an HMAC-SHA256
// of the event's kind, schema version, aggregate, position, time and body,
// and of the aggregate's pseudonym; it does not depend on the envelope's
// nonce or key id. It is keyed by the ring's pseudonym key, so whoever
// reads the stream cannot test a guess of an event's content against it;
// the position in clear repeats what the subject's message count already
// shows. A MessageIDs is safe for concurrent use.
type MessageIDs struct {
	r      *Keyring
	states sync.Pool // of *msgIDState
}

// NewMessageIDs returns a MessageIDs that seals with r and keys ids with a
// key derived from r's pseudonym key, read now: like pseudonyms, ids
// survive key rotation (see the caveats in the package doc).
func NewMessageIDs(r *Keyring) (*MessageIDs, error) {
	if r == nil {
		return nil, errors.New("events: message ids: nil keyring")
	}
	key := r.Pseudonym("engine", "message id key") // labels fixed by the format
	if key == "" {
		return nil, errors.New("events: message ids: keyring has no key")
	}
	m := &MessageIDs{r: r}
	k := []byte(key)
	m.states.New = func() any { return newMsgIDState(k) }
	return m, nil
}

// Seal is [Seal] under the keyring of m that also returns e's message id;
// the body is encoded once for both. aggPseudonym is the pseudonym the
// writer names e's aggregate by (a writer appending to another
// aggregate's subject gets other ids).
//
// A zero e.Time is sealed as now but digested as unset, so sealing the same
// event again with another now gives the same id (and another envelope:
// every seal draws a fresh nonce).
func (m *MessageIDs) Seal(b Binding, aggPseudonym string, e Event, now time.Time) (id string, envelope []byte, err error) {
	return m.seal(sealer{r: m.r}, b, aggPseudonym, e, now)
}

// SealData is [MessageIDs.Seal] under the data key k named id (envelope
// format 3; see [SealData]). The message id does not depend on the key:
// sealing the same event under another key gives the same id.
func (m *MessageIDs) SealData(k DataKey, kid DataKeyID, b Binding, aggPseudonym string, e Event, now time.Time) (id string, envelope []byte, err error) {
	return m.seal(sealer{dk: k, id: kid}, b, aggPseudonym, e, now)
}

func (m *MessageIDs) seal(sk sealer, b Binding, aggPseudonym string, e Event, now time.Time) (id string, envelope []byte, err error) {
	digestTime := e.Time
	if e.Time.IsZero() {
		digestTime = unsetTime
		e.Time = now
	}
	spec, body, err := checkEvent(e)
	if err != nil {
		return "", nil, fmt.Errorf("events: seal: %w", err)
	}
	k, v := spec.info.Kind, spec.info.Version
	s := m.states.Get().(*msgIDState)
	defer m.states.Put(s)
	s.begin(aggPseudonym, k, v, e.Aggregate, e.Position, digestTime)
	// The seal writes the body's encoding into the MAC: the sixth element.
	envelope, err = sealTo(sk, b, e.Aggregate.Installation, k, v, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time, Prev: e.Prev}, body, s.mac)
	if err != nil {
		return "", nil, err
	}
	return s.id(e.Position), envelope, nil
}

// MessageIDPosition returns the position a message id starts with, and
// false when id does not start with a positive decimal position and a
// hyphen. It reads only that prefix: to tell whether a message holds a
// given event, compare the whole id.
func MessageIDPosition(id string) (position uint64, ok bool) {
	p, _, ok := strings.Cut(id, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(p, 10, 64)
	return n, err == nil && n > 0
}

// msgIDState is a reusable keyed hash, with the buffer the digest input's
// first elements are encoded into (reused, so deriving an id allocates only
// the id once warm).
type msgIDState struct {
	mac hash.Hash
	buf []byte
	sum []byte
}

func newMsgIDState(key []byte) *msgIDState {
	return &msgIDState{mac: hmac.New(sha256.New, key)}
}

// begin resets the MAC and writes the aggregate pseudonym and the digest
// input up to the body, which is to be written next: a msgpack array of
// six whose first five elements each have a fixed msgpack type,
// independent of any encoder's options.
func (s *msgIDState) begin(aggPseudonym string, k Kind, version uint16, agg Aggregate, position uint64, t time.Time) {
	b := append(s.buf[:0], aggPseudonym...)
	b = appendArrayLen(b, 6)
	b = appendStr(b, string(k))
	b = appendUint16(b, version)
	b = appendAggregate(b, agg)
	b = appendUint64(b, position)
	b = appendTime(b, t)
	s.mac.Reset()
	s.mac.Write(b)
	clear(b) // ids and time of the caller's event: keep no copy
	s.buf = b
}

// id finishes the digest and formats the id of the event at position.
func (s *msgIDState) id(position uint64) string {
	s.sum = s.mac.Sum(s.sum[:0])
	var buf [20 + 1 + 26]byte // max uint64, "-", token
	out := strconv.AppendUint(buf[:0], position, 10)
	out = append(out, '-')
	out = msgIDEncoding.AppendEncode(out, s.sum[:msgIDTokenSize])
	return string(out)
}
