package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackMux publishes messages whose PubAcks AppendBulk waits for later, and
// matches each PubAck to its publish: one wildcard reply subscription per
// Log, a reply subject per publish.
//
// It does for AppendBulk what nats.go's PublishMsgAsync did, for less CPU
// per event (docs/benchmarks.md, "PubAcks matched by the Log"): no timer
// per publish (the waiter bounds its own wait), no pair of channels per
// future, and the usual PubAck parsed by hand instead of by encoding/json.
// What it keeps: every publish in flight when the connection is lost
// fails at once with nats.ErrDisconnected (nats.ErrConnectionClosed on
// Close); a reply saying that no stream answered is
// jetstream.ErrNoStreamResponse; a refusal is the server's
// *jetstream.APIError; a wait that ends unanswered is
// jetstream.ErrAsyncPublishTimeout; anything unreadable is
// jetstream.ErrInvalidJSAck: the errors isRace, Unanswered and retryReason
// already sort.
type ackMux struct {
	slots chan struct{} // one per publish in flight: bounds them all, whatever the callers

	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string // reply subjects are prefix + token (base 36)
	next    uint64 // the next token
	pending map[uint64]*pendingAck
	reply   []byte // where the next reply subject is built
}

// pendingAck is one publish's outcome: done is closed when it is known.
type pendingAck struct {
	tok   uint64
	done  chan struct{}
	seq   uint64
	dup   bool
	count int // of a batch commit's PubAck (0: not said)
	err   error
}

// newAckMux bounds the publishes in flight at maxPending across every
// caller, as nats.go's WithPublishAsyncMaxPending did.
func newAckMux(maxPending int) *ackMux {
	return &ackMux{slots: make(chan struct{}, maxPending), pending: map[uint64]*pendingAck{}}
}

// publish sends m on nc with a reply subject of its own, and readies pa
// (the caller's, zero or settled) for its PubAck to settle. A free slot is
// waited for at most stall. A publish that was not sent returns its
// error, and pa is not to be waited for.
func (a *ackMux) publish(nc *nats.Conn, m *nats.Msg, stall time.Duration, pa *pendingAck) error {
	select {
	case a.slots <- struct{}{}:
	default:
		t := time.NewTimer(stall)
		defer t.Stop()
		select {
		case a.slots <- struct{}{}:
		case <-t.C:
			return fmt.Errorf("%w: %d publishes in flight for %v", jetstream.ErrTooManyStalledMsgs, cap(a.slots), stall)
		}
	}
	a.mu.Lock()
	if a.sub == nil {
		if err := a.subscribeLocked(nc); err != nil {
			a.mu.Unlock()
			<-a.slots
			return err
		}
	}
	*pa = pendingAck{tok: a.next, done: make(chan struct{})}
	a.next++
	a.pending[pa.tok] = pa
	a.reply = strconv.AppendUint(append(a.reply[:0], a.prefix...), pa.tok, 36)
	m.Reply = string(a.reply)
	a.mu.Unlock()
	if err := nc.PublishMsg(m); err != nil {
		if a.take(pa.tok) == pa {
			<-a.slots // not settled: nobody else frees its slot
		}
		return err
	}
	return nil
}

// subscribeLocked subscribes to the replies, on first use. The prefix is
// an inbox of the connection's own (its InboxPrefix honoured), apart from
// the request/reply mux's.
func (a *ackMux) subscribeLocked(nc *nats.Conn) error {
	a.prefix = nc.NewInbox() + "." // before handle can run: it reads prefix unlocked
	sub, err := nc.Subscribe(a.prefix+"*", a.handle)
	if err != nil {
		return fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	a.sub = sub
	return nil
}

// take removes and returns the publish waiting on tok, nil if none (it
// was answered, given up or failed already).
func (a *ackMux) take(tok uint64) *pendingAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	pa := a.pending[tok]
	if pa != nil {
		delete(a.pending, tok)
	}
	return pa
}

// settle records pa's outcome and frees its slot; the caller has taken
// pa out of pending, so it runs once per publish. The slot is freed
// before done is closed: whoever sees the outcome sees the slot free too
// (TestAckMuxBounds counted a settled publish's slot still taken).
func (a *ackMux) settle(pa *pendingAck, seq uint64, dup bool, count int, err error) {
	pa.seq, pa.dup, pa.count, pa.err = seq, dup, count, err
	<-a.slots
	close(pa.done)
}

