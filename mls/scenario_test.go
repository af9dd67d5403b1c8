package mls

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

const scenarioSuite = ciphersuite.MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519

// scClient is a would-be member: a KeyPackage and its private keys.
type scClient struct {
	kp      *KeyPackage
	secrets *KeyPackageSecrets
}

func newSCClient(tb testing.TB, name string) scClient {
	tb.Helper()
	kp, sec, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte(name)), nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return scClient{kp, sec}
}

// scWorld holds every member's current state, by leaf.
type scWorld struct {
	t       testing.TB
	opts    Options
	members map[LeafIndex]*Group
}

func newSCWorld(tb testing.TB, opts Options) *scWorld {
	tb.Helper()
	c := newSCClient(tb, "creator")
	g, err := NewGroup([]byte("scenario-group"), c.kp, c.secrets, &opts)
	if err != nil {
		tb.Fatal(err)
	}
	return &scWorld{t: tb, opts: opts, members: map[LeafIndex]*Group{0: g}}
}

// broadcast has every member but the sender process m.
func (w *scWorld) broadcast(from LeafIndex, m *MLSMessage) {
	w.t.Helper()
	for l, g := range w.members {
		if l == from {
			continue
		}
		ng, r, err := g.Process(m)
		if err != nil {
			w.t.Fatalf("leaf %d processing a message from leaf %d: %v", l, from, err)
		}
		if r.Removed {
			delete(w.members, l)
			continue
		}
		w.members[l] = ng
	}
}

// commit has member by commit opts, delivers the commit and the Welcome.
func (w *scWorld) commit(by LeafIndex, opts CommitOptions, joiners ...scClient) *CommitResult {
	w.t.Helper()
	g, res, err := w.members[by].Commit(opts)
	if err != nil {
		w.t.Fatalf("leaf %d committing: %v", by, err)
	}
	w.broadcast(by, res.Commit)
	w.members[by] = g
	for _, j := range joiners {
		ng, err := Join(res.Welcome, j.kp, j.secrets, &JoinOptions{Options: w.opts})
		if err != nil {
			w.t.Fatalf("joining: %v", err)
		}
		w.members[ng.LeafIndex()] = ng
	}
	w.check()
	return res
}

// check asserts that every member is in the same epoch with the same
// authenticator, exporter output and tree.
func (w *scWorld) check() {
	w.t.Helper()
	var ref *Group
	for _, g := range w.members {
		if ref == nil {
			ref = g
			continue
		}
		if g.Epoch() != ref.Epoch() || !bytes.Equal(g.EpochAuthenticator(), ref.EpochAuthenticator()) {
			w.t.Fatalf("leaf %d at epoch %d disagrees with leaf %d at epoch %d", g.LeafIndex(), g.Epoch(), ref.LeafIndex(), ref.Epoch())
		}
		a, _ := g.Export("scenario", nil, 32)
		b, _ := ref.Export("scenario", nil, 32)
		if !bytes.Equal(a, b) {
			w.t.Fatalf("exporter differs between leaves %d and %d", g.LeafIndex(), ref.LeafIndex())
		}
	}
	if len(ref.Members()) != len(w.members) {
		w.t.Fatalf("tree has %d members, world %d", len(ref.Members()), len(w.members))
	}
}

func (w *scWorld) grow(by LeafIndex, n int) {
	w.t.Helper()
	var opts CommitOptions
	var joiners []scClient
	for i := range n {
		c := newSCClient(w.t, fmt.Sprintf("member-%d-%d", len(w.members), i))
		opts.Add = append(opts.Add, c.kp)
		joiners = append(joiners, c)
	}
	w.commit(by, opts, joiners...)
}

func (w *scWorld) seal(from LeafIndex, text string) *MLSMessage {
	w.t.Helper()
	g, m, err := w.members[from].SealApplication([]byte(text), []byte("aad"))
	if err != nil {
		w.t.Fatal(err)
	}
	w.members[from] = g
	return m
}

