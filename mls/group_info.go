package mls

import (
	"bytes"
)

// GroupInfo returns a signed GroupInfo of the current epoch, with the
// ratchet_tree extension when withTree is set.
func (g *Group) GroupInfo(withTree bool) (*GroupInfo, error) {
	if err := g.checkActive(); err != nil {
		return nil, err
	}
	return g.groupInfo(withTree)
}

func (g *Group) groupInfo(withTree bool) (*GroupInfo, error) {
	gi := &GroupInfo{GroupContext: g.GroupContext(), Extensions: Extensions{}, ConfirmationTag: bytes.Clone(g.confirmationTag), Signer: g.me}
	if withTree {
		e, err := g.tree.Extension()
		if err != nil {
			return nil, err
		}
		gi.Extensions = append(gi.Extensions, e)
	}
	if err := gi.Sign(g.cs, g.sig); err != nil {
		return nil, err
	}
	return gi, nil
}