// handle is the reply subscription's handler.
func (a *ackMux) handle(m *nats.Msg) {
	if len(m.Subject) <= len(a.prefix) {
		return
	}
	tok, err := strconv.ParseUint(m.Subject[len(a.prefix):], 36, 64)
	if err != nil {
		return // not a reply of ours
	}
	pa := a.take(tok)
	if pa == nil {
		return // late: its waiter gave up, or the connection was lost
	}
	seq, dup, count, err := parsePubAck(m)
	a.settle(pa, seq, dup, count, err)
}

// giveUp settles pa with err unless it was settled already; a PubAck
// arriving later is dropped.
func (a *ackMux) giveUp(pa *pendingAck, err error) {
	if a.take(pa.tok) == pa {
		a.settle(pa, 0, false, 0, err)
	}
	<-pa.done // settled by us, or being settled by handle or failAll
}

// failAll fails every publish in flight with err: the connection was lost
// or closed, and their PubAcks with it. (A publish made while the
// connection reconnects is buffered by nats.go and answered after.)
func (a *ackMux) failAll(err error) {
	a.mu.Lock()
	failed := a.pending
	a.pending = map[uint64]*pendingAck{}
	a.mu.Unlock()
	for _, pa := range failed {
		a.settle(pa, 0, false, 0, err)
	}
}

// wait waits for pa's outcome until deadline (a wait that ends then is
// settled with jetstream.ErrAsyncPublishTimeout, as nats.go's own timeout
// was) or until cancel is closed (it then returns false). t is the
// caller's timer, reused from wait to wait.
func (a *ackMux) wait(pa *pendingAck, deadline time.Time, t *time.Timer, cancel <-chan struct{}) bool {
	select {
	case <-pa.done:
		return true
	default:
	}
	t.Reset(time.Until(deadline))
	defer t.Stop()
	select {
	case <-pa.done:
		return true
	case <-t.C:
		a.giveUp(pa, jetstream.ErrAsyncPublishTimeout)
		return true
	case <-cancel:
		a.giveUp(pa, context.Canceled)
		return false
	}
}

// pubAckOK is the prefix of every successful PubAck nats-server writes.
var pubAckOK = []byte(`{"stream":"`)

// parsePubAck reads a PubAck: the server's usual answer by hand, anything
// else through encoding/json. count is a batch commit's count of
// messages (0 when the PubAck says none).
func parsePubAck(m *nats.Msg) (seq uint64, dup bool, count int, err error) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return 0, false, 0, jetstream.ErrNoStreamResponse
	}
	if seq, dup, ok := parsePubAckFast(m.Data); ok {
		return seq, dup, 0, nil
	}
	var r struct {
		Error     *jetstream.APIError `json:"error,omitempty"`
		Stream    string              `json:"stream"`
		Sequence  uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate,omitempty"`
		Count     int                 `json:"count,omitempty"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return 0, false, 0, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return 0, false, 0, r.Error
	}
	if r.Stream == "" {
		return 0, false, 0, jetstream.ErrInvalidJSAck
	}
	return r.Sequence, r.Duplicate, r.Count, nil
}

// parsePubAckFast parses exactly {"stream":"<name>","seq":<n>} and
// {"stream":"<name>","seq":<n>,"duplicate":true}; ok is false for any
// other bytes (an error, a domain, a batch's fields), which the caller
// decodes in full.
func parsePubAckFast(b []byte) (seq uint64, dup bool, ok bool) {
	if !bytes.HasPrefix(b, pubAckOK) {
		return 0, false, false
	}
	rest := b[len(pubAckOK):]
	q := 0 // the stream's name: printable ASCII, nothing JSON escapes
	for q < len(rest) && rest[q] > ' ' && rest[q] < 0x7f && rest[q] != '"' && rest[q] != '\\' {
		q++
	}
	if q == 0 || q == len(rest) || rest[q] != '"' {
		return 0, false, false
	}
	rest, ok = bytes.CutPrefix(rest[q:], []byte(`","seq":`))
	if !ok {
		return 0, false, false
	}
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || (n > 1 && rest[0] == '0') {
		return 0, false, false
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	if err != nil {
		return 0, false, false
	}
	switch string(rest[n:]) {
	case "}":
		return seq, false, true
	case `,"duplicate":true}`:
		return seq, true, true
	}
	return 0, false, false
}
