package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// hostSend sends reqs through h and fans the outputs out in order (a path
// update before its message), as a service does; it returns what each
// recipient must receive, in order, as hostDeliver reports it.
func hostSend(t *testing.T, b *backend, h *Host, reqs []SendRequest) map[events.InstallationID][]string {
	t.Helper()
	ctx := context.Background()
	var items []FanOutItem
	want := map[events.InstallationID][]string{}
	for i, r := range h.Send(ctx, reqs) {
		if r.Err != nil {
			t.Fatalf("request %d (%s): %v", i, reqs[i].Installation.ID(), r.Err)
		}
		o := r.Output
		if o.ProjectionErr != nil {
			t.Fatalf("request %d: projection: %v", i, o.ProjectionErr)
		}
		if o.Update != nil {
			items = append(items, FanOutItem{Recipients: o.Update.Recipients, Channel: mlsChannel, Payload: o.Update.Commit,
				IdempotencyKey: fmt.Sprintf("commit-%x-%d", o.Update.GroupID, o.Update.Epoch)})
			for _, r := range o.Update.Recipients {
				want[r] = append(want[r], "commit")
			}
		}
		items = append(items, FanOutItem{Recipients: o.Recipients, Channel: mlsChannel, Payload: o.Message, IdempotencyKey: fmt.Sprintf("msg-%x", o.MessageID)})
		for _, r := range o.Recipients {
			want[r] = append(want[r], string(reqs[i].Installation.ID())+": "+string(reqs[i].Content))
		}
	}
	if _, err := b.del.FanOutMany(ctx, items); err != nil {
		t.Fatal(err)
	}
	return want
}

// received is what a recipient got, in order: "sender: text" for
// application messages, "commit" for commits.
func hostDeliver(t *testing.T, h *Host, insts []*Installation, allow ...error) map[events.InstallationID][]string {
	t.Helper()
	out := map[events.InstallationID][]string{}
	for _, r := range h.Deliver(context.Background(), mlsChannel, insts, 0) {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Installation, r.Err)
		}
		var last uint64
		for _, d := range r.Delivered {
			if d.Delivery.Seq <= last {
				t.Fatalf("%s: delivery %d after %d", r.Installation, d.Delivery.Seq, last)
			}
			last = d.Delivery.Seq
			switch {
			case d.Err != nil:
				ok := false
				for _, a := range allow {
					ok = ok || errors.Is(d.Err, a)
				}
				if !ok {
					t.Fatalf("%s: delivery %d: %v", r.Installation, d.Delivery.Seq, d.Err)
				}
				out[r.Installation] = append(out[r.Installation], "error")
			case d.Received.ProjectionErr != nil:
				t.Fatalf("%s: delivery %d: projection: %v", r.Installation, d.Delivery.Seq, d.Received.ProjectionErr)
			case d.Received.Kind == "application":
				out[r.Installation] = append(out[r.Installation], string(d.Received.Sender)+": "+string(d.Received.Content.Bytes()))
			default:
				out[r.Installation] = append(out[r.Installation], d.Received.Kind)
			}
		}
		if r.Acked != last {
			t.Fatalf("%s: acknowledged %d, last delivery %d", r.Installation, r.Acked, last)
		}
	}
	return out
}

// daveTraffic enqueues n messages for dave-watch.
func daveTraffic(t *testing.T, b *backend, n int) {
	t.Helper()
	var items []FanOutItem
	for i := range n {
		items = append(items, FanOutItem{Recipients: []events.InstallationID{"dave-watch"}, Channel: mlsChannel, Payload: []byte(fmt.Sprint(i))})
	}
	if _, err := b.del.FanOutMany(context.Background(), items); err != nil {
		t.Fatal(err)
	}
}

// checkQueuesEmpty checks that nothing is left to deliver to ids.
func checkQueuesEmpty(t *testing.T, b *backend, ids ...events.InstallationID) {
	t.Helper()
	for _, id := range ids {
		ds, err := b.del.Fetch(context.Background(), id, mlsChannel, 0)
		if err != nil || len(ds) != 0 {
			t.Fatalf("%s: %d deliveries left (%v)", id, len(ds), err)
		}
	}
}

func TestHostSendsAndDeliversInOrder(t *testing.T) {
	for _, mem := range []bool{true, false} {
		t.Run(fmt.Sprintf("fromMemory=%v", mem), func(t *testing.T) {
			prev := projectFromMemory
			projectFromMemory = mem
			defer func() { projectFromMemory = prev }()
			testHostSendsAndDelivers(t)
		})
	}
}

