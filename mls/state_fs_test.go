package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/keyschedule"
)

// epochRef derives, independently of the Group's own secret tree, an
// epoch's secrets and a fresh secret tree from the joiner secret the
// committer holds right after its commit.
func epochRef(t *testing.T, committer *Group) (keyschedule.EpochSecrets, *keyschedule.SecretTree) {
	t.Helper()
	if committer.joinerSecret.IsZero() {
		t.Fatal("committer holds no joiner secret")
	}
	gc, err := committer.ctx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e, err := keyschedule.FromJoinerSecret(committer.cs, committer.joinerSecret, committer.pskSecret, gc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.EpochAuthenticator.Bytes(), committer.EpochAuthenticator()) {
		t.Fatal("independent key schedule disagrees with the group")
	}
	st, err := keyschedule.NewSecretTree(committer.cs, e.EncryptionSecret, committer.tree.LeafCount(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

func saveLoad(t *testing.T, g *Group) (*Group, []byte) {
	t.Helper()
	b, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := UnmarshalState(b)
	if err != nil {
		t.Fatalf("UnmarshalState: %v", err)
	}
	again, err := loaded.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatal("loaded state re-encodes to other bytes")
	}
	return loaded, b
}

// assertAbsent fails if b contains any of the named secrets.
func assertAbsent(t *testing.T, b []byte, what string, secrets map[string][]byte) {
	t.Helper()
	for name, s := range secrets {
		if len(s) == 0 {
			t.Fatalf("%s: empty reference secret %s", what, name)
		}
		if bytes.Contains(b, s) {
			t.Errorf("%s contains the %s", what, name)
		}
	}
}

// TestStateForwardSecrecy checks RFC 9420 §9.2 for saved state: after
// messages of generations 0..N were sealed and opened, neither the
// sender's nor the receiver's saved bytes hold the epoch's encryption
// secret (or the joiner/epoch secrets that lead to it) or any consumed key
// or nonce, in the current epoch or in a retained past epoch, while the
// keys kept for an out-of-order message are there and still open it after
// a load.
func TestStateForwardSecrecy(t *testing.T) {
	const n = 6
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	w.commit(0, CommitOptions{ForcePath: true})
	e, ref := epochRef(t, w.members[0])

	msgs := make([]*MLSMessage, n)
	for i := range msgs {
		msgs[i] = w.seal(0, string(rune('a'+i)))
	}
	// Leaf 1 opens all but generation 3, which stays behind as a skipped
	// key; leaf 2 opens all of them, in reverse order.
	for i := range msgs {
		if i != 3 {
			w.open(1, msgs[i], string(rune('a'+i)))
		}
		j := n - 1 - i
		w.open(2, msgs[j], string(rune('a'+j)))
	}
	consumed := map[string][]byte{
		"encryption secret": e.EncryptionSecret.Bytes(),
		"epoch secret":      e.EpochSecret.Bytes(),
		"joiner secret":     e.JoinerSecret.Bytes(),
		"welcome secret":    e.WelcomeSecret.Bytes(),
	}
	var gen3 keyschedule.KeyNonce
	for g := range uint32(n) {
		kn, err := ref.Get(0, keyschedule.Application, g)
		if err != nil {
			t.Fatal(err)
		}
		if g == 3 {
			gen3 = kn
			continue
		}
		consumed["key of generation "+string(rune('0'+g))] = kn.Key.Bytes()
		consumed["nonce of generation "+string(rune('0'+g))] = kn.Nonce.Bytes()
	}
	// The node secrets between the root and leaf 0 were split and are
	// consumed too: the root's left child is on that path.
	left, err := w.members[0].cs.ExpandWithLabel(e.EncryptionSecret.Bytes(), "tree", []byte("left"), w.members[0].cs.Nh())
	if err != nil {
		t.Fatal(err)
	}
	consumed["left child of the root"] = left

	sender, senderBytes := saveLoad(t, w.members[0])
	receiver, receiverBytes := saveLoad(t, w.members[1])
	assertAbsent(t, senderBytes, "sender state", consumed)
	assertAbsent(t, receiverBytes, "receiver state", consumed)
	if !bytes.Contains(receiverBytes, gen3.Key.Bytes()) {
		t.Fatal("receiver state lacks the skipped key of generation 3: the search would not find a key")
	}
	// The sender consumed generation 3 when it sealed it.
	if bytes.Contains(senderBytes, gen3.Key.Bytes()) {
		t.Fatal("sender state contains the key of generation 3 it sealed with")
	}

	// Out of order after the load: generation 3 opens once.
	receiver, data, err := receiver.OpenApplication(msgs[3])
	if err != nil || string(data) != "d" {
		t.Fatalf("opening generation 3 after load: %q, %v", data, err)
	}
	// Consumed generations are refused after the load.
	for _, i := range []int{0, 3, 5} {
		if _, _, err := receiver.OpenApplication(msgs[i]); !errors.Is(err, ErrGenerationReused) {
			t.Fatalf("replaying generation %d after load: err = %v, want ErrGenerationReused", i, err)
		}
	}

	// The conversation continues from the loaded states.
	w.members[0], w.members[1] = sender, receiver
	m := w.seal(0, "after load")
	w.open(1, m, "after load")
	w.open(2, m, "after load")
	late := w.seal(0, "late")
	w.commit(1, CommitOptions{ForcePath: true})

	// The epoch is now a retained past epoch of every member: its consumed
	// secrets stay out of the saved bytes, and a late message of it still
	// opens after a load.
	for l, g := range w.members {
		loaded, b := saveLoad(t, g)
		assertAbsent(t, b, "state after the next commit", consumed)
		if l == 0 {
			continue
		}
		loaded, data, err := loaded.OpenApplication(late)
		if err != nil || string(data) != "late" {
			t.Fatalf("leaf %d opening a late message of the past epoch after load: %q, %v", l, data, err)
		}
		if _, _, err := loaded.OpenApplication(late); !errors.Is(err, ErrGenerationReused) {
			t.Fatalf("leaf %d replaying the late message: err = %v", l, err)
		}
		w.members[l] = loaded
	}
	w.check()
	w.open(2, w.seal(1, "new epoch"), "new epoch")
}

// TestStateOldVersionRefused checks that a version 1 state, which carried
// re-derivable secrets, is refused with ErrStateVersion.
func TestStateOldVersionRefused(t *testing.T) {
	w := newSCWorld(t, Options{})
	b, err := w.members[0].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != stateVersion {
		t.Fatalf("state starts with version %d, want %d", b[0], stateVersion)
	}
	for _, v := range []byte{1, stateVersionReInit + 1} {
		b[0] = v
		if _, err := UnmarshalState(b); !errors.Is(err, ErrStateVersion) {
			t.Errorf("version %d: err = %v, want ErrStateVersion", v, err)
		}
	}
}

// TestStateSecretTreeMismatch checks that a state whose secret tree does
// not fit its ratchet tree is refused.
func TestStateSecretTreeMismatch(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	g := w.members[0].clone()
	other := newSCWorld(t, Options{}) // one leaf, the group above has two
	g.epochKeys = other.members[0].epochKeys
	b, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalState(b); !errors.Is(err, ErrDecode) {
		t.Fatalf("state with a 1-leaf secret tree in a 2-leaf group: err = %v, want ErrDecode", err)
	}
}
