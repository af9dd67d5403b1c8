package keyschedule_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

func newTree(t *testing.T, leaves treemath.LeafCount, opts *keyschedule.SecretTreeOptions) *keyschedule.SecretTree {
	t.Helper()
	cs, err := ciphersuite.Lookup(ciphersuite.Default)
	if err != nil {
		t.Fatal(err)
	}
	st, err := keyschedule.NewSecretTree(cs, ciphersuite.NewSecret(bytes.Repeat([]byte{0x42}, cs.Nh())), leaves, opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sameKey(a, b keyschedule.KeyNonce) bool {
	return a.Generation == b.Generation && a.Key.Equal(b.Key) && a.Nonce.Equal(b.Nonce)
}

func TestSecretTreeSenderReceiverAgree(t *testing.T) {
	sender := newTree(t, 4, nil)
	receiver := newTree(t, 4, nil)
	for i := range 5 {
		for _, typ := range []keyschedule.ContentType{keyschedule.Application, keyschedule.Handshake} {
			sent, err := sender.Next(2, typ)
			if err != nil {
				t.Fatal(err)
			}
			if sent.Generation != uint32(i) {
				t.Fatalf("Next generation = %d, want %d", sent.Generation, i)
			}
			got, err := receiver.Get(2, typ, sent.Generation)
			if err != nil {
				t.Fatal(err)
			}
			if !sameKey(sent, got) {
				t.Fatalf("%s generation %d: sender and receiver keys differ", typ, i)
			}
		}
	}
	a, _ := sender.Next(0, keyschedule.Application)
	b, _ := sender.Next(1, keyschedule.Application)
	if a.Key.Equal(b.Key) {
		t.Fatal("leaves 0 and 1 share a key")
	}
}

func TestSecretTreeOutOfOrderAndReuse(t *testing.T) {
	sender := newTree(t, 2, nil)
	var sent []keyschedule.KeyNonce
	for range 10 {
		kn, err := sender.Next(1, keyschedule.Application)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, kn)
	}
	receiver := newTree(t, 2, nil)
	for _, g := range []uint32{5, 2, 9, 0, 7} {
		got, err := receiver.Get(1, keyschedule.Application, g)
		if err != nil {
			t.Fatalf("generation %d: %v", g, err)
		}
		if !sameKey(got, sent[g]) {
			t.Fatalf("generation %d: out-of-order key differs", g)
		}
	}
	for _, g := range []uint32{5, 2, 9, 0, 7} {
		_, err := receiver.Get(1, keyschedule.Application, g)
		if !errors.Is(err, keyschedule.ErrGenerationReused) {
			t.Fatalf("second Get of generation %d: err = %v, want ErrGenerationReused", g, err)
		}
	}
	// Generations skipped but never taken are still available once.
	for _, g := range []uint32{1, 3, 4, 6, 8} {
		got, err := receiver.Get(1, keyschedule.Application, g)
		if err != nil || !sameKey(got, sent[g]) {
			t.Fatalf("generation %d: %v", g, err)
		}
	}
	// The handshake ratchet of the same leaf is independent.
	if _, err := receiver.Get(1, keyschedule.Handshake, 0); err != nil {
		t.Fatalf("handshake generation 0 after application use: %v", err)
	}
}

func TestSecretTreeTooFarAhead(t *testing.T) {
	st := newTree(t, 2, nil)
	if _, err := st.Get(0, keyschedule.Application, keyschedule.DefaultMaxForwardRatchets+1); !errors.Is(err, keyschedule.ErrTooFarAhead) {
		t.Fatalf("Get(1001) on a fresh ratchet: err = %v, want ErrTooFarAhead", err)
	}
	if _, err := st.Get(0, keyschedule.Application, keyschedule.DefaultMaxForwardRatchets); err != nil {
		t.Fatalf("Get(1000) on a fresh ratchet: %v", err)
	}
	// The limit is relative to the ratchet's position.
	if _, err := st.Get(0, keyschedule.Application, 2*keyschedule.DefaultMaxForwardRatchets+1); err != nil {
		t.Fatalf("Get(2001) after 1000: %v", err)
	}

	small := newTree(t, 2, &keyschedule.SecretTreeOptions{MaxForwardRatchets: 3})
	if _, err := small.Get(1, keyschedule.Handshake, 4); !errors.Is(err, keyschedule.ErrTooFarAhead) {
		t.Fatalf("Get(4) with limit 3: err = %v, want ErrTooFarAhead", err)
	}
	if _, err := small.Get(1, keyschedule.Handshake, 3); err != nil {
		t.Fatal(err)
	}
	// Skipped keys are bounded by the same limit: jumping 3 more keeps only
	// the 3 newest of the 6 skipped generations.
	if _, err := small.Get(1, keyschedule.Handshake, 7); err != nil {
		t.Fatal(err)
	}
	for g := range uint32(7) {
		_, err := small.Get(1, keyschedule.Handshake, g)
		wantOK := g >= 4
		if wantOK != (err == nil) {
			t.Fatalf("generation %d after eviction: err = %v, want available=%v", g, err, wantOK)
		}
		if err != nil && !errors.Is(err, keyschedule.ErrGenerationReused) {
			t.Fatalf("generation %d: err = %v, want ErrGenerationReused", g, err)
		}
	}
}

func TestSecretTreeClone(t *testing.T) {
	st := newTree(t, 8, nil)
	if _, err := st.Get(3, keyschedule.Application, 2); err != nil {
		t.Fatal(err)
	}
	snap := st.Clone()
	a, err := st.Get(3, keyschedule.Application, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(3, keyschedule.Application, 1); !errors.Is(err, keyschedule.ErrGenerationReused) {
		t.Fatal("generation 1 reusable after Get")
	}
	b, err := snap.Get(3, keyschedule.Application, 1)
	if err != nil || !sameKey(a, b) {
		t.Fatalf("clone lost generation 1 or derived another key: %v", err)
	}
	// Leaves first used after the clone derive the same keys in both.
	x, _ := st.Next(6, keyschedule.Handshake)
	y, _ := snap.Next(6, keyschedule.Handshake)
	if !sameKey(x, y) {
		t.Fatal("clone and original disagree on an untouched leaf")
	}
}

func TestSecretTreeBadInput(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	root := ciphersuite.NewSecret(make([]byte, cs.Nh()))
	for _, n := range []treemath.LeafCount{0, 3, 6} {
		if _, err := keyschedule.NewSecretTree(cs, root, n, nil); err == nil {
			t.Errorf("NewSecretTree with %d leaves succeeded", n)
		}
	}
	if _, err := keyschedule.NewSecretTree(cs, ciphersuite.NewSecret([]byte{1}), 2, nil); err == nil {
		t.Error("NewSecretTree with a 1-byte encryption secret succeeded")
	}
	st := newTree(t, 4, nil)
	if _, err := st.Next(4, keyschedule.Application); err == nil || !strings.Contains(err.Error(), "leaf 4") {
		t.Errorf("Next on leaf 4 of 4: err = %v", err)
	}
	if _, err := st.Get(0, keyschedule.ContentType(9), 0); err == nil {
		t.Error("Get with an unknown ratchet type succeeded")
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	st := newTree(t, 2, nil)
	kn, _ := st.Next(0, keyschedule.Application)
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	e, err := keyschedule.Derive(cs, ciphersuite.NewSecret(make([]byte, 32)), ciphersuite.Secret{}, ciphersuite.Secret{}, []byte("gc"))
	if err != nil {
		t.Fatal(err)
	}
	keyHex := fmt.Sprintf("%x", kn.Key.Bytes())
	epochHex := fmt.Sprintf("%x", e.EpochSecret.Bytes())
	for _, verb := range []string{"%v", "%+v", "%#v", "%x", "%s"} {
		for _, v := range []any{st, kn, e} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, keyHex[:16]) || strings.Contains(out, epochHex[:16]) {
				t.Errorf("fmt %s of %T shows secret bytes: %s", verb, v, out)
			}
		}
	}
}

func TestSenderDataShortCiphertext(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	s := ciphersuite.NewSecret(bytes.Repeat([]byte{1}, cs.Nh()))
	short := []byte{1, 2, 3}
	k1, n1, err := keyschedule.SenderDataKeyNonce(cs, s, short)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Len() != cs.Nk() || n1.Len() != cs.Nn() {
		t.Fatalf("key/nonce sizes %d/%d", k1.Len(), n1.Len())
	}
	// Only the first Nh bytes are sampled.
	long := bytes.Repeat([]byte{7}, cs.Nh()+10)
	k2, _, _ := keyschedule.SenderDataKeyNonce(cs, s, long)
	long[cs.Nh()+5] = 0
	k3, _, _ := keyschedule.SenderDataKeyNonce(cs, s, long)
	long[0] = 0
	k4, _, _ := keyschedule.SenderDataKeyNonce(cs, s, long)
	if !k2.Equal(k3) || k2.Equal(k4) {
		t.Fatal("sender data key does not depend on exactly the first Nh bytes")
	}
}

func TestKeyScheduleHelpers(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	init := ciphersuite.NewSecret(bytes.Repeat([]byte{3}, cs.Nh()))
	zero := ciphersuite.NewSecret(make([]byte, cs.Nh()))
	a, err := keyschedule.Derive(cs, init, ciphersuite.Secret{}, ciphersuite.Secret{}, []byte("gc"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := keyschedule.Derive(cs, init, zero, zero, []byte("gc"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.EpochSecret.Equal(b.EpochSecret) {
		t.Fatal("zero Secret does not stand for the all-zero vector")
	}
	// A joiner learns the GroupContext only after decrypting the GroupInfo
	// with the welcome secret, so the welcome secret must not depend on it.
	c, _ := keyschedule.FromJoinerSecret(cs, a.JoinerSecret, zero, []byte("gd"))
	if c.EpochSecret.Equal(a.EpochSecret) || !c.WelcomeSecret.Equal(a.WelcomeSecret) {
		t.Fatal("GroupContext must change the epoch secret but not the welcome secret")
	}
	if _, err := keyschedule.Derive(cs, ciphersuite.NewSecret([]byte{1}), zero, zero, nil); err == nil {
		t.Fatal("Derive with a short init secret succeeded")
	}
	k, n, err := keyschedule.WelcomeKeyNonce(cs, a.WelcomeSecret)
	if err != nil || k.Len() != cs.Nk() || n.Len() != cs.Nn() {
		t.Fatalf("WelcomeKeyNonce: %v", err)
	}
	tag, err := a.ConfirmationTag([]byte("cth"))
	if err != nil || !cs.VerifyMAC(a.ConfirmationKey.Bytes(), []byte("cth"), tag) {
		t.Fatalf("ConfirmationTag: %v", err)
	}
	if _, err := (keyschedule.EpochSecrets{}).Export("x", nil, 16); err == nil {
		t.Fatal("Export on zero EpochSecrets succeeded")
	}
	if s, err := keyschedule.PSKSecret(cs, nil); err != nil || !s.Equal(zero) {
		t.Fatalf("PSKSecret of no PSKs = %v, %v; want Nh zero bytes", s, err)
	}
}

// Consume takes a generation however far ahead of the ratchet, keeps the
// keys of the newest MaxForwardRatchets generations it skipped (as Get
// within reach does), and is refused a generation consumed before.
func TestSecretTreeConsumeBeyondReach(t *testing.T) {
	st := newTree(t, 2, &keyschedule.SecretTreeOptions{MaxForwardRatchets: 3})
	if _, err := st.Get(0, keyschedule.Application, 10); !errors.Is(err, keyschedule.ErrTooFarAhead) {
		t.Fatalf("Get(10) with limit 3: %v, want ErrTooFarAhead", err)
	}
	if err := st.Consume(0, keyschedule.Application, 10); err != nil {
		t.Fatalf("Consume(10) on a fresh ratchet with limit 3: %v", err)
	}
	if err := st.Consume(0, keyschedule.Application, 10); !errors.Is(err, keyschedule.ErrGenerationReused) {
		t.Fatalf("Consume(10) twice: %v, want ErrGenerationReused", err)
	}
	for g := uint32(0); g <= 11; g++ {
		_, err := st.Get(0, keyschedule.Application, g)
		if kept := g >= 7 && g != 10; kept != (err == nil) {
			t.Fatalf("generation %d after Consume(10): %v, want kept %v", g, err, kept)
		}
	}
}
