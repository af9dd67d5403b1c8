package events

import (
	"crypto/sha256"
	"fmt"
)

// LinkDigestSize is the size of a Link's envelope digest.
const LinkDigestSize = 16

// Link names an earlier event of the same installation: its stream
// sequence and the first LinkDigestSize bytes of the SHA-256 of its
// envelope as stored. An event's Prev link is sealed with it, so the bus
// operator can neither forge nor alter it; a reader that meets a link to
// an event it did not get knows that event is missing, wherever it was.
//
// Links make the history omission-evident up to the latest event some later
// event links to. The newest events of an installation are linked to by
// nothing yet: a reader checks those against what a read model already
// holds (its checkpoint and positions).
type Link struct {
	Seq    uint64
	Digest [LinkDigestSize]byte
}

// LinkTo returns the Link to the envelope stored at stream sequence seq.
func LinkTo(seq uint64, envelope []byte) Link {
	sum := sha256.Sum256(envelope)
	l := Link{Seq: seq}
	copy(l.Digest[:], sum[:])
	return l
}

// IsZero reports whether l links to nothing.
func (l Link) IsZero() bool { return l.Seq == 0 }

// String names the linked sequence and the digest's first bytes.
func (l Link) String() string {
	if l.IsZero() {
		return "none"
	}
	return fmt.Sprintf("seq %d (%x)", l.Seq, l.Digest[:4])
}