func testHostSendsAndDelivers(t *testing.T) {
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	all := []*Installation{b.insts[alice], b.insts[bob], b.insts[carol]}
	for round := range 3 {
		var reqs []SendRequest
		add := func(from events.InstallationID, gid []byte) {
			text := fmt.Sprintf("round %d message %d", round, len(reqs))
			reqs = append(reqs, SendRequest{Installation: b.insts[from], GroupID: gid, Content: []byte(text)})
		}
		// At most one member of a group commits a path update in a
		// round (two members committing in one epoch would fork the
		// group, as with any MLS service that does not order commits):
		// bob in group 1 in round 0 (he joined by Welcome), carol in
		// round 1, alice after two hours in round 2.
		for i := range 12 {
			switch {
			case i%4 < 2:
				add(alice, g1)
			case i%4 == 2:
				add(bob, g2)
			case round < 2:
				add(bob, g1)
			}
		}
		if round == 1 {
			add(carol, g1)
			add(alice, g1)
		}
		if round == 2 {
			// Another installation's traffic between the batches' events:
			// a range read must skip it, or read each installation's.
			b.create("dave-watch")
			daveTraffic(t, b, 600)
		}
		want := hostSend(t, b, h, reqs)
		if round == 2 {
			daveTraffic(t, b, 600)
		}
		got := hostDeliver(t, h, all)
		commits := 0
		for _, id := range []events.InstallationID{alice, bob, carol} {
			if strings.Join(got[id], "\n") != strings.Join(want[id], "\n") {
				t.Fatalf("round %d: %s received\n%s\nwant\n%s", round, id, strings.Join(got[id], "\n"), strings.Join(want[id], "\n"))
			}
			commits += strings.Count(strings.Join(got[id], "\n"), "commit")
		}
		if commits == 0 {
			t.Fatalf("round %d: no path update delivered", round)
		}
		if round == 1 {
			b.now = b.now.Add(2 * time.Hour)
		}
	}
	checkQueuesEmpty(t, b, alice, bob, carol)
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}

