package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go/jetstream"
)

// A stream at its max_bytes (discard new) refuses appends with status
// 503, as a stream without a leader does. The refusal is an answer:
// every operation fails at once with eventlog.ErrStreamFull naming the
// limit, not after a minute of sending again with "no answer" (until
// 2026-12-06), and not ErrOutcomeUnknown; once the limit is raised, the
// same installations go on and their read models rebuild from the stream.
func TestStreamFullFailsAtOnceAndRecovers(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	nc := b.srv.Connect()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	st, err := js.Stream(bg, b.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(bg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	setMax := func(n int64) {
		t.Helper()
		cfg.MaxBytes = n
		if _, err := js.UpdateStream(bg, cfg); err != nil {
			t.Fatal(err)
		}
	}
	setMax(int64(info.State.Bytes) + 4096)

	// Shorter than the engine's own limit on sending again (a minute),
	// so that waiting it out fails the test rather than passing it.
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	full := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, eventlog.ErrStreamFull) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("%s on a full stream: %v; want eventlog.ErrStreamFull, not ErrOutcomeUnknown", what, err)
		}
	}
	var sendErr error
	for i := 0; i < 100 && sendErr == nil; i++ {
		_, sendErr = b.insts[alice].Send(ctx, g1, fmt.Appendf(nil, "m%d", i), nil)
	}
	full("send", sendErr)
	_, err = b.insts[carol].Update(ctx, g1)
	full("commit", err)
	_, err = b.insts[bob].PublishKeyPackage(ctx, "directory", true)
	full("key package", err)
	// A fan-out's refused enqueue wraps ErrOutcomeUnknown as well (its
	// bulk append was sent), which is not tested here.
	if _, err = b.del.FanOut(ctx, []events.InstallationID{bob, carol}, mlsChannel, []byte("x"), time.Time{}, "full-fanout"); !errors.Is(err, eventlog.ErrStreamFull) {
		t.Fatalf("fan-out on a full stream: %v; want eventlog.ErrStreamFull", err)
	}

	setMax(-1) // the operator raises the limit
	b.drainAll()
	co, err := b.insts[carol].Update(bg, g1)
	if err != nil {
		t.Fatalf("commit after the limit was raised: %v", err)
	}
	b.deliverCommit(co)
	b.drainAll()
	b.send(alice, g1, "after")
	for id, got := range b.drainAll() {
		if id != alice && (len(got) != 1 || string(got[0].Content) != "after") {
			t.Fatalf("%s received %d messages after the limit was raised, want the one sent", id, len(got))
		}
	}
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}
