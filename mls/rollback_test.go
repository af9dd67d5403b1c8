package mls

import (
	"errors"
	"fmt"
	"testing"
)

// CheckFollows takes a state that received more than the one before it
// and refuses the one before it as its successor; it refuses a state that
// keeps a key taken since (a message received out of order), and one
// whose past epoch's keys are behind the state before the commit.
func TestCheckFollowsRefusesARollback(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	start := w.members[1]
	received := func(g *Group, m *MLSMessage) *Group {
		t.Helper()
		ng, _, err := g.Process(m)
		if err != nil {
			t.Fatal(err)
		}
		return ng
	}
	var msgs []*MLSMessage
	for i := range 6 {
		msgs = append(msgs, w.seal(0, fmt.Sprint(i)))
	}
	// after5 received 5 alone (3 and 4 kept for later); after5and3 took 3 as well.
	after5 := received(start, msgs[5])
	after5and3 := received(after5, msgs[3])

	for _, tc := range []struct {
		name       string
		g, prev    *Group
		rolledBack bool
	}{
		{"the same state", start, start, false},
		{"a message received since", after5, start, false},
		{"a late message received since", after5and3, after5, false},
		{"the state before a message", start, after5, true},
		{"a late message's key back", after5, after5and3, true},
	} {
		err := tc.g.CheckFollows(tc.prev)
		if tc.rolledBack != errors.Is(err, ErrRolledBack) || (!tc.rolledBack && err != nil) {
			t.Errorf("%s: %v (rolled back: %v)", tc.name, err, tc.rolledBack)
		}
	}

	// A commit both states process: the one that received the late
	// message keeps epoch 1's keys further on than the other.
	_, res, err := w.members[0].Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	commit := res.Commit
	next, nextBehind := received(after5and3, commit), received(after5, commit)
	if err := next.CheckFollows(after5and3); err != nil {
		t.Fatalf("the next epoch after the state it came from: %v", err)
	}
	err = nextBehind.CheckFollows(after5and3)
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("the next epoch with its past epoch's keys behind: %v, want ErrRolledBack", err)
	}
	t.Log(err)
	if err := after5and3.CheckFollows(next); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("an epoch after the next one: %v, want ErrRolledBack", err)
	}
}
