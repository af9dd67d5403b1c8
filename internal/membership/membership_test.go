package membership

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

func keyPackage(t *testing.T, cs *ciphersuite.CipherSuite, identity string) (*mls.KeyPackage, *mls.KeyPackageSecrets) {
	t.Helper()
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		t.Fatal(err)
	}
	kp, sec, err := mls.NewKeyPackage(cs.ID(), mls.NewBasicCredential([]byte(identity)), sig, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp, sec
}

// Diff names the members a commit added and removed, by leaf, from two
// real groups: adds into new leaves, removals, and a removed member's
// leaf taken by another in one commit (both, at that leaf).
func TestDiff(t *testing.T) {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(1))
	if err != nil {
		t.Fatal(err)
	}
	kp, sec := keyPackage(t, cs, "creator")
	g0, err := mls.NewGroup([]byte("group"), kp, sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(g *mls.Group, o mls.CommitOptions) *mls.Group {
		t.Helper()
		ng, _, err := g.Commit(o)
		if err != nil {
			t.Fatal(err)
		}
		return ng
	}
	var adds []*mls.KeyPackage
	for i := 1; i <= 4; i++ {
		kp, _ := keyPackage(t, cs, fmt.Sprintf("peer-%d", i))
		adds = append(adds, kp)
	}
	g1 := commit(g0, mls.CommitOptions{Add: adds})
	m := func(leaf uint32, id string) events.Member { return events.Member{Leaf: leaf, Identity: []byte(id)} }
	check := func(name string, old, new *mls.Group, wantAdded, wantRemoved []events.Member) {
		t.Helper()
		added, removed := Diff(old, new)
		if !reflect.DeepEqual(added, wantAdded) || !reflect.DeepEqual(removed, wantRemoved) {
			t.Fatalf("%s: added %v removed %v, want %v and %v", name, added, removed, wantAdded, wantRemoved)
		}
	}
	check("adds", g0, g1, []events.Member{m(1, "peer-1"), m(2, "peer-2"), m(3, "peer-3"), m(4, "peer-4")}, nil)
	g2 := commit(g1, mls.CommitOptions{Remove: []mls.LeafIndex{2, 4}})
	check("removals", g1, g2, nil, []events.Member{m(2, "peer-2"), m(4, "peer-4")})
	check("nothing", g2, g2, nil, nil)
	kp5, _ := keyPackage(t, cs, "peer-5")
	g3 := commit(g2, mls.CommitOptions{Remove: []mls.LeafIndex{1}, Add: []*mls.KeyPackage{kp5}})
	// The add takes the leftmost blank leaf: 1, which the removal freed.
	check("leaf reused", g2, g3, []events.Member{m(1, "peer-5")}, []events.Member{m(1, "peer-1")})
	check("backwards", g1, g0, nil, []events.Member{m(1, "peer-1"), m(2, "peer-2"), m(3, "peer-3"), m(4, "peer-4")})
}
