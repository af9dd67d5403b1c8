package replay

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// MLSReport says what VerifyMLS checked.
type MLSReport struct {
	Installation events.InstallationID
	// Events is how many events were read; Groups how many groups were
	// followed.
	Events, Groups int
	// Rederived counts transitions re-derived from the recorded MLS
	// messages (received commits and Welcomes) and found equal; Own counts
	// this installation's own commits, checked against their recorded
	// state (an own commit cannot be re-derived without the path secrets
	// drawn when it was made).
	Rederived, Own int
	// LastSeq is the stream sequence of the last event read.
	LastSeq uint64
}

// VerifyMLS replays inst's events and re-derives its groups' MLS states: a
// Welcome is joined again with the key package's recorded private keys, a
// commit of another member is processed again on the state of the previous
// epoch, and each resulting epoch authenticator must equal the recorded
// one (and the recorded state's). An own commit must move to the next
// epoch and its recorded state must carry the recorded authenticator.
// Every commit's recorded membership change must be the one between the
// previous state and the new one, every recorded member must sit at its
// leaf in the group's tree of that epoch, and a group is joined once. The
// first mismatch, a commit that skips or repeats an epoch, or an event for
// a group not created or joined stops VerifyMLS with a *RecordError naming
// the stream sequence and wrapping ErrMLSMismatch (or the log's own
// ErrOutOfOrder / events.ErrTampered for missing, reordered or forged
// records).
func VerifyMLS(ctx context.Context, l *eventlog.Log, inst events.InstallationID) (*MLSReport, error) {
	rep := &MLSReport{Installation: inst}
	type kpKeys struct {
		kp      *mls.KeyPackage
		secrets *mls.KeyPackageSecrets
	}
	var cs *ciphersuite.CipherSuite
	var sig *ciphersuite.SignaturePrivateKey
	kps := map[string]kpKeys{}
	groups := map[string]*mls.Group{}
	left := map[string]bool{} // groups this installation was removed from
	mismatch := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMLSMismatch}, args...)...)
	}
	recorded := func(st events.Secret, gid []byte, epoch uint64, auth []byte) (*mls.Group, error) {
		g, err := mls.UnmarshalState([]byte(st))
		if err != nil {
			return nil, mismatch("group %x: recorded state: %v", gid, err)
		}
		if !bytes.Equal(g.GroupID(), gid) || g.Epoch() != epoch {
			return nil, mismatch("group %x: recorded state is of group %x epoch %d, event says epoch %d", gid, g.GroupID(), g.Epoch(), epoch)
		}
		if auth != nil && !bytes.Equal(g.EpochAuthenticator(), auth) {
			return nil, mismatch("group %x epoch %d: recorded state's epoch authenticator differs from the recorded one", gid, epoch)
		}
		return g, nil
	}
	err := l.Read(ctx, inst, 0, func(r eventlog.Record) error {
		rep.Events++
		rep.LastSeq = r.Seq
		switch b := r.Event.Body.(type) {
		case events.InstallationCreated:
			var err error
			if cs, err = ciphersuite.Lookup(ciphersuite.Suite(b.Ciphersuite)); err != nil {
				return mismatch("installation ciphersuite: %v", err)
			}
			if sig, err = cs.ParseSignaturePrivateKey([]byte(b.SignaturePrivateKey)); err != nil {
				return mismatch("installation signature key: %v", err)
			}
		case events.KeyPackageGenerated:
			if cs == nil {
				return mismatch("key package %x before installation.created", b.Ref)
			}
			kp := new(mls.KeyPackage)
			if err := kp.Unmarshal(b.KeyPackage); err != nil {
				return mismatch("key package %x: %v", b.Ref, err)
			}
			ik, err := cs.ParseHPKEPrivateKey([]byte(b.InitPrivateKey))
			if err != nil {
				return mismatch("key package %x init key: %v", b.Ref, err)
			}
			ek, err := cs.ParseHPKEPrivateKey([]byte(b.EncryptionPrivateKey))
			if err != nil {
				return mismatch("key package %x encryption key: %v", b.Ref, err)
			}
			kps[string(b.Ref)] = kpKeys{kp, &mls.KeyPackageSecrets{InitKey: ik, EncryptionKey: ek, SignatureKey: sig}}
		case events.GroupCreated:
			if _, ok := groups[string(b.GroupID)]; ok {
				return mismatch("group %x created twice", b.GroupID)
			}
			g, err := recorded(b.State, b.GroupID, b.Epoch, nil)
			if err != nil {
				return err
			}
			groups[string(b.GroupID)] = g
			rep.Groups++
		case events.WelcomeProcessed:
			k, ok := kps[string(b.KeyPackageRef)]
			if !ok {
				return mismatch("group %x: welcome for key package %x never generated", b.GroupID, b.KeyPackageRef)
			}
			var m mls.MLSMessage
			if err := m.Unmarshal(b.Welcome); err != nil {
				return mismatch("group %x: recorded welcome: %v", b.GroupID, err)
			}
			joined, err := mls.Join(&m, k.kp, k.secrets, nil)
			if err != nil {
				return mismatch("group %x: joining again from the recorded welcome: %v", b.GroupID, err)
			}
			if !bytes.Equal(joined.GroupID(), b.GroupID) || joined.Epoch() != b.Epoch || !bytes.Equal(joined.EpochAuthenticator(), b.EpochAuthenticator) {
				return mismatch("group %x epoch %d: welcome re-derives epoch %d with another epoch authenticator", b.GroupID, b.Epoch, joined.Epoch())
			}
			g, err := recorded(b.State, b.GroupID, b.Epoch, b.EpochAuthenticator)
			if err != nil {
				return err
			}
			if _, ok := groups[string(b.GroupID)]; ok {
				return mismatch("group %x joined again (epoch %d)", b.GroupID, b.Epoch)
			}
			rep.Groups++
			groups[string(b.GroupID)] = g
			rep.Rederived++
		case events.CommitApplied:
			prev, ok := groups[string(b.GroupID)]
			if !ok {
				return mismatch("commit for group %x, which was never created or joined", b.GroupID)
			}
			if left[string(b.GroupID)] {
				return mismatch("commit for group %x after this installation's removal", b.GroupID)
			}
			if b.Epoch != prev.Epoch()+1 {
				return mismatch("group %x: commit to epoch %d after epoch %d (missing or reordered commit)", b.GroupID, b.Epoch, prev.Epoch())
			}
			var m mls.MLSMessage
			if err := m.Unmarshal(b.Commit); err != nil {
				return mismatch("group %x epoch %d: recorded commit: %v", b.GroupID, b.Epoch, err)
			}
			if leaf, ok := membership.CommitSender(b.Commit); ok && leaf == prev.LeafIndex() {
				rep.Own++
			} else {
				ng, _, err := prev.ProcessCommit(&m)
				if err != nil {
					return mismatch("group %x epoch %d: processing the recorded commit again: %v", b.GroupID, b.Epoch, err)
				}
				if ng.Epoch() != b.Epoch || !bytes.Equal(ng.EpochAuthenticator(), b.EpochAuthenticator) {
					return mismatch("group %x epoch %d: the recorded commit re-derives another epoch authenticator", b.GroupID, b.Epoch)
				}
				rep.Rederived++
			}
			g, err := recorded(b.State, b.GroupID, b.Epoch, b.EpochAuthenticator)
			if err != nil {
				return err
			}
			if gc := g.GroupContext(); b.ConfirmedTranscriptHash != nil && !bytes.Equal(gc.ConfirmedTranscriptHash, b.ConfirmedTranscriptHash) {
				return mismatch("group %x epoch %d: confirmed transcript hash differs from the recorded state's", b.GroupID, b.Epoch)
			}
			// The read model's membership comes from Added and Removed.
			if added, removed := membership.Diff(prev, g); !sameMembers(added, b.Added) || !sameMembers(removed, b.Removed) {
				return mismatch("group %x epoch %d: commit recorded as adding %s and removing %s; the states differ by adding %s and removing %s",
					b.GroupID, b.Epoch, membersString(b.Added), membersString(b.Removed), membersString(added), membersString(removed))
			}
			groups[string(b.GroupID)] = g
		case events.MemberAdded:
			if err := checkMember(groups, b.GroupID, b.Epoch, b.Leaf, b.Identity, mismatch); err != nil {
				return err
			}
		case events.MemberRemoved:
			// Only this installation's own removal is recorded as an event
			// of its own (others' are in the commit's Removed).
			if err := checkMember(groups, b.GroupID, b.Epoch, b.Leaf, b.Identity, mismatch); err != nil {
				return err
			}
			if !bytes.Equal(b.Identity, []byte(inst)) {
				return mismatch("group %x epoch %d: removal of %q recorded on its own; only this installation's is", b.GroupID, b.Epoch, b.Identity)
			}
			left[string(b.GroupID)] = true
		case events.ApplicationMessageSent:
			if err := checkMessageEpoch(groups, b.GroupID, b.Epoch); err != nil {
				return err
			}
		case events.ApplicationMessageReceived:
			if err := checkMessageEpoch(groups, b.GroupID, b.Epoch); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	return rep, nil
}

// checkMember reports a recorded member that does not sit at its leaf in
// the group's tree at the recorded epoch.
func checkMember(groups map[string]*mls.Group, gid []byte, epoch uint64, leaf uint32, identity []byte, mismatch func(string, ...any) error) error {
	g, ok := groups[string(gid)]
	if !ok {
		return mismatch("member of group %x, which was never created or joined", gid)
	}
	if g.Epoch() != epoch {
		return mismatch("group %x: member recorded at epoch %d, group at epoch %d", gid, epoch, g.Epoch())
	}
	ln := g.Tree().Leaf(mls.LeafIndex(leaf))
	if ln == nil || !bytes.Equal(ln.Credential.Identity, identity) {
		return mismatch("group %x epoch %d: %q recorded at leaf %d, which the group's tree does not hold", gid, epoch, identity, leaf)
	}
	return nil
}

// sameMembers reports whether two sorted membership lists are equal.
func sameMembers(a, b []events.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Leaf != b[i].Leaf || !bytes.Equal(a[i].Identity, b[i].Identity) {
			return false
		}
	}
	return true
}

func membersString(ms []events.Member) string {
	if len(ms) == 0 {
		return "nobody"
	}
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = fmt.Sprintf("%q@%d", m.Identity, m.Leaf)
	}
	return strings.Join(s, ", ")
}

func checkMessageEpoch(groups map[string]*mls.Group, gid []byte, epoch uint64) error {
	g, ok := groups[string(gid)]
	if !ok {
		return fmt.Errorf("%w: message in group %x, which was never created or joined", ErrMLSMismatch, gid)
	}
	if epoch > g.Epoch() {
		return fmt.Errorf("%w: message in epoch %d of group %x, which is at epoch %d", ErrMLSMismatch, epoch, gid, g.Epoch())
	}
	return nil
}