func (w *scWorld) open(to LeafIndex, m *MLSMessage, want string) {
	w.t.Helper()
	g, data, err := w.members[to].OpenApplication(m)
	if err != nil {
		w.t.Fatalf("leaf %d opening %q: %v", to, want, err)
	}
	if string(data) != want {
		w.t.Fatalf("leaf %d opened %q, want %q", to, data, want)
	}
	w.members[to] = g
}

func TestScenarioGroups(t *testing.T) {
	for _, c := range []struct {
		size    int
		private bool
	}{{2, false}, {10, false}, {10, true}, {50, false}} {
		size := c.size
		t.Run(fmt.Sprintf("members=%d/private_handshake=%t", size, c.private), func(t *testing.T) {
			w := newSCWorld(t, Options{EncryptHandshake: c.private})
			// Grow in two steps: an Add-only commit without path, then
			// one with a path.
			w.grow(0, (size-1)/2)
			w.commit(0, CommitOptions{ForcePath: true})
			w.grow(1%LeafIndex(len(w.members)), size-len(w.members))
			if len(w.members) != size {
				t.Fatalf("%d members, want %d", len(w.members), size)
			}
			last := LeafIndex(size - 1)

			// Application messages, delivered out of order.
			m1, m2, m3 := w.seal(last, "one"), w.seal(last, "two"), w.seal(last, "three")
			w.open(0, m3, "three")
			w.open(0, m1, "one")
			w.open(0, m2, "two")
			if _, _, err := w.members[0].OpenApplication(m2); !errors.Is(err, ErrGenerationReused) {
				t.Fatalf("replay: %v, want ErrGenerationReused", err)
			}

			// Update proposed by one member, committed by another.
			g, up, err := w.members[last].ProposeUpdate()
			if err != nil {
				t.Fatal(err)
			}
			w.members[last] = g
			w.broadcast(last, up)
			w.commit(0, CommitOptions{})

			// A late message from an earlier epoch, within retention.
			late := w.seal(0, "late")
			w.commit(last, CommitOptions{ForcePath: true})
			w.open(last, late, "late")

			// Shrink: remove by proposal and inline.
			if size > 2 {
				g, rm, err := w.members[1].ProposeRemove(2)
				if err != nil {
					t.Fatal(err)
				}
				w.members[1] = g
				w.broadcast(1, rm)
				victims := []LeafIndex{}
				for l := LeafIndex(3); l < LeafIndex(size) && len(victims) < size/3; l += 2 {
					victims = append(victims, l)
				}
				w.commit(0, CommitOptions{Remove: victims})
				if _, ok := w.members[2]; ok {
					t.Fatal("removed leaf 2 still in the world")
				}
			} else {
				w.commit(0, CommitOptions{Remove: []LeafIndex{1}})
			}
			// The group keeps working after shrinking and regrowing.
			w.grow(0, 2)
			for l := range w.members {
				if l != 0 {
					w.open(l, w.seal(0, "after"), "after")
				}
			}
		})
	}
}

func TestScenarioPastEpochRetention(t *testing.T) {
	w := newSCWorld(t, Options{MaxPastEpochs: 2})
	w.grow(0, 2)
	late := w.seal(1, "late")
	tooLate := w.seal(1, "too late")
	w.commit(0, CommitOptions{ForcePath: true})
	w.commit(0, CommitOptions{ForcePath: true})
	w.open(2, late, "late") // two epochs back: kept
	w.commit(0, CommitOptions{ForcePath: true})
	if _, _, err := w.members[2].OpenApplication(tooLate); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("message three epochs back with 2 kept: %v, want ErrEpochRetired", err)
	}
}

