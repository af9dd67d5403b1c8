package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls"
)

// TestMessageOfNextEpochHintsMissingCommit: a member that gets an
// application message of the next epoch without the commit that started it
// is told what is missing (the error still wraps mls.ErrWrongEpoch); once
// the commit is delivered the message is received, and its content prints
// redacted.
func TestMessageOfNextEpochHintsMissingCommit(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	b.create(alice)
	b.create(bob)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	co, err := b.insts[alice].AddMembers(ctx, gid, b.keyPackage(bob))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drain(bob)

	// Alice moves to epoch 2; the commit is not delivered to bob.
	up, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.insts[alice].Send(ctx, gid, []byte("after the update"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update != nil {
		t.Fatal("Send made a path update of its own; the test wants one commit missing")
	}
	_, err = b.insts[bob].Receive(ctx, out.Message)
	if !errors.Is(err, mls.ErrWrongEpoch) {
		t.Fatalf("bob receives a message of epoch 2 at epoch 1: %v, want mls.ErrWrongEpoch", err)
	}
	for _, want := range []string{"for epoch 2", "is in epoch 1", "a commit is missing: deliver the commit (SendOutput/CommitOutput .Commit) to this member before messages of the next epoch"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}

	if _, err := b.del.FanOut(ctx, up.Recipients, mlsChannel, up.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", up.GroupID, up.Epoch)); err != nil {
		t.Fatal(err)
	}
	b.drain(bob)
	rec, err := b.insts[bob].Receive(ctx, out.Message)
	if err != nil {
		t.Fatalf("after the commit: %v", err)
	}
	if string(rec.Content) != "after the update" {
		t.Fatalf("received %d bytes, not the message sent", len(rec.Content))
	}
	for _, s := range []string{fmt.Sprint(rec.Content), fmt.Sprintf("%+v", rec), fmt.Sprintf("%#v", *rec)} {
		if strings.Contains(s, "after the update") {
			t.Fatalf("the message body printed: %s", s)
		}
	}
}
