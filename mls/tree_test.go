package mls

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
)

// lookupSuite returns the suite of a vector case, or records the case as
// skipped (counted) when the suite is not supported.
func lookupSuite(t *testing.T, tally *vectortest.Tally, name string, suite uint16) *ciphersuite.CipherSuite {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
		tally.Skip(t, name, suite, err.Error())
		return nil
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cs
}

type treeOperationsCase struct {
	CipherSuite    uint16 `json:"cipher_suite"`
	TreeBefore     hexb   `json:"tree_before"`
	Proposal       hexb   `json:"proposal"`
	ProposalSender uint32 `json:"proposal_sender"`
	TreeHashBefore hexb   `json:"tree_hash_before"`
	TreeAfter      hexb   `json:"tree_after"`
	TreeHashAfter  hexb   `json:"tree_hash_after"`
}

func TestTreeOperationsVectors(t *testing.T) {
	var cases []treeOperationsCase
	vectortest.Load(t, "tree-operations.json", &cases)
	tally := vectortest.NewTally(t, "tree-operations.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d", i)
		cs := lookupSuite(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			before, err := UnmarshalRatchetTree(tc.TreeBefore)
			if err != nil {
				t.Fatalf("tree_before: %v", err)
			}
			th, err := before.TreeHash(cs)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "tree_hash_before", th, tc.TreeHashBefore)
			var p Proposal
			if err := p.Unmarshal(tc.Proposal); err != nil {
				t.Fatalf("proposal: %v", err)
			}
			var after RatchetTree
			switch p.Type {
			case ProposalTypeAdd:
				after, _ = before.AddLeaf(&p.Add.KeyPackage.LeafNode)
			case ProposalTypeUpdate:
				after, err = before.UpdateLeaf(LeafIndex(tc.ProposalSender), &p.Update.LeafNode)
			case ProposalTypeRemove:
				after, err = before.RemoveLeaf(p.Remove.Removed)
			default:
				t.Fatalf("unexpected proposal type %d", p.Type)
			}
			if err != nil {
				t.Fatalf("applying proposal type %d: %v", p.Type, err)
			}
			got, err := after.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "tree_after", got, tc.TreeAfter)
			th, err = after.TreeHash(cs)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "tree_hash_after", th, tc.TreeHashAfter)
			// The receiver is a value: applying the proposal left it as it was.
			again, _ := before.Marshal()
			vectortest.Equal(t, "tree_before untouched", again, tc.TreeBefore)
		})
	}
}

type treeValidationCase struct {
	CipherSuite uint16     `json:"cipher_suite"`
	Tree        hexb       `json:"tree"`
	GroupID     hexb       `json:"group_id"`
	Resolutions [][]uint32 `json:"resolutions"`
	TreeHashes  []hexb     `json:"tree_hashes"`
}

func TestTreeValidationVectors(t *testing.T) {
	var cases []treeValidationCase
	vectortest.Load(t, "tree-validation.json", &cases)
	tally := vectortest.NewTally(t, "tree-validation.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs := lookupSuite(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			tree, err := UnmarshalRatchetTree(tc.Tree)
			if err != nil {
				t.Fatalf("tree: %v", err)
			}
			if tree.NodeWidth() != len(tc.Resolutions) || tree.NodeWidth() != len(tc.TreeHashes) {
				t.Fatalf("tree has %d nodes, vector lists %d resolutions and %d hashes", tree.NodeWidth(), len(tc.Resolutions), len(tc.TreeHashes))
			}
			hashes, err := tree.TreeHashes(cs)
			if err != nil {
				t.Fatal(err)
			}
			for x := range tc.Resolutions {
				var got []uint32
				for _, n := range tree.Resolution(NodeIndex(x)) {
					got = append(got, uint32(n))
				}
				if !slices.Equal(got, tc.Resolutions[x]) {
					t.Errorf("resolution of node %d: got %v, want %v", x, got, tc.Resolutions[x])
				}
				vectortest.Equal(t, fmt.Sprintf("tree hash of node %d", x), hashes[x], tc.TreeHashes[x])
			}
			if err := tree.Validate(cs, tc.GroupID, nil); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}