func TestHostDeliverRefusesRedeliveries(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	ctx := context.Background()
	var msgs [][]byte
	for i := range 3 {
		o, err := b.insts[alice].Send(ctx, g1, []byte(fmt.Sprintf("m%d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, o.Message)
	}
	// m0 and m1 delivered to bob, then all three again (a service that
	// lost its acknowledgements), m2 twice in the same batch.
	for i, m := range append(msgs[:2:2], msgs[0], msgs[1], msgs[2], msgs[2]) {
		if _, _, err := b.del.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: m, IdempotencyKey: fmt.Sprintf("k%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := hostDeliver(t, h, []*Installation{b.insts[bob]}, ErrDuplicateMessage)[bob]
	want := []string{"alice-phone: m0", "alice-phone: m1", "error", "error", "alice-phone: m2", "error"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("bob received %q, want %q", got, want)
	}
	checkQueuesEmpty(t, b, bob)
	if n := messageCount(t, b.insts[bob], g1); n != 3 {
		t.Fatalf("bob's read model holds %d messages, want 3", n)
	}
	b.checkRebuild(bob)
}

// A second process of an installation records a message first: the
// batch's append at the stale position loses, and Receive takes the
// delivery again (a duplicate now) and the next ones in their place.
func TestHostDeliverLosesRaceToSecondProcess(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	ctx := context.Background()
	// Another clock: its events are not the ones this process would
	// append (which the log would take for a retry of the same append).
	other := b.secondProcess(bob, &InstallationOptions{Now: func() time.Time { return b.now.Add(time.Second) }, UpdateInterval: time.Hour})
	defer other.Close()
	var msgs [][]byte
	for i := range 4 {
		o, err := b.insts[alice].Send(ctx, g1, []byte(fmt.Sprintf("m%d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, o.Message)
		if _, _, err := b.del.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: o.Message}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Receive(ctx, msgs[0]); err != nil {
		t.Fatal(err)
	}
	got := hostDeliver(t, h, []*Installation{b.insts[bob]}, ErrDuplicateMessage)[bob]
	want := []string{"error", "alice-phone: m1", "alice-phone: m2", "alice-phone: m3"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("bob received %q, want %q", got, want)
	}
	if n := messageCount(t, b.insts[bob], g1); n != 4 {
		t.Fatalf("bob's read model holds %d messages, want 4", n)
	}
	b.checkRebuild(bob)
}

// A second process of the sender sends first: the batch loses the race
// for the group and Send sends again on the new state.
func TestHostSendLosesRaceToSecondProcess(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	ctx := context.Background()
	other := b.secondProcess(alice, nil)
	defer other.Close()
	o, err := other.Send(ctx, g1, []byte("from the other process"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, o.Recipients, mlsChannel, o.Message, time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	var reqs []SendRequest
	for i := range 3 {
		reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("m%d", i))})
	}
	hostSend(t, b, h, reqs)
	got := hostDeliver(t, h, []*Installation{b.insts[bob], b.insts[carol]})
	want := "alice-phone: from the other process|alice-phone: m0|alice-phone: m1|alice-phone: m2"
	for _, id := range []events.InstallationID{bob, carol} {
		if strings.Join(got[id], "|") != want {
			t.Fatalf("%s received %q, want %q", id, got[id], want)
		}
	}
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}

// Two Deliver calls on the same installations at once: every message is
// received once (the other call sees it as a duplicate, or not at all),
// in order, and nothing deadlocks.
func TestHostConcurrentDelivers(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h1, h2 := NewHost(b.log, b.del, nil), NewHost(b.log, b.del, nil)
	ctx := context.Background()
	const n = 40
	var reqs []SendRequest
	for i := range n {
		reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("m%02d", i))})
	}
	hostSend(t, b, h1, reqs)
	orders := [][]*Installation{{b.insts[bob], b.insts[carol]}, {b.insts[carol], b.insts[bob]}}
	var mu sync.Mutex
	got := map[events.InstallationID][]string{}
	var wg sync.WaitGroup
	for i, h := range []*Host{h1, h2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				for _, r := range h.Deliver(ctx, mlsChannel, orders[i], 7) {
					if r.Err != nil {
						t.Errorf("%s: %v", r.Installation, r.Err)
						return
					}
					mu.Lock()
					for _, d := range r.Delivered {
						if d.Err == nil {
							got[r.Installation] = append(got[r.Installation], string(d.Received.Content.Bytes()))
						} else if !errors.Is(d.Err, ErrDuplicateMessage) {
							t.Errorf("%s: %v", r.Installation, d.Err)
						}
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	hostDeliver(t, h1, []*Installation{b.insts[bob], b.insts[carol]}, ErrDuplicateMessage)
	for _, id := range []events.InstallationID{bob, carol} {
		if len(got[id]) > n {
			t.Fatalf("%s received %d messages, want at most %d: %q", id, len(got[id]), n, got[id])
		}
		if c := messageCount(t, b.insts[id], g1); c != n {
			t.Fatalf("%s's read model holds %d messages, want %d", id, c, n)
		}
		b.checkRebuild(id)
	}
	checkQueuesEmpty(t, b, bob, carol)
}

// A Deliver whose context ends mid-way leaves nothing inconsistent: what
// it did not settle stays queued, and the next Deliver (by a service
// started again, its installations opened from their read models)
// delivers the rest; every message is in every read model once.
func TestHostDeliverCancelledThenResumed(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	const n = 60
	var reqs []SendRequest
	for i := range n {
		reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("m%02d", i))})
	}
	hostSend(t, b, h, reqs)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(5 * time.Millisecond); cancel() }()
	h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob], b.insts[carol]}, 0)
	cancel()
	b.close()
	b.open()
	b.reopen()
	h = NewHost(b.log, b.del, nil)
	hostDeliver(t, h, []*Installation{b.insts[bob], b.insts[carol]}, ErrDuplicateMessage)
	checkQueuesEmpty(t, b, bob, carol)
	for _, id := range []events.InstallationID{bob, carol} {
		if c := messageCount(t, b.insts[id], g1); c != n {
			t.Fatalf("%s's read model holds %d messages, want %d", id, c, n)
		}
		b.checkRebuild(id)
	}
}

