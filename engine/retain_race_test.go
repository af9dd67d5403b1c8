package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// Retention through the engine racing the installation's traffic: while
// one process retains (KeepNone), another process of the installation,
// whose clock dates its events before retention's cutoff, receives
// messages and sends. Afterwards no message was lost or accepted twice
// (every one delivered again after a restart is refused), the sender
// reused no generation (its peer receives each once, and its next
// messages after a restart), and the read model equals a rebuild.
func TestRetentionRacesTraffic(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	const incoming, outgoing, rounds = 12, 8, 3
	var in, all []*SendOutput
	for i := range incoming {
		out, err := b.insts[alice].Send(ctx, g1, []byte(fmt.Sprintf("to bob %d", i)), nil)
		if err != nil || out.Update != nil {
			t.Fatalf("alice send %d: update %v, %v", i, out != nil && out.Update != nil, err)
		}
		in = append(in, out)
	}
	all = in
	p2 := b.secondProcess(bob, &InstallationOptions{Now: b.clock, UpdateInterval: 30 * 24 * time.Hour})
	// The day before retention: p2 receives half of alice's messages
	// and sends, then the rest goes on while retention runs.
	var sent []*SendOutput
	for i, m := range in[:incoming/2] {
		if _, err := p2.Receive(ctx, m.Message); err != nil {
			t.Fatalf("p2 receives alice's message %d: %v", i, err)
		}
	}
	for i := range outgoing / 2 {
		out, err := p2.Send(ctx, g1, []byte(fmt.Sprintf("from bob, the day before %d", i)), nil)
		if err != nil {
			t.Fatalf("p2 send %d: %v", i, err)
		}
		sent = append(sent, out)
	}
	in = in[incoming/2:]
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC) // retention's day: KeepNone deletes the day before
	var wg sync.WaitGroup
	errs := make(chan error, incoming+outgoing+rounds)
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i, m := range in {
			if _, err := p2.Receive(ctx, m.Message); err != nil {
				errs <- fmt.Errorf("p2 receives alice's message %d: %w", i, err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range outgoing / 2 {
			out, err := p2.Send(ctx, g1, []byte(fmt.Sprintf("from bob %d", i)), nil)
			if err != nil {
				errs <- fmt.Errorf("p2 send %d: %w", i, err)
				continue
			}
			sent = append(sent, out)
		}
	}()
	go func() {
		defer wg.Done()
		for i := range rounds {
			if _, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, &RetainOptions{SkipMLSCheck: true}); err != nil {
				errs <- fmt.Errorf("retain %d: %w", i, err)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// What is left goes too, behind a recorded state.
	if _, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil {
		t.Fatal(err)
	}
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	b.restart(bob)
	for i, m := range all {
		r, err := b.insts[bob].Receive(ctx, m.Message)
		if !errors.Is(err, mls.ErrGenerationReused) && !errors.Is(err, ErrDuplicateMessage) {
			t.Errorf("alice's message %d delivered again after retention and a restart: %+v, %v; want it refused", i, r, err)
		}
	}
	// Alice receives each of bob's once (no generation sealed twice).
	for _, out := range sent {
		b.deliverSend(out)
	}
	if got := b.drain(alice); len(got) != len(sent) {
		t.Fatalf("alice received %d of bob's messages, want %d", len(got), len(sent))
	}
	b.send(bob, g1, "after a restart")
	if got := b.drain(alice); len(got) != 1 || string(got[0].Content.Bytes()) != "after a restart" {
		t.Fatalf("alice after bob's restart: %d messages", len(got))
	}
	b.rebuiltAsLive(bob)
}

// Two processes of the installation, each with its own read model,
// apply retention (messages none; then deliveries none and no past
// epoch too; compacted) at the same time, as two replicas of a service
// on one schedule would: both finish, every
// message delivered again after restarts is refused by both, the
// member's next message is received, and each read model equals a
// rebuild from the snapshots left.
func TestRetentionOfTwoProcessesAtOnce(t *testing.T) {
	for _, p := range []replay.RetentionPolicy{
		{Messages: replay.KeepNone},
		{Messages: replay.KeepNone, Delivery: replay.KeepNone, PastEpochs: replay.KeepNoPastEpochs},
	} {
		t.Run(fmt.Sprintf("%+v", p), func(t *testing.T) { testRetentionOfTwoProcessesAtOnce(t, p) })
	}
}

func testRetentionOfTwoProcessesAtOnce(t *testing.T, policy replay.RetentionPolicy) {
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	ctx := context.Background()
	p2 := b.secondProcess(bob, nil)
	var replays []*SendOutput
	for i := range 3 {
		replays = append(replays, b.send(alice, g1, fmt.Sprintf("alice %d", i)), b.send(carol, g2, fmt.Sprintf("carol %d", i)))
	}
	if got := b.drain(bob); len(got) != len(replays) {
		t.Fatalf("bob received %d, want %d", len(got), len(replays))
	}
	if policy.PastEpochs != replay.KeepAllEpochs {
		for range 4 { // epoch 1 leaves the window of 3
			co, err := b.insts[alice].Update(ctx, g1)
			if err != nil {
				t.Fatal(err)
			}
			b.deliverCommit(co)
		}
		b.drainAll()
	}
	if err := p2.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, in := range []*Installation{b.insts[bob], p2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = in.Retain(ctx, policy, &RetainOptions{Compact: true})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d retains: %v", i+1, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// Each runs it again: nothing left to do, nothing fails.
	for i, in := range []*Installation{b.insts[bob], p2} {
		if _, err := in.Retain(ctx, policy, &RetainOptions{Compact: true}); err != nil {
			t.Fatalf("process %d retains again: %v", i+1, err)
		}
	}
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	p2 = b.secondProcess(bob, nil)
	b.restart(bob)
	for i, m := range replays {
		for j, in := range []*Installation{b.insts[bob], p2} {
			if r, err := in.Receive(ctx, m.Message); !errors.Is(err, mls.ErrGenerationReused) && !errors.Is(err, ErrDuplicateMessage) && !errors.Is(err, ErrEpochRetired) {
				t.Fatalf("process %d: message %d delivered again: %+v, %v; want it refused", j+1, i, r, err)
			}
		}
	}
	b.send(bob, g1, "after")
	if got := b.drain(alice); len(got) != 1 {
		t.Fatalf("alice received %d of bob's messages after retention, want 1", len(got))
	}
	if err := p2.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	for i, in := range []*Installation{b.insts[bob], p2} {
		live, err := in.DB().Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := projections.GenerateRawKey()
		path := filepath.Join(t.TempDir(), "fresh.db")
		if _, err := replay.Rebuild(ctx, b.log, bob, path, k, nil); err != nil {
			t.Fatalf("process %d: rebuild: %v", i+1, err)
		}
		fresh, err := projections.OpenExisting(path, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fresh.Digest(ctx)
		fresh.Close()
		if err != nil || !live.Equal(got) {
			t.Errorf("process %d: the rebuilt read model differs from the live one (%v)", i+1, err)
		}
	}
}

// A Host delivering to the member in another goroutine while the same
// process applies retention: the deliveries wait for retention between
// operations, every message is handed to the application once, and all
// of them delivered again (the delivery service replaying its queue)
// are settled as refused, none handed over a second time.
func TestRetentionWhileAHostDelivers(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	const n = 10
	var sent []*SendOutput
	for i := range n {
		sent = append(sent, b.send(alice, g1, fmt.Sprintf("m%d", i)))
	}
	h := NewHost(b.log, b.del, nil)
	deliver := func() (got int, errs []error) {
		for _, r := range h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 1) {
			if r.Err != nil {
				errs = append(errs, r.Err)
			}
			for _, d := range r.Delivered {
				if d.Received != nil && d.Received.Kind == "application" {
					got++
				} else if d.Err == nil || !Settled(d.Err) {
					errs = append(errs, fmt.Errorf("delivery %d: %+v, %v", d.Delivery.Seq, d.Received, d.Err))
				}
			}
		}
		return got, errs
	}
	received := 0
	for range n / 2 { // half of them the day they were sent
		got, errs := deliver()
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		received += got
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	var wg sync.WaitGroup
	var hostErrs []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n - n/2 {
			got, errs := deliver()
			hostErrs = append(hostErrs, errs...)
			received += got
		}
	}()
	for range 3 {
		if _, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if len(hostErrs) > 0 {
		t.Fatal(hostErrs)
	}
	if received != n {
		t.Fatalf("the application was handed %d messages, want %d", received, n)
	}
	if _, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil {
		t.Fatal(err)
	}
	b.restart(bob)
	for i, m := range sent {
		if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, m.Message, time.Time{}, fmt.Sprintf("again-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		got, errs := deliver()
		if got != 0 || len(errs) > 0 {
			t.Fatalf("a message delivered again was handed over (%d) or not settled: %v", got, errs)
		}
	}
	if err := b.insts[bob].CatchUp(ctx); err != nil { // the Host's last acknowledgements
		t.Fatal(err)
	}
	live, err := b.insts[bob].DB().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := projections.GenerateRawKey()
	path := filepath.Join(t.TempDir(), "fresh.db")
	if _, err := replay.Rebuild(ctx, b.log, bob, path, k, nil); err != nil {
		t.Fatal(err)
	}
	fresh, err := projections.OpenExisting(path, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got, err := fresh.Digest(ctx); err != nil || !live.Equal(got) {
		d, _ := projections.CompareDB(ctx, b.insts[bob].DB(), fresh)
		t.Fatalf("the rebuilt read model differs from the live one (%v): %v", err, d)
	}
}
