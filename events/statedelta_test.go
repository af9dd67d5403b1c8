package events

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A commit's state recorded as a delta travels sealed and is rebuilt from
// the base the writer diffed against, and from no other.
func TestCommitStateDelta(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	base := bytes.Repeat([]byte("ratchet tree node "), 500)
	state := bytes.Clone(base)
	copy(state[4000:], "a new path")
	state = append(state, "the next epoch's secrets"...)
	e := samples(testInst)[KindCommitApplied]
	c := e.Body.(CommitApplied).WithStateFrom(base, state)
	if !c.State.IsZero() || c.StateDelta.Len() == 0 || c.StateDelta.Len() > len(state)/10 || len(c.StateSHA256) != 32 {
		t.Fatalf("recorded whole %d, delta %d, digest %d bytes; want a small delta of a %d-byte state", c.State.Len(), c.StateDelta.Len(), len(c.StateSHA256), len(state))
	}
	if got, ok := c.KnownState(); !ok || !bytes.Equal(got.Bytes(), state) {
		t.Fatal("the writer's value does not know its state")
	}
	if got, gotBase, sum, ok := c.KnownDelta(); !ok || !bytes.Equal(got.Bytes(), state) || !bytes.Equal(gotBase.Bytes(), base) || sum != sha256.Sum256(base) {
		t.Fatal("the writer's value does not know its state and its base's digest")
	}
	secret := c.WithStateFrom(nil, append(bytes.Clone(state), secretMark...))
	for _, v := range verbs {
		if l := leaks(fmt.Sprintf(v, secret), secretMark); l != "" {
			t.Errorf("%s of a body holding its state in memory leaks it (%s)", v, l)
		}
	}
	e.Body = c
	env, err := Seal(r, testBinding, e)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatal(err)
	}
	got := opened.Body.(CommitApplied)
	if _, ok := got.KnownState(); ok {
		t.Fatal("a body read from an envelope claims to know its state without a base")
	}
	if _, _, _, ok := got.KnownDelta(); ok {
		t.Fatal("a body read from an envelope claims to know its delta's base")
	}
	st, err := got.StateOf(base)
	if err != nil || !bytes.Equal(st.Bytes(), state) {
		t.Fatalf("StateOf(base) = %d bytes, %v; want the %d-byte state", st.Len(), err, len(state))
	}
	other := bytes.Clone(base)
	other[100] ^= 1
	for name, b := range map[string][]byte{"another base": other, "a shorter base": base[:1000], "no base": nil} {
		if _, err := got.StateOf(b); !errors.Is(err, ErrStateBase) || !strings.Contains(err.Error(), "epoch 5") {
			t.Errorf("%s: %v, want ErrStateBase naming the epoch", name, err)
		}
	}
	// Whole when there is no base, or when the delta would not be small.
	if w := got.WithStateFrom(nil, state); !bytes.Equal(w.State.Bytes(), state) || !w.StateDelta.IsZero() || w.StateSHA256 != nil {
		t.Error("no base: the state is not recorded whole")
	}
	if w := got.WithStateFrom([]byte("unrelated"), state); !bytes.Equal(w.State.Bytes(), state) || !w.StateDelta.IsZero() {
		t.Error("an unrelated base: the state is not recorded whole")
	}
	if st, err := got.WithStateFrom(nil, state).StateOf(nil); err != nil || !bytes.Equal(st.Bytes(), state) {
		t.Errorf("a whole state: StateOf = %v", err)
	}
	both := got
	both.State = NewSecret([]byte("x"))
	if _, err := both.StateOf(base); !errors.Is(err, ErrMalformed) {
		t.Errorf("state recorded both ways: %v, want ErrMalformed", err)
	}
}

// A proposal's state recorded as a delta is rebuilt from its epoch's
// starting state, and refused from another.
func TestProposalStateDelta(t *testing.T) {
	base := bytes.Repeat([]byte("ratchet tree node "), 500)
	state := append(bytes.Clone(base), "a cached proposal"...)
	p := ProposalStaged{GroupID: []byte{1}, Epoch: 3}.WithStateFrom(base, state)
	if !p.State.IsZero() || p.StateDelta.IsZero() || len(p.StateSHA256) != 32 {
		t.Fatalf("recorded whole %d, delta %d bytes", p.State.Len(), p.StateDelta.Len())
	}
	if got, err := p.StateOf(base); err != nil || !bytes.Equal(got.Bytes(), state) {
		t.Fatalf("StateOf(base) = %d bytes, %v", got.Len(), err)
	}
	other := bytes.Clone(base)
	other[4500] ^= 1
	if _, err := p.StateOf(other); !errors.Is(err, ErrStateBase) || !strings.Contains(err.Error(), "group.proposal_staged") {
		t.Fatalf("another base: %v, want ErrStateBase naming the kind", err)
	}
	if got, err := (ProposalStaged{}).StateOf(nil); err != nil || !got.IsZero() {
		t.Fatalf("no state: %v, %v", got, err)
	}
}
