package mls

import (
	"bytes"
	"testing"

	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// A Group holds its secrets in unexported fields, where fmt cannot call
// their redacting methods: however a Group is printed (and whatever holds
// it), none of them shows.
func TestGroupPrintsNoSecret(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	pskID, pskSecret := []byte("redaction-psk"), []byte("PSK-redaction-0123456789abcdef!!")
	for l, g := range w.members {
		w.members[l] = g.WithExternalPSK(pskID, pskSecret)
	}
	w.broadcast(0, w.seal(0, "before the commit"))
	psk := PreSharedKeyID{Type: PSKTypeExternal, PSKID: pskID, PSKNonce: bytes.Repeat([]byte{0x5a}, 32)}
	g, _, err := w.members[0].Commit(CommitOptions{PSKs: []PreSharedKeyID{psk}})
	if err != nil {
		t.Fatal(err)
	}
	if g.Epoch() != 2 || len(g.past) == 0 {
		t.Fatalf("group at epoch %d with %d past epochs, want epoch 2 with a past one", g.Epoch(), len(g.past))
	}
	leafKey, _ := g.keys.Key(g.me.Node())
	secrets := map[string][]byte{
		"external PSK":     pskSecret,
		"joiner secret":    g.joinerSecret.Bytes(),
		"psk secret":       g.pskSecret.Bytes(),
		"init secret":      g.secrets.InitSecret.Bytes(),
		"signature key":    g.sig.Bytes(),
		"leaf HPKE key":    leafKey.Bytes(),
		"past sender data": g.past[0].senderDataSecret.Bytes(),
		"past resumption":  g.past[0].resumptionPSK.Bytes(),
	}
	redacttest.Check(t, g, secrets)

	// The secrets a caller hands in or gets back print no more.
	redacttest.Check(t, ExternalPSK{ID: pskID, Secret: ciphersuite.NewSecret(pskSecret)}, map[string][]byte{"external PSK": pskSecret})
	c := newSCClient(t, "redaction-joiner")
	redacttest.Check(t, c.secrets, map[string][]byte{
		"init key":       c.secrets.InitKey.Bytes(),
		"encryption key": c.secrets.EncryptionKey.Bytes(),
		"signature key":  c.secrets.SignatureKey.Bytes(),
	})
}

// A Welcome's GroupSecrets and PathSecret print neither secret however
// they are held: in an unexported field of a caller's struct fmt cannot
// call their Format and prints their fields by reflection.
func TestGroupSecretsPrintNothingWhereverHeld(t *testing.T) {
	joiner := []byte("JOINER-held-0123456789abcdef-!!!")
	path := []byte("PATHSECRET-held-0123456789abcdef")
	ps := &PathSecret{PathSecret: ciphersuite.NewSecret(path)}
	gs := GroupSecrets{JoinerSecret: ciphersuite.NewSecret(joiner), PathSecret: ps, PSKs: []PreSharedKeyID{}}
	secrets := map[string][]byte{"joiner secret": joiner, "path secret": path}
	redacttest.Check(t, gs, secrets)
	redacttest.Check(t, []GroupSecrets{gs}, secrets)
	redacttest.Check(t, map[string]PathSecret{"x": *ps}, map[string][]byte{"path secret": path})
	// The wire form still carries them.
	b, err := gs.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var back GroupSecrets
	if err := back.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if !back.JoinerSecret.Equal(gs.JoinerSecret) || back.PathSecret == nil || !back.PathSecret.PathSecret.Equal(ps.PathSecret) {
		t.Fatal("GroupSecrets does not decode to the secrets it encoded")
	}
}
