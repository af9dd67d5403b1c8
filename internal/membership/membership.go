// Package membership holds the facts about an MLS group's members that
// both the engine (when it records a commit) and replay (when it checks
// one) derive, so the two cannot disagree.
package membership

import (
	"bytes"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// CommitSender returns the member leaf that sent a PublicMessage commit.
func CommitSender(wire []byte) (mls.LeafIndex, bool) {
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil || m.PublicMessage == nil {
		return 0, false
	}
	c := m.PublicMessage.Content
	if c.ContentType != mls.ContentTypeCommit || c.Sender.Type != mls.SenderTypeMember {
		return 0, false
	}
	return c.Sender.LeafIndex, true
}

// Identities returns the identities of g's members by leaf.
func Identities(g *mls.Group) map[mls.LeafIndex][]byte {
	out := map[mls.LeafIndex][]byte{}
	g.Tree().Leaves(func(l mls.LeafIndex, leaf *mls.LeafNode) {
		if leaf != nil {
			out[l] = bytes.Clone(leaf.Credential.Identity)
		}
	})
	return out
}

// Members lists g's members by leaf, in leaf order: what the event of a
// join records.
func Members(g *mls.Group) []events.Member {
	var out []events.Member
	g.Tree().Leaves(func(l mls.LeafIndex, leaf *mls.LeafNode) {
		if leaf != nil {
			out = append(out, events.Member{Leaf: uint32(l), Identity: bytes.Clone(leaf.Credential.Identity)})
		}
	})
	sortMembers(out)
	return out
}

// Diff describes the membership change from old to new: the members of
// a leaf that lost them or changed identity, and the members of a leaf
// that gained them or changed identity, each in leaf order. It walks the
// two trees' leaves side by side (a group of a thousand members is
// compared per commit).
func Diff(old, new *mls.Group) (added, removed []events.Member) {
	o, n := leafIdentities(old), leafIdentities(new)
	for l := range max(len(o), len(n)) {
		var oi, ni leafIdentity
		if l < len(o) {
			oi = o[l]
		}
		if l < len(n) {
			ni = n[l]
		}
		same := oi.present && ni.present && bytes.Equal(oi.id, ni.id)
		if oi.present && !same {
			removed = append(removed, events.Member{Leaf: uint32(l), Identity: bytes.Clone(oi.id)})
		}
		if ni.present && !same {
			added = append(added, events.Member{Leaf: uint32(l), Identity: bytes.Clone(ni.id)})
		}
	}
	return added, removed
}

// leafIdentity is a leaf's member identity, if the leaf has a member.
type leafIdentity struct {
	present bool
	id      []byte // the tree's, not a copy
}

func leafIdentities(g *mls.Group) []leafIdentity {
	var out []leafIdentity
	g.Tree().Leaves(func(l mls.LeafIndex, leaf *mls.LeafNode) {
		if leaf == nil {
			return
		}
		for len(out) <= int(l) {
			out = append(out, leafIdentity{})
		}
		out[l] = leafIdentity{present: true, id: leaf.Credential.Identity}
	})
	return out
}

func sortMembers(ms []events.Member) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].Leaf < ms[j-1].Leaf; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}
