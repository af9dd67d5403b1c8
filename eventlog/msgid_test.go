package eventlog

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/vmihailenco/msgpack/v5"
)

func TestMsgIDDeterministicAndKeyed(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "ids")
	s, err := l.aggSubject(agg)
	if err != nil {
		t.Fatal(err)
	}
	id := func(l *Log, e events.Event) string {
		t.Helper()
		v, _, err := l.sealWithID(s, e, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	e := msg(agg, 3, "hello")
	first := id(l, e)
	if !strings.HasPrefix(first, "3-") || len(first) != len("3-")+26 {
		t.Fatalf("message id %q, want 3-<26 base32 chars>", first)
	}
	// Stable across calls, also after a huge event recycled the buffer.
	big := msg(agg, 3, strings.Repeat("x", 100<<10))
	id(l, big)
	if again := id(l, e); again != first {
		t.Fatalf("message id changed: %s then %s", first, again)
	}
	// The time's location does not matter; its instant does.
	local := e
	local.Time = e.Time.In(time.FixedZone("X", 3600))
	if id(l, local) != first {
		t.Fatal("message id depends on the time's location")
	}
	for name, other := range map[string]events.Event{
		"content":  msg(agg, 3, "hellp"),
		"position": msg(agg, 4, "hello"),
		"time":     func() events.Event { o := e; o.Time = o.Time.Add(time.Nanosecond); return o }(),
	} {
		if id(l, other) == first {
			t.Errorf("message id ignores the %s", name)
		}
	}
	// Keyed: another ring gives another id for the same event.
	srv2 := natstestStart(t)
	l2 := openLog(t, testConfig(srv2), keyring(t, 1, 0x22))
	if id(l2, e) == first {
		t.Fatal("message id does not depend on the key")
	}
}

// referenceMsgID is a message id computed the direct way: the whole event
// record, body included, msgpack-encoded in one go. sealWithID digests the
// body's bytes from the seal instead; the ids must be the same, or appends
// retried across an upgrade would no longer be recognised.
func referenceMsgID(t *testing.T, l *Log, aggPseudo string, e events.Event) string {
	t.Helper()
	type record struct {
		//lint:ignore U1000 read by msgpack through its tag: encode as an array
		_msgpack  struct{} `msgpack:",as_array"`
		Kind      events.Kind
		Version   uint16
		Aggregate events.Aggregate
		Position  uint64
		Time      time.Time
		Body      events.Body
	}
	if e.Time.IsZero() {
		e.Time = unsetTime
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(&record{Kind: e.Body.Kind(), Version: e.Body.SchemaVersion(), Aggregate: e.Aggregate,
		Position: e.Position, Time: e.Time.UTC(), Body: e.Body}); err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(l.keys.Pseudonym("engine", "message id key")))
	mac.Write([]byte(aggPseudo))
	mac.Write(buf.Bytes())
	return strconv.FormatUint(e.Position, 10) + "-" + msgIDEncoding.EncodeToString(mac.Sum(nil)[:16])
}

func TestMsgIDDigestsTheWholeEvent(t *testing.T) {
	l, _ := newLog(t)
	grp := group(instA, "ids")
	evs := []events.Event{
		msg(grp, 1, ""),
		msg(grp, 7, "hello"),
		msg(grp, 1<<40, strings.Repeat("x", 100<<10)),
		func() events.Event { e := msg(grp, 2, "no time"); e.Time = time.Time{}; return e }(),
		func() events.Event {
			e := msg(grp, 3, "zoned")
			e.Time = e.Time.In(time.FixedZone("X", -7200))
			return e
		}(),
		{Aggregate: events.Aggregate{Installation: instA, Type: events.AggDelivery, ID: "q"}, Position: 4, Time: baseTime,
			Body: events.DeliveryEnqueued{Recipient: instB, Channel: "c", Sequence: 9, Payload: []byte{1, 2, 3}, ExpiresAt: baseTime.Add(time.Hour), IdempotencyKey: "k"}},
	}
	for i, e := range evs {
		as, err := l.aggSubject(e.Aggregate)
		if err != nil {
			t.Fatal(err)
		}
		got, env, err := l.sealWithID(as, e, time.Now())
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := referenceMsgID(t, l, as.pseudo, e); got != want {
			t.Errorf("event %d (%s at %d): id %s, the whole record digests to %s", i, e.Body.Kind(), e.Position, got, want)
		}
		// The envelope is the event, with a zero time set.
		opened, err := events.Open(l.keys, e.Aggregate.Installation, l.binding(as.subject), env)
		if err != nil {
			t.Fatalf("event %d: open: %v", i, err)
		}
		if opened.Position != e.Position || opened.Time.IsZero() || (!e.Time.IsZero() && !opened.Time.Equal(e.Time)) {
			t.Errorf("event %d: sealed position %d time %v, want position %d time %v", i, opened.Position, opened.Time, e.Position, e.Time)
		}
	}
}
