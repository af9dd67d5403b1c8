package keyschedule

import (
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// A SecretTree holds the node and ratchet secrets of an epoch: however it
// is printed or held, none of them shows.
func TestSecretTreePrintsNoSecret(t *testing.T) {
	cs, err := ciphersuite.Lookup(1)
	if err != nil {
		t.Fatal(err)
	}
	enc := []byte("ENCRYPTION-SECRET-0123456789abcd")
	st, err := NewSecretTree(cs, ciphersuite.NewSecret(enc), 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Next(treemath.LeafIndex(1), Application); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(treemath.LeafIndex(2), Application, 3); err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{"encryption secret": enc}
	for n, s := range st.nodes {
		secrets[fmt.Sprint("node secret ", n)] = s
	}
	for id, r := range st.ratchets {
		secrets[fmt.Sprint("ratchet secret ", id.leaf, id.typ)] = r.secret
	}
	redacttest.Check(t, st, secrets)
}
