package mls

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

func TestExtensionPayloads(t *testing.T) {
	e, err := ApplicationIDExtension([]byte("app-7"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := ApplicationID(e)
	if err != nil || string(id) != "app-7" {
		t.Fatalf("ApplicationID = %q, %v", id, err)
	}
	if _, err := ApplicationID(Extension{Type: ExtensionTypeRatchetTree}); !errors.Is(err, ErrDecode) {
		t.Fatalf("wrong extension type: %v", err)
	}
	senders := ExternalSenders{{SignatureKey: []byte{1, 2, 3}, Credential: NewBasicCredential([]byte("ds"))}}
	b, err := senders.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalExternalSenders(b)
	if err != nil || len(back) != 1 || string(back[0].Credential.Identity) != "ds" || !bytes.Equal(back[0].SignatureKey, []byte{1, 2, 3}) {
		t.Fatalf("external senders round trip: %+v, %v", back, err)
	}
	if _, err := UnmarshalExternalSenders(append(b, 0)); !errors.Is(err, ErrDecode) {
		t.Fatalf("trailing byte: %v", err)
	}
	x509 := Credential{Type: CredentialTypeX509, Certificates: [][]byte{{0x30, 1}, {0x30, 2}}}
	es := ExternalSender{SignatureKey: []byte{9}, Credential: x509}
	if b, err = es.Marshal(); err != nil {
		t.Fatal(err)
	}
	var es2 ExternalSender
	if err := es2.Unmarshal(b); err != nil || len(es2.Credential.Certificates) != 2 {
		t.Fatalf("x509 credential round trip: %+v, %v", es2, err)
	}
	rc := RequiredCapabilities{Extensions: []ExtensionType{10}, Proposals: []ProposalType{11}, Credentials: []CredentialType{CredentialTypeBasic}}
	if b, err = rc.Marshal(); err != nil {
		t.Fatal(err)
	}
	var rc2 RequiredCapabilities
	if err := rc2.Unmarshal(b); err != nil || rc2.Proposals[0] != 11 {
		t.Fatalf("required capabilities round trip: %+v, %v", rc2, err)
	}
	ep := ExternalPub{ExternalPub: []byte{4, 5}}
	if b, err = ep.Marshal(); err != nil {
		t.Fatal(err)
	}
	var ep2 ExternalPub
	if err := ep2.Unmarshal(b); err != nil || !bytes.Equal(ep2.ExternalPub, ep.ExternalPub) {
		t.Fatalf("external pub round trip: %+v, %v", ep2, err)
	}
	// A credential type without an encoding cannot be written.
	bad := ExternalSender{Credential: Credential{Type: 77}}
	if _, err := bad.Marshal(); err == nil {
		t.Fatal("encoding credential type 77 succeeded")
	}
}

func TestLifetimeValid(t *testing.T) {
	l := Lifetime{NotBefore: 1000, NotAfter: 2000}
	for _, c := range []struct {
		at   int64
		want bool
	}{{999, false}, {1000, true}, {1500, true}, {2000, true}, {2001, false}, {-5, false}} {
		if got := l.Valid(time.Unix(c.at, 0)); got != c.want {
			t.Errorf("Valid(%d) = %t, want %t", c.at, got, c.want)
		}
	}
}

// TestRatchetTreeShortForms checks the extension form's padding: a tree
// whose last entry sits at an odd position is extended to the next full
// width, and re-encodes without the padding.
func TestRatchetTreeShortForms(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	m := newTestMember(t, cs, "solo")
	two := RatchetTree{nodes: []Node{{Leaf: m.leaf}, {Parent: &ParentNode{EncryptionKey: []byte{1}, ParentHash: []byte{}, UnmergedLeaves: []LeafIndex{}}}, {}}}
	b, err := two.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalRatchetTree(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeWidth() != 3 || got.LeafCount() != 2 {
		t.Fatalf("decoded %d nodes / %d leaves, want 3 / 2", got.NodeWidth(), got.LeafCount())
	}
	if again, _ := got.Marshal(); !bytes.Equal(again, b) {
		t.Fatal("re-encoding differs")
	}
	if got.Leaf(1<<31) != nil || got.Leaf(1) != nil || got.Leaf(0) == nil {
		t.Fatal("Leaf lookup outside the tree or on a blank leaf")
	}
}
