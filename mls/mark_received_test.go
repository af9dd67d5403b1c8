package mls

import (
	"errors"
	"fmt"
	"testing"
)

// A member that reloads the state its epoch started with, after it
// received more of a sender's messages than the ratchet reaches ahead,
// opens that sender's next message once MarkReceived has replayed what it
// received; a message it received before stays refused as a replay, and
// a late message of a past epoch is marked in that epoch.
func TestMarkReceivedBringsASavedStateBack(t *testing.T) {
	const reach = 5
	w := newSCWorld(t, Options{MaxForwardRatchets: reach})
	w.grow(0, 1)
	saved, err := w.members[1].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var marks []ReceivedGeneration
	var msgs []*MLSMessage
	for i := range 2 * reach {
		m := w.seal(0, fmt.Sprint(i))
		g, r, err := w.members[1].Process(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if r.Generation != uint32(i) {
			t.Fatalf("message %d: generation %d", i, r.Generation)
		}
		w.members[1] = g
		msgs = append(msgs, m)
		marks = append(marks, ReceivedGeneration{Epoch: r.Epoch, Sender: r.Sender, Generation: r.Generation})
	}
	next := w.seal(0, "next")

	reloaded, err := UnmarshalState(saved)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reloaded.OpenApplication(next); !errors.Is(err, ErrTooFarAhead) {
		t.Fatalf("the saved state opens a message %d generations ahead: %v, want ErrTooFarAhead", 2*reach, err)
	}
	if _, _, err := reloaded.OpenApplication(msgs[3]); err != nil {
		t.Fatalf("the saved state refuses a message it has not seen: %v", err)
	}

	restored, err := reloaded.MarkReceived(marks)
	if err != nil {
		t.Fatal(err)
	}
	if _, data, err := restored.OpenApplication(next); err != nil || string(data) != "next" {
		t.Fatalf("after MarkReceived: %q, %v", data, err)
	}
	if _, _, err := restored.OpenApplication(msgs[3]); !errors.Is(err, ErrGenerationReused) {
		t.Fatalf("a message received before the reload: %v, want ErrGenerationReused", err)
	}
	// Marks whose first is out of the ratchet's reach (retention deleted
	// the messages before it) are taken all the same.
	partial, err := reloaded.MarkReceived(marks[reach+2:])
	if err != nil {
		t.Fatalf("marks from generation %d, beyond a reach of %d: %v", reach+2, reach, err)
	}
	if _, data, err := partial.OpenApplication(next); err != nil || string(data) != "next" {
		t.Fatalf("after marks beyond reach: %q, %v", data, err)
	}
	// Marking again is no error: the state consumed them already.
	if _, err := restored.MarkReceived(marks); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	// The state MarkReceived was called on is not changed.
	if _, _, err := reloaded.OpenApplication(msgs[3]); err != nil {
		t.Fatalf("MarkReceived changed its receiver: %v", err)
	}

	// A past epoch's late message is marked in that epoch; an epoch no
	// longer held is passed over.
	late := w.seal(0, "late")
	w.commit(1, CommitOptions{ForcePath: true})
	atCommit, err := w.members[1].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	_, r, err := w.members[1].Process(late)
	if err != nil {
		t.Fatal(err)
	}
	reloaded, err = UnmarshalState(atCommit)
	if err != nil {
		t.Fatal(err)
	}
	restored, err = reloaded.MarkReceived([]ReceivedGeneration{{Epoch: r.Epoch, Sender: r.Sender, Generation: r.Generation}, {Epoch: 99, Sender: 0, Generation: 1}})
	if err != nil {
		t.Fatalf("marks of a past epoch and of one not held: %v", err)
	}
	if r.Epoch == restored.Epoch() {
		t.Fatalf("the late message is of the current epoch %d", r.Epoch)
	}
	if _, _, err := restored.OpenApplication(late); !errors.Is(err, ErrGenerationReused) {
		t.Fatalf("a late message marked received: %v, want ErrGenerationReused", err)
	}
	if _, err := restored.MarkReceived([]ReceivedGeneration{{Epoch: restored.Epoch(), Sender: 7, Generation: 0}}); err == nil {
		t.Fatal("a mark of a leaf outside the tree was taken")
	}
}

// MarkSent(n) leaves the sending ratchet where sealing n messages did:
// the next message of either uses the same generation.
func TestMarkSentIsSealingWithoutTheMessages(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	start := w.members[0]
	const n = 7
	sealed := start
	for i := range n {
		var err error
		if sealed, _, err = sealed.SealApplication(fmt.Appendf(nil, "m%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	marked, err := start.MarkSent(n)
	if err != nil {
		t.Fatal(err)
	}
	_, a, err := sealed.SealApplication([]byte("after sealing"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := marked.SealApplication([]byte("after marking"), nil)
	if err != nil {
		t.Fatal(err)
	}
	g, r, err := w.members[1].Process(a)
	if err != nil || r.Generation != n {
		t.Fatalf("after sealing %d: generation %v, %v", n, r, err)
	}
	if _, _, err := g.Process(b); !errors.Is(err, ErrGenerationReused) {
		t.Fatalf("after marking %d: %v, want the same generation (ErrGenerationReused)", n, err)
	}
}