func TestScenarioRejections(t *testing.T) {
	w := newSCWorld(t, Options{MaxForwardRatchets: 5})
	w.grow(0, 2)
	msg := w.seal(1, "hello")

	expect := func(name string, target error, err error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Errorf("%s: %v, want %v", name, err, target)
		}
	}
	// Wrong group.
	other := *msg.PrivateMessage
	other.GroupID = []byte("another group")
	_, _, err := w.members[0].OpenApplication(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPrivateMessage, PrivateMessage: &other})
	expect("wrong group", ErrWrongGroup, err)
	// Future epoch.
	future := *msg.PrivateMessage
	future.Epoch += 5
	_, _, err = w.members[0].OpenApplication(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPrivateMessage, PrivateMessage: &future})
	expect("future epoch", ErrWrongEpoch, err)
	// Tampered ciphertext.
	bad := *msg.PrivateMessage
	bad.Ciphertext = bytes.Clone(bad.Ciphertext)
	bad.Ciphertext[len(bad.Ciphertext)-2] ^= 0x40
	_, _, err = w.members[0].OpenApplication(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPrivateMessage, PrivateMessage: &bad})
	expect("tampered ciphertext", ErrTampered, err)
	expect("tampered ciphertext", ErrDecrypt, err)
	// The original still opens after the failed attempts (state values
	// were not consumed), then a replay is refused.
	w.open(0, msg, "hello")
	_, _, err = w.members[0].OpenApplication(msg)
	expect("replay", ErrGenerationReused, err)
	// Too far ahead of the ratchet.
	var far *MLSMessage
	for i := range 8 {
		far = w.seal(1, fmt.Sprint(i))
	}
	_, _, err = w.members[0].OpenApplication(far)
	expect("too far ahead", ErrTooFarAhead, err)

	// A proposal with a bad membership tag, and one with a bad signature.
	g, prop, err := w.members[1].ProposeRemove(2)
	if err != nil {
		t.Fatal(err)
	}
	tagged := *prop.PublicMessage
	tagged.MembershipTag = bytes.Clone(tagged.MembershipTag)
	tagged.MembershipTag[0] ^= 1
	_, _, err = w.members[0].Process(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage, PublicMessage: &tagged})
	expect("membership tag", ErrTampered, err)
	forged := *prop.PublicMessage
	forged.Auth.Signature = bytes.Clone(forged.Auth.Signature)
	forged.Auth.Signature[3] ^= 1
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: forged.Content, Auth: forged.Auth}
	g1 := g
	pm, err := protectPublic(g1.cs, ac, &g1.ctx, g1.secrets.MembershipKey)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = w.members[0].Process(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm})
	expect("bad signature", ErrBadSignature, err)

	// A commit for an old epoch.
	w.members[1] = g
	w.broadcast(1, prop)
	stale, res, err := w.members[0].Commit(CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = stale
	w.broadcast(0, res.Commit)
	w.members[0] = stale
	_, _, err = w.members[1].Process(res.Commit)
	expect("old commit", ErrWrongEpoch, err)

	// Tampered confirmation tag on a commit.
	g2, res2, err := w.members[0].Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = g2
	ct := *res2.Commit.PublicMessage
	ct.Auth.ConfirmationTag = bytes.Clone(ct.Auth.ConfirmationTag)
	ct.Auth.ConfirmationTag[0] ^= 1
	// Re-tag membership so that only the confirmation tag is wrong.
	ac2 := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: ct.Content, Auth: ct.Auth}
	pm2, err := protectPublic(w.members[0].cs, ac2, &w.members[0].ctx, w.members[0].secrets.MembershipKey)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = w.members[1].Process(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm2})
	expect("confirmation tag", ErrTampered, err)

	// Invalid key packages.
	expired, sec, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte("old")), nil,
		&KeyPackageOptions{NotBefore: time.Unix(1000, 0), NotAfter: time.Unix(2000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = w.members[0].Commit(CommitOptions{Add: []*KeyPackage{expired}})
	expect("expired key package", ErrInvalidKeyPackage, err)
	same := *newSCClient(t, "same").kp
	same.InitKey = same.LeafNode.EncryptionKey
	if err := same.Sign(w.members[0].cs, sec.SignatureKey); err != nil {
		t.Fatal(err)
	}
	expect("init key equals encryption key", ErrInvalidKeyPackage, ValidateKeyPackage(&same, scenarioSuite, time.Now()))
	resigned := *newSCClient(t, "resigned").kp
	resigned.Signature = bytes.Clone(resigned.Signature)
	resigned.Signature[0] ^= 1
	expect("key package signature", ErrInvalidKeyPackage, ValidateKeyPackage(&resigned, scenarioSuite, time.Now()))

	// A Welcome whose tree does not match the group context.
	j := newSCClient(t, "joiner")
	_, res3, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{j.kp}, OmitRatchetTree: true})
	if err != nil {
		t.Fatal(err)
	}
	wrongTree := w.members[0].Tree()
	_, err = Join(res3.Welcome, j.kp, j.secrets, &JoinOptions{RatchetTree: &wrongTree})
	expect("wrong tree", ErrInvalidTree, err)
	_, err = Join(res3.Welcome, j.kp, j.secrets, nil)
	expect("missing tree", ErrInvalidTree, err)
	stranger := newSCClient(t, "stranger")
	_, err = Join(res3.Welcome, stranger.kp, stranger.secrets, nil)
	expect("foreign welcome", ErrNoWelcomeSecrets, err)
}

