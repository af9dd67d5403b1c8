package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
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
		v, err := l.msgID(s.pseudo, e)
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