// Events another process appended to an installation are in its read
// model after a batch too: the batch does not take its own events for all
// there is.
func TestHostProjectsOtherWritersEvents(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	ctx := context.Background()
	other := b.secondProcess(bob, nil)
	defer other.Close()
	for round := range 3 {
		// Between bob's own operations: a key package published by his
		// other process, and (last round) a queue of another channel.
		if _, err := other.PublishKeyPackage(ctx, "directory", false); err != nil {
			t.Fatal(err)
		}
		if round == 2 {
			if _, _, err := b.del.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "other", Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		var reqs []SendRequest
		for i := range 5 {
			reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("r%d m%d", round, i))})
		}
		reqs = append(reqs, SendRequest{Installation: b.insts[bob], GroupID: g1, Content: []byte(fmt.Sprintf("r%d from bob", round))})
		hostSend(t, b, h, reqs)
		hostDeliver(t, h, []*Installation{b.insts[bob], b.insts[carol]})
		for _, id := range []events.InstallationID{alice, bob, carol} {
			b.checkRebuild(id) // the live read model holds every event, its own and the other process's
		}
	}
}

// With the events read back rather than taken from memory: a range the
// batch's events fill is scanned whole, a range full of another
// installation's traffic is read installation by installation; either way
// every read model holds every event.
func TestHostReadsBack(t *testing.T) {
	prev := projectFromMemory
	projectFromMemory = false
	defer func() { projectFromMemory = prev }()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	b.create("dave-watch")
	h := NewHost(b.log, b.del, nil)
	for _, traffic := range []int{0, 600, 0} {
		daveTraffic(t, b, traffic)
		var reqs []SendRequest
		for i := range 20 {
			reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("m%d with %d", i, traffic))})
		}
		want := hostSend(t, b, h, reqs)
		daveTraffic(t, b, traffic)
		got := hostDeliver(t, h, []*Installation{b.insts[bob], b.insts[carol]})
		for _, id := range []events.InstallationID{bob, carol} {
			if strings.Join(got[id], "|") != strings.Join(want[id], "|") {
				t.Fatalf("%s received %q, want %q", id, got[id], want[id])
			}
		}
	}
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}

// The server restarts while a Deliver is under way: appends whose answer
// is lost are appended again until the server answers, reads carry on,
// and what the call did not settle is delivered by the next one; every
// message is in every read model once.
func TestHostDeliverAcrossServerRestart(t *testing.T) {
	t.Parallel() // mostly waits on its own servers; sets no package variable
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	h := NewHost(b.log, b.del, nil)
	const n = 80
	var reqs []SendRequest
	for i := range n {
		reqs = append(reqs, SendRequest{Installation: b.insts[alice], GroupID: g1, Content: []byte(fmt.Sprintf("m%02d", i))})
	}
	hostSend(t, b, h, reqs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan []DeliverResult)
	go func() { done <- h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob], b.insts[carol]}, 0) }()
	time.Sleep(20 * time.Millisecond)
	b.srv.Restart()
	received := map[events.InstallationID]int{}
	for _, r := range <-done {
		for _, d := range r.Delivered {
			if d.Err == nil {
				received[r.Installation]++
			}
		}
	}
	for _, r := range h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob], b.insts[carol]}, 0) {
		if r.Err != nil {
			t.Fatalf("%s after the restart: %v", r.Installation, r.Err)
		}
		for _, d := range r.Delivered {
			if d.Err == nil {
				received[r.Installation]++
			} else if !errors.Is(d.Err, ErrDuplicateMessage) {
				t.Fatalf("%s after the restart: delivery %d: %v", r.Installation, d.Delivery.Seq, d.Err)
			}
		}
	}
	checkQueuesEmpty(t, b, bob, carol)
	for _, id := range []events.InstallationID{bob, carol} {
		if received[id] > n {
			t.Fatalf("%s received %d messages, want at most %d", id, received[id], n)
		}
		if c := messageCount(t, b.insts[id], g1); c != n {
			t.Fatalf("%s's read model holds %d messages, want %d", id, c, n)
		}
		b.checkRebuild(id)
	}
}

// A payload that is no MLS message, queued by anyone who can enqueue, is
// acknowledged with its error, not left to stop the recipient's queue on
// every Deliver; the message after it is received.
func TestDeliverAcknowledgesAPayloadThatDoesNotDecode(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, []byte{0, 1, 0, 2, 0xff}, time.Time{}, "junk"); err != nil {
		t.Fatal(err)
	}
	b.send(alice, g1, "after the junk")
	res := NewHost(b.log, b.del, nil).Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)
	if r := res[0]; r.Err != nil || len(r.Delivered) != 2 || !errors.Is(r.Delivered[0].Err, mls.ErrDecode) ||
		r.Delivered[1].Err != nil || string(r.Delivered[1].Received.Content.Bytes()) != "after the junk" || r.Acked != r.Delivered[1].Delivery.Seq {
		t.Fatalf("Host.Deliver of junk and a message: %+v", r)
	}
}