func TestGroupIsAValue(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	g := w.members[0]
	before, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Commit(CommitOptions{ForcePath: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.SealApplication([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.ProposeUpdate(); err != nil {
		t.Fatal(err)
	}
	after, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) || g.Epoch() != 1 {
		t.Fatal("operations changed the receiver")
	}
	// Two sends from the same state reuse a generation only in separate
	// branches; the branch actually kept advances.
	g2, m1, _ := g.SealApplication([]byte("a"), nil)
	_, m2, _ := g2.SealApplication([]byte("b"), nil)
	r := w.members[1]
	r, d1, err := r.OpenApplication(m1)
	if err != nil || string(d1) != "a" {
		t.Fatalf("open a: %q %v", d1, err)
	}
	if _, d2, err := r.OpenApplication(m2); err != nil || string(d2) != "b" {
		t.Fatalf("open b: %q %v", d2, err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	w := newSCWorld(t, Options{MaxPastEpochs: 2, EncryptHandshake: true, Padding: 16})
	w.grow(0, 3)
	late := w.seal(0, "late")
	skipped := w.seal(0, "skipped")
	w.open(1, w.seal(0, "now"), "now")
	g, up, err := w.members[2].ProposeUpdate()
	if err != nil {
		t.Fatal(err)
	}
	w.members[2] = g
	w.broadcast(2, up)
	for _, l := range []LeafIndex{1, 2} {
		b, err := w.members[l].MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		r, err := UnmarshalState(b)
		if err != nil {
			t.Fatalf("leaf %d: %v", l, err)
		}
		b2, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("leaf %d: re-encoding differs", l)
		}
		w.members[l] = r
	}
	// The restored states commit the pending update, follow, and open
	// late and skipped messages of the previous epoch.
	w.commit(1, CommitOptions{})
	w.open(2, late, "late")
	w.open(1, skipped, "skipped")
	if _, _, err := w.members[1].OpenApplication(skipped); !errors.Is(err, ErrGenerationReused) {
		t.Fatalf("restored state reopened a consumed message: %v", err)
	}
	b, _ := w.members[1].MarshalBinary()
	b[0] = 99
	if _, err := UnmarshalState(b); !errors.Is(err, ErrStateVersion) {
		t.Fatalf("unknown version: %v", err)
	}
	b[0] = stateVersion
	if _, err := UnmarshalState(b[:len(b)-1]); !errors.Is(err, ErrDecode) {
		t.Fatalf("truncated state: %v", err)
	}
}

func TestGroupNeverPrintsSecrets(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	g := w.members[0]
	out := fmt.Sprintf("%v %+v %#v %s %x %v %+v", g, g, g, g, g, *g, *g)
	for name, s := range map[string][]byte{
		"epoch authenticator": g.EpochAuthenticator(),
		"init secret":         g.secrets.InitSecret.Bytes(),
		"signature key":       g.sig.Bytes(),
	} {
		if strings.Contains(out, fmt.Sprintf("%x", s)) {
			t.Errorf("%s printed", name)
		}
	}
	c := newSCClient(t, "printed")
	out = fmt.Sprintf("%v %+v", c.secrets, *c.secrets)
	if strings.Contains(out, fmt.Sprintf("%x", c.secrets.InitKey.Bytes())) {
		t.Error("key package secrets printed")
	}
}

// scBench is a group of n members seen by its creator (leaf 0) and by
// member 1, with member 1's Welcome and key package for join benchmarks.
type scBench struct {
	creator, member *Group
	welcome         *MLSMessage
	joiner          scClient
	clients         []scClient // by leaf: clients[0] is the creator
}

var scBenchCache = map[int]*scBench{}

func scBenchGroup(b testing.TB, n int) *scBench {
	if s, ok := scBenchCache[n]; ok {
		return s
	}
	c := newSCClient(b, "creator")
	g, err := NewGroup([]byte("bench"), c.kp, c.secrets, nil)
	if err != nil {
		b.Fatal(err)
	}
	var opts CommitOptions
	clients := []scClient{c}
	for i := 1; i < n; i++ {
		j := newSCClient(b, fmt.Sprint("m", i))
		clients = append(clients, j)
		opts.Add = append(opts.Add, j.kp)
	}
	first := clients[1]
	g, res, err := g.Commit(opts)
	if err != nil {
		b.Fatal(err)
	}
	m, err := Join(res.Welcome, first.kp, first.secrets, nil)
	if err != nil {
		b.Fatal(err)
	}
	s := &scBench{creator: g, member: m, welcome: res.Welcome, joiner: first, clients: clients}
	scBenchCache[n] = s
	return s
}

func BenchmarkSealOpen(b *testing.B) {
	noCacheCheck(b)
	s := scBenchGroup(b, 2)
	payload := make([]byte, 256)
	// The raw building blocks of one application message in suite 3: a
	// ChaCha20-Poly1305 seal (or open) of the payload and an Ed25519
	// signature (or verification) over it.
	aead, err := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	nonce := make([]byte, aead.NonceSize())
	b.Run("raw-seal", func(b *testing.B) {
		for b.Loop() {
			sig := ed25519.Sign(priv, payload)
			_ = aead.Seal(nil, nonce, append(payload, sig...), nil)
		}
	})
	b.Run("raw-open", func(b *testing.B) {
		sig := ed25519.Sign(priv, payload)
		ct := aead.Seal(nil, nonce, append(slices.Clone(payload), sig...), nil)
		for b.Loop() {
			pt, err := aead.Open(nil, nonce, ct, nil)
			if err != nil || !ed25519.Verify(pub, pt[:len(payload)], pt[len(payload):]) {
				b.Fatal("raw open failed")
			}
		}
	})
	b.Run("seal", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.creator.SealApplication(payload, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		_, m, err := s.creator.SealApplication(payload, nil)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, _, err := s.member.OpenApplication(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkCommitWithPath(b *testing.B) {
	noCacheCheck(b)
	for _, n := range []int{2, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n > 1000 && testing.Short() {
				b.Skip("10,000 members only without -short")
			}
			s := scBenchGroup(b, n)
			_, res, err := s.creator.Commit(CommitOptions{ForcePath: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Run("commit", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := s.creator.Commit(CommitOptions{ForcePath: true}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("process", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := s.member.ProcessCommit(res.Commit); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkJoinFromWelcome(b *testing.B) {
	noCacheCheck(b)
	s := scBenchGroup(b, 1000)
	for b.Loop() {
		if _, err := Join(s.welcome, s.joiner.kp, s.joiner.secrets, nil); err != nil {
			b.Fatal(err)
		}
	}
}
