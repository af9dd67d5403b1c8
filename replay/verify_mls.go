package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
// commit of another member (an external commit included) is processed
// again on the state the previous event recorded, a proposal of another
// member is processed again and must cache the recorded proposal, and each
// resulting epoch authenticator must equal the recorded one (and the
// recorded state's); the external PSKs the installation registered are
// held as it held them. An own commit, proposal or external join cannot
// be made again (fresh randomness): it must move to the next epoch (or
// stay, for a proposal) and its recorded state must carry the recorded
// authenticator (and proposal).
// Every commit's recorded membership change must be the one between the
// previous state and the new one, every recorded member must sit at its
// leaf in the group's tree of that epoch, and a group is joined once per
// membership (again only after a departure, or by a resync). The
// first mismatch, a commit that skips or repeats an epoch, or an event for
// a group not created or joined stops VerifyMLS with a *RecordError naming
// the stream sequence and wrapping ErrMLSMismatch (or the log's own
// ErrOutOfOrder / events.ErrTampered for missing, reordered or forged
// records). A history a compaction deleted part of is
// eventlog.ErrCompacted, before anything is read: not a verification
// failure.
func VerifyMLS(ctx context.Context, l *eventlog.Log, inst events.InstallationID) (*MLSReport, error) {
	log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", "verify-mls")
	start := time.Now()
	log.Info("replay: MLS verification started")
	c := newMLSChecker(inst)
	// It replays from the start: a compacted history is named as such,
	// not as the missing or out-of-order events it leaves, which would
	// be a verification failure.
	err := l.CheckNotCompacted(ctx, inst)
	if err == nil {
		err = l.Read(ctx, inst, 0, func(r eventlog.Record) error {
			c.rep.Events++
			c.rep.LastSeq = r.Seq
			return c.check(r.Event)
		})
	}
	switch {
	case err == nil:
		log.Info("replay: MLS verification finished; every transition checks out", "events", c.rep.Events, "groups", c.rep.Groups,
			"rederived", c.rep.Rederived, "own", c.rep.Own, "seq", c.rep.LastSeq, since(start))
	case IsVerificationFailure(err):
		log.Error("replay: MLS verification found a transition that does not check out", "events", c.rep.Events, "seq", c.rep.LastSeq, since(start), "err", err)
	default:
		log.Warn("replay: MLS verification could not run", "events", c.rep.Events, "seq", c.rep.LastSeq, since(start), "err", err)
	}
	return &c.rep, err
}

// mlsChecker re-derives one installation's MLS transitions event by event:
// what VerifyMLS runs over the whole history.
type mlsChecker struct {
	inst   events.InstallationID
	rep    MLSReport
	cs     *ciphersuite.CipherSuite
	sig    *ciphersuite.SignaturePrivateKey
	kps    map[string]kpKeys     // key packages generated, by ref
	groups map[string]*mls.Group // each group's state at its latest epoch
	// states holds the serialized state each group's current epoch
	// started with, as recorded (by its latest commit, or the event that
	// created or joined it), from which a commit's state delta starts
	// (events.CommitApplied.StateOf).
	// states and psks are events.Secrets (epoch secrets and the
	// signature key; PSKs), so that fmt prints none of them.
	states map[string]events.Secret
	left   map[string]bool          // groups this installation was removed from
	psks   map[string]events.Secret // external PSKs held, by id
	// received lists, per group, the messages received since its state
	// was last recorded (application.message_received v2 and later),
	// which a state recorded next must have consumed (checkFollows).
	received map[string][]mls.ReceivedGeneration
}

// kpKeys is a generated key package with its private keys.
type kpKeys struct {
	kp      *mls.KeyPackage
	secrets *mls.KeyPackageSecrets
}

func newMLSChecker(inst events.InstallationID) *mlsChecker {
	return &mlsChecker{inst: inst, rep: MLSReport{Installation: inst},
		kps: map[string]kpKeys{}, groups: map[string]*mls.Group{}, states: map[string]events.Secret{}, left: map[string]bool{}, psks: map[string]events.Secret{},
		received: map[string][]mls.ReceivedGeneration{}}
}

// checkFollows refuses a state g of group gid, recorded whole rather than
// re-derived (a commit's, a proposal's, one recorded before retention),
// that brings back a key the state before it, prev, with the messages
// received since marked, had used or deleted (mls.Group.CheckFollows): a
// state forged from an earlier one would accept those messages again.
func (c *mlsChecker) checkFollows(gid []byte, prev, g *mls.Group) error {
	base := prev
	if marks := c.received[string(gid)]; len(marks) > 0 {
		var err error
		if base, err = prev.MarkReceived(marks); err != nil {
			return mismatch("group %x epoch %d: the messages received since the state before: %v", gid, prev.Epoch(), err)
		}
	}
	if err := g.CheckFollows(base); err != nil {
		return mismatch("the recorded state is behind the one before it: %v", err)
	}
	// g, which follows base, has consumed them.
	delete(c.received, string(gid))
	return nil
}

// mlsCheck checks one event of a kind against the checker's state and
// advances it.
type mlsCheck func(c *mlsChecker, ev events.Event) error

// mlsChecks holds a check per kind that carries MLS state; the other kinds
// (key package bookkeeping, retired epochs, deliveries) have nothing to
// re-derive. Like the read model's handler table.
var mlsChecks map[events.Kind]mlsCheck

func init() {
	mlsChecks = map[events.Kind]mlsCheck{
		events.KindInstallationCreated:        checkInstallationCreated,
		events.KindExternalPSKRegistered:      checkExternalPSKRegistered,
		events.KindExternalPSKRetired:         checkExternalPSKRetired,
		events.KindKeyPackageGenerated:        checkKeyPackageGenerated,
		events.KindGroupCreated:               checkGroupCreated,
		events.KindWelcomeProcessed:           checkWelcomeProcessed,
		events.KindExternalJoined:             checkExternalJoined,
		events.KindCommitApplied:              checkCommitApplied,
		events.KindProposalStaged:             checkProposalStaged,
		events.KindHandshakeFormatSet:         checkHandshakeFormatSet,
		events.KindStateRecorded:              checkStateRecorded,
		events.KindMemberAdded:                checkMemberAdded,
		events.KindMemberRemoved:              checkMemberRemoved,
		events.KindApplicationMessageSent:     checkMessageSent,
		events.KindApplicationMessageReceived: checkMessageReceived,
	}
}

func (c *mlsChecker) check(ev events.Event) error {
	if f, ok := mlsChecks[ev.Body.Kind()]; ok {
		return f(c, ev)
	}
	return nil
}

// bodyOf asserts the body type of a kind's check.
func bodyOf[T events.Body](ev events.Event) (T, error) {
	b, ok := events.BodyAs[T](ev)
	if !ok {
		return b, fmt.Errorf("replay: body of kind %s has type %T", ev.Body.Kind(), ev.Body)
	}
	return b, nil
}

func mismatch(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMLSMismatch}, args...)...)
}

// recorded loads a recorded group state and checks it is the group and
// epoch (and authenticator, when given) the event says.
func recorded(st events.Secret, gid []byte, epoch uint64, auth []byte) (*mls.Group, error) {
	g, err := mls.UnmarshalState(st.Bytes())
	if errors.Is(err, mls.ErrStateVersion) {
		// A state another epochlog version recorded (version 1, which
		// builds of 2026-11-23 before state v2 wrote, is refused on
		// purpose: docs/mls.md): the event is authentic, only not
		// loadable here. It cannot be checked, which is not a check
		// that failed.
		return nil, fmt.Errorf("replay: group %x: this build cannot load its recorded state to re-derive it: %w (replay without the MLS check: --no-mls-check, Options.SkipMLSCheck)", gid, err)
	}
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

func checkInstallationCreated(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.InstallationCreated](ev)
	if err != nil {
		return err
	}
	if c.cs, err = ciphersuite.Lookup(ciphersuite.Suite(b.Ciphersuite)); err != nil {
		return mismatch("installation ciphersuite: %v", err)
	}
	if c.sig, err = c.cs.ParseSignaturePrivateKey(b.SignaturePrivateKey.Bytes()); err != nil {
		return mismatch("installation signature key: %v", err)
	}
	return nil
}

// checkExternalPSKRegistered holds the PSK for the commits and Welcomes
// that follow, as the installation did.
func checkExternalPSKRegistered(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ExternalPSKRegistered](ev)
	if err != nil {
		return err
	}
	if _, ok := c.psks[string(b.PSKID)]; ok {
		return mismatch("external PSK %x registered twice", b.PSKID)
	}
	c.psks[string(b.PSKID)] = b.Secret
	return nil
}

func checkExternalPSKRetired(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ExternalPSKRetired](ev)
	if err != nil {
		return err
	}
	if _, ok := c.psks[string(b.PSKID)]; !ok {
		return mismatch("external PSK %x retired, but not held", b.PSKID)
	}
	delete(c.psks, string(b.PSKID))
	return nil
}

// withPSKs returns g holding the external PSKs held now.
func (c *mlsChecker) withPSKs(g *mls.Group) *mls.Group {
	for id, s := range c.psks {
		g = g.WithExternalPSK([]byte(id), s.Bytes())
	}
	return g
}

// externalPSKs lists the external PSKs held now, for a Welcome.
func (c *mlsChecker) externalPSKs() []mls.ExternalPSK {
	var out []mls.ExternalPSK
	for id, s := range c.psks {
		out = append(out, mls.ExternalPSK{ID: []byte(id), Secret: ciphersuite.NewSecret(s.Bytes())})
	}
	return out
}

func checkKeyPackageGenerated(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.KeyPackageGenerated](ev)
	if err != nil {
		return err
	}
	if c.cs == nil {
		return mismatch("key package %x before installation.created", b.Ref)
	}
	kp := new(mls.KeyPackage)
	if err := kp.Unmarshal(b.KeyPackage); err != nil {
		return mismatch("key package %x: %v", b.Ref, err)
	}
	ik, err := c.cs.ParseHPKEPrivateKey(b.InitPrivateKey.Bytes())
	if err != nil {
		return mismatch("key package %x init key: %v", b.Ref, err)
	}
	ek, err := c.cs.ParseHPKEPrivateKey(b.EncryptionPrivateKey.Bytes())
	if err != nil {
		return mismatch("key package %x encryption key: %v", b.Ref, err)
	}
	c.kps[string(b.Ref)] = kpKeys{kp, &mls.KeyPackageSecrets{InitKey: ik, EncryptionKey: ek, SignatureKey: c.sig}}
	return nil
}

func checkGroupCreated(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.GroupCreated](ev)
	if err != nil {
		return err
	}
	if _, ok := c.groups[string(b.GroupID)]; ok {
		return mismatch("group %x created twice", b.GroupID)
	}
	g, err := recorded(b.State, b.GroupID, b.Epoch, nil)
	if err != nil {
		return err
	}
	if err := checkJoinMembers(g, b.Members); err != nil {
		return err
	}
	c.groups[string(b.GroupID)] = g
	c.states[string(b.GroupID)] = b.State
	c.rep.Groups++
	// A successor group's first commit, recorded with its creation, is
	// checked as the group.commit_applied a version 2 writer appended.
	commit, ok, err := events.FirstCommitOf(ev)
	if err != nil {
		return mismatch("%w", err)
	}
	if ok {
		return checkCommitApplied(c, commit)
	}
	return nil
}

// checkJoinMembers checks the members a join records (version 2 of its
// event) against the group's tree: exactly its members, by leaf. A
// version 1 join lists none; its group.member_added events follow and
// are checked one by one.
func checkJoinMembers(g *mls.Group, listed []events.Member) error {
	if len(listed) == 0 {
		return nil
	}
	want := membership.Members(g)
	if sameMembers(want, listed) {
		return nil
	}
	// Name the first difference: a group's member list can be long.
	i := 0
	for i < len(want) && i < len(listed) && want[i].Leaf == listed[i].Leaf && bytes.Equal(want[i].Identity, listed[i].Identity) {
		i++
	}
	first := func(ms []events.Member) string {
		if i < len(ms) {
			return membersString(ms[i : i+1])
		}
		return "nobody more"
	}
	return mismatch("group %x epoch %d: the join records %d members, the group's tree holds %d; member %d recorded as %s, in the tree %s",
		g.GroupID(), g.Epoch(), len(listed), len(want), i, first(listed), first(want))
}

// checkWelcomeProcessed joins again from the recorded Welcome with the key
// package's recorded private keys.
func checkWelcomeProcessed(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.WelcomeProcessed](ev)
	if err != nil {
		return err
	}
	k, ok := c.kps[string(b.KeyPackageRef)]
	if !ok {
		return mismatch("group %x: welcome for key package %x never generated", b.GroupID, b.KeyPackageRef)
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(b.Welcome); err != nil {
		return mismatch("group %x: recorded welcome: %v", b.GroupID, err)
	}
	joined, err := mls.Join(&m, k.kp, k.secrets, &mls.JoinOptions{ExternalPSKs: c.externalPSKs(),
		FindPredecessor: func(gid []byte) *mls.Group { return c.groups[string(gid)] }})
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
	if err := checkJoinMembers(g, b.Members); err != nil {
		return err
	}
	if err := c.join(b.GroupID, b.Epoch, g, b.State, false); err != nil {
		return err
	}
	c.rep.Rederived++
	return nil
}

// checkExternalJoined checks a join by this installation's own external
// commit, which cannot be made again (its path and HPKE export were drawn
// afresh): the recorded GroupInfo must be of the group, the recorded
// state one epoch later, with the recorded authenticator, holding this
// installation at the commit's sender leaf; the recorded commit must be
// an external commit for the GroupInfo's epoch whose proposals (a Remove
// of this installation's old leaf exactly when a resync says so) are what
// the event says.
func checkExternalJoined(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ExternalJoined](ev)
	if err != nil {
		return err
	}
	var gm mls.MLSMessage
	if err := gm.Unmarshal(b.GroupInfo); err != nil || gm.GroupInfo == nil {
		return mismatch("group %x: recorded group info: %v", b.GroupID, err)
	}
	gc := gm.GroupInfo.GroupContext
	if !bytes.Equal(gc.GroupID, b.GroupID) || gc.Epoch+1 != b.Epoch {
		return mismatch("group %x epoch %d: joined from a group info of group %x epoch %d", b.GroupID, b.Epoch, gc.GroupID, gc.Epoch)
	}
	var cm mls.MLSMessage
	if err := cm.Unmarshal(b.Commit); err != nil || !mls.IsExternalCommit(&cm) || cm.PublicMessage.Content.Epoch != gc.Epoch {
		return mismatch("group %x epoch %d: the recorded commit is not an external commit of epoch %d (%v)", b.GroupID, b.Epoch, gc.Epoch, err)
	}
	removes := 0
	for _, p := range cm.PublicMessage.Content.Commit.Proposals {
		if p.Proposal != nil && p.Proposal.Type == mls.ProposalTypeRemove {
			removes++
			if !b.Resync || p.Proposal.Remove.Removed != mls.LeafIndex(b.RemovedLeaf) {
				return mismatch("group %x epoch %d: the external commit removes leaf %d, the event says resync %v of leaf %d",
					b.GroupID, b.Epoch, p.Proposal.Remove.Removed, b.Resync, b.RemovedLeaf)
			}
		}
	}
	g, err := recorded(b.State, b.GroupID, b.Epoch, b.EpochAuthenticator)
	if err != nil {
		return err
	}
	if ln := g.Tree().Leaf(g.LeafIndex()); ln == nil || !bytes.Equal(ln.Credential.Identity, []byte(c.inst)) ||
		!bytes.Equal(ln.SignatureKey, cm.PublicMessage.Content.Commit.Path.LeafNode.SignatureKey) {
		return mismatch("group %x epoch %d: the recorded state does not hold this installation at the external commit's leaf", b.GroupID, b.Epoch)
	}
	if err := checkJoinMembers(g, b.Members); err != nil {
		return err
	}
	if err := c.join(b.GroupID, b.Epoch, g, b.State, b.Resync); err != nil {
		return err
	}
	c.rep.Own++
	return nil
}

// join follows a group joined (by Welcome or external commit) at epoch:
// a group this installation is a member of is not joined again, unless a
// resync abandons that membership; one it left starts a new membership.
func (c *mlsChecker) join(gid []byte, epoch uint64, g *mls.Group, state events.Secret, resync bool) error {
	if prev, ok := c.groups[string(gid)]; ok {
		if !c.left[string(gid)] && !resync {
			return mismatch("group %x joined again (epoch %d) while a member since epoch %d", gid, epoch, prev.Epoch())
		}
	} else {
		c.rep.Groups++
	}
	c.groups[string(gid)] = g
	c.states[string(gid)] = state
	delete(c.left, string(gid))
	delete(c.received, string(gid)) // of a membership that ended
	return nil
}

// checkCommitApplied processes another member's commit again on the
// previous epoch's state (an own commit is checked against its recorded
// state: its path secrets are not recorded), then checks the recorded
// state, transcript hash and membership change.
func checkCommitApplied(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.CommitApplied](ev)
	if err != nil {
		return err
	}
	prev, ok := c.groups[string(b.GroupID)]
	if !ok {
		return mismatch("commit for group %x, which was never created or joined", b.GroupID)
	}
	if c.left[string(b.GroupID)] {
		return mismatch("commit for group %x after this installation's removal", b.GroupID)
	}
	if b.Epoch != prev.Epoch()+1 {
		return mismatch("group %x: commit to epoch %d after epoch %d (missing or reordered commit)", b.GroupID, b.Epoch, prev.Epoch())
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(b.Commit); err != nil {
		return mismatch("group %x epoch %d: recorded commit: %v", b.GroupID, b.Epoch, err)
	}
	own := false
	if b.Committer != nil {
		own = b.Committer.Own
	} else if leaf, ok := membership.CommitSender(b.Commit); ok && leaf == prev.LeafIndex() {
		own = true // recorded before commits named their committer
	}
	if own {
		if b.Committer != nil && b.Committer.Leaf != uint32(prev.LeafIndex()) {
			return mismatch("group %x epoch %d: own commit recorded from leaf %d, this member is at leaf %d", b.GroupID, b.Epoch, b.Committer.Leaf, prev.LeafIndex())
		}
		c.rep.Own++
	} else {
		lent := c.withPSKs(prev)
		process := lent.ProcessCommit
		if b.Committer != nil && b.Committer.External {
			process = lent.ProcessExternalCommit
		}
		ng, rec, err := process(&m)
		if err != nil {
			return mismatch("group %x epoch %d: processing the recorded commit again: %v", b.GroupID, b.Epoch, err)
		}
		if ng.Epoch() != b.Epoch || !bytes.Equal(ng.EpochAuthenticator(), b.EpochAuthenticator) {
			return mismatch("group %x epoch %d: the recorded commit re-derives another epoch authenticator", b.GroupID, b.Epoch)
		}
		if b.Committer != nil && (b.Committer.Leaf != uint32(rec.Sender) || !bytes.Equal(b.Committer.Identity, rec.SenderCredential.Identity)) {
			return mismatch("group %x epoch %d: commit recorded from %q@%d, the message is from %q@%d", b.GroupID, b.Epoch,
				b.Committer.Identity, b.Committer.Leaf, rec.SenderCredential.Identity, rec.Sender)
		}
		c.rep.Rederived++
	}
	state, err := b.StateOf(c.states[string(b.GroupID)].Bytes())
	if err != nil {
		return mismatch("%w", err)
	}
	g, err := recorded(state, b.GroupID, b.Epoch, b.EpochAuthenticator)
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
	if err := c.checkFollows(b.GroupID, prev, g); err != nil {
		return err
	}
	c.groups[string(b.GroupID)] = g
	c.states[string(b.GroupID)] = state
	return nil
}

// checkProposalStaged processes another member's recorded proposal again
// on the state before it: it must cache the recorded proposal, from the
// recorded sender, under the recorded reference. An own proposal is
// checked against its recorded state (its message cannot be made again:
// an encrypted one draws a fresh reuse guard). Either way the recorded
// state, which must hold the proposal, is what follows. A proposal
// recorded before they carried their message and state is not checked.
func checkProposalStaged(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ProposalStaged](ev)
	if err != nil {
		return err
	}
	prev, ok := c.groups[string(b.GroupID)]
	if !ok {
		return mismatch("proposal for group %x, which was never created or joined", b.GroupID)
	}
	if b.Message == nil && b.State.IsZero() && b.StateDelta.IsZero() {
		return nil
	}
	if c.left[string(b.GroupID)] {
		return mismatch("proposal for group %x after this installation's removal", b.GroupID)
	}
	if b.Epoch != prev.Epoch() {
		return mismatch("group %x: proposal of epoch %d recorded at epoch %d", b.GroupID, b.Epoch, prev.Epoch())
	}
	if !b.Own {
		var m mls.MLSMessage
		if err := m.Unmarshal(b.Message); err != nil {
			return mismatch("group %x epoch %d: recorded proposal message: %v", b.GroupID, b.Epoch, err)
		}
		ng, rec, err := prev.Process(&m)
		if err != nil {
			return mismatch("group %x epoch %d: processing the recorded proposal again: %v", b.GroupID, b.Epoch, err)
		}
		ps := ng.PendingProposals()
		if len(ps) == 0 || rec.ContentType != mls.ContentTypeProposal || !sameProposal(ps[len(ps)-1], b) ||
			!bytes.Equal(rec.SenderCredential.Identity, b.Sender) {
			return mismatch("group %x epoch %d: the recorded proposal message re-derives another proposal than the one recorded (ref %x)", b.GroupID, b.Epoch, b.ProposalRef)
		}
		c.rep.Rederived++
	} else {
		c.rep.Own++
	}
	state, err := b.StateOf(c.states[string(b.GroupID)].Bytes())
	if err != nil {
		return mismatch("%w", err)
	}
	g, err := recorded(state, b.GroupID, b.Epoch, prev.EpochAuthenticator())
	if err != nil {
		return err
	}
	found := false
	for _, p := range g.PendingProposals() {
		if sameProposal(p, b) {
			found = true
		}
	}
	if !found {
		return mismatch("group %x epoch %d: the recorded state does not hold proposal %x", b.GroupID, b.Epoch, b.ProposalRef)
	}
	if err := c.checkFollows(b.GroupID, prev, g); err != nil {
		return err
	}
	c.groups[string(b.GroupID)] = g
	return nil
}

// sameProposal reports whether a cached proposal is the recorded one,
// from the recorded sender.
func sameProposal(p mls.PendingProposal, b events.ProposalStaged) bool {
	enc, err := p.Proposal.Marshal()
	typ, at := proposalSender(p.Sender)
	return err == nil && bytes.Equal(p.Ref, b.ProposalRef) && uint16(p.Proposal.Type) == b.ProposalType &&
		typ == b.SenderType && at == b.SenderLeaf && bytes.Equal(enc, b.Proposal)
}

// proposalSender is how a proposal event records its sender: the sender
// type of a non-member (0 for a member) and the member's leaf or the
// external sender's index.
func proposalSender(s mls.Sender) (typ uint8, at uint32) {
	switch s.Type {
	case mls.SenderTypeExternal:
		return uint8(s.Type), s.SenderIndex
	case mls.SenderTypeNewMemberProposal:
		return uint8(s.Type), 0
	}
	return 0, uint32(s.LeafIndex)
}

// checkStateRecorded: a state recorded as it stood (before retention)
// cannot be re-derived (the messages that moved its ratchets may be
// gone); it must be of a group this installation is in, at the group's
// epoch and authenticator, caching the proposals the state before
// cached. It is what follows.
func checkStateRecorded(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.StateRecorded](ev)
	if err != nil {
		return err
	}
	prev, ok := c.groups[string(b.GroupID)]
	if !ok || c.left[string(b.GroupID)] {
		return mismatch("state recorded for group %x, which this installation is not in", b.GroupID)
	}
	if b.Epoch != prev.Epoch() {
		return mismatch("group %x: state of epoch %d recorded at epoch %d", b.GroupID, b.Epoch, prev.Epoch())
	}
	state, err := b.StateOf(c.states[string(b.GroupID)].Bytes())
	if err != nil {
		return mismatch("%w", err)
	}
	g, err := recorded(state, b.GroupID, b.Epoch, prev.EpochAuthenticator())
	if err != nil {
		return err
	}
	before, after := prev.PendingProposals(), g.PendingProposals()
	if !slices.EqualFunc(before, after, func(p, q mls.PendingProposal) bool { return bytes.Equal(p.Ref, q.Ref) }) {
		return mismatch("group %x epoch %d: the recorded state caches %d proposals, the state before %d", b.GroupID, b.Epoch, len(after), len(before))
	}
	if err := c.checkFollows(b.GroupID, prev, g); err != nil {
		return err
	}
	c.groups[string(b.GroupID)] = g
	return nil
}

// checkHandshakeFormatSet: the group must be one this installation holds.
func checkHandshakeFormatSet(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.HandshakeFormatSet](ev)
	if err != nil {
		return err
	}
	if _, ok := c.groups[string(b.GroupID)]; !ok || c.left[string(b.GroupID)] {
		return mismatch("handshake wire format for group %x, which this installation is not in", b.GroupID)
	}
	return nil
}

func checkMemberAdded(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.MemberAdded](ev)
	if err != nil {
		return err
	}
	return checkMember(c.groups, b.GroupID, b.Epoch, b.Leaf, b.Identity)
}

// checkMemberRemoved: only this installation's own removal is recorded as
// an event of its own (others' are in the commit's Removed).
func checkMemberRemoved(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.MemberRemoved](ev)
	if err != nil {
		return err
	}
	if err := checkMember(c.groups, b.GroupID, b.Epoch, b.Leaf, b.Identity); err != nil {
		return err
	}
	if !bytes.Equal(b.Identity, []byte(c.inst)) {
		return mismatch("group %x epoch %d: removal of %q recorded on its own; only this installation's is", b.GroupID, b.Epoch, b.Identity)
	}
	c.left[string(b.GroupID)] = true
	return nil
}

func checkMessageSent(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ApplicationMessageSent](ev)
	if err != nil {
		return err
	}
	if err := checkMessageEpoch(c.groups, b.GroupID, b.Epoch); err != nil {
		return err
	}
	return checkSentMessage(b)
}

// checkSentMessage checks the message an own application message records
// (application.message_sent v2 on), which a restarted sender hands out
// again (the engine's OwnMessages): a PrivateMessage of the recorded
// group and epoch, carrying application data and the recorded
// authenticated data, whose digest is the recorded message id (the
// engine's: the first 16 bytes of its SHA-256). Its content cannot be
// checked here: only the other members can decrypt it.
func checkSentMessage(b events.ApplicationMessageSent) error {
	if b.Message == nil {
		return nil // v1: not recorded
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(b.Message); err != nil {
		return mismatch("group %x epoch %d: own message %x: the recorded message does not decode: %v", b.GroupID, b.Epoch, b.MessageID, err)
	}
	pm := m.PrivateMessage
	switch {
	case pm == nil:
		return mismatch("group %x epoch %d: own message %x: the recorded message is a %v, not a PrivateMessage", b.GroupID, b.Epoch, b.MessageID, m.WireFormat)
	case !bytes.Equal(pm.GroupID, b.GroupID) || pm.Epoch != b.Epoch:
		return mismatch("group %x epoch %d: own message %x: the recorded message is of group %x epoch %d", b.GroupID, b.Epoch, b.MessageID, pm.GroupID, pm.Epoch)
	case pm.ContentType != mls.ContentTypeApplication || !bytes.Equal(pm.AuthenticatedData, b.AuthenticatedData):
		return mismatch("group %x epoch %d: own message %x: the recorded message carries %v content or other authenticated data", b.GroupID, b.Epoch, b.MessageID, pm.ContentType)
	}
	if sum := sha256.Sum256(b.Message); !bytes.Equal(sum[:16], b.MessageID) {
		return mismatch("group %x epoch %d: own message %x: the recorded message's digest is %x", b.GroupID, b.Epoch, b.MessageID, sum[:16])
	}
	return nil
}

func checkMessageReceived(c *mlsChecker, ev events.Event) error {
	b, err := bodyOf[events.ApplicationMessageReceived](ev)
	if err != nil {
		return err
	}
	if err := checkMessageEpoch(c.groups, b.GroupID, b.Epoch); err != nil {
		return err
	}
	if b.GenerationKnown {
		gid := string(b.GroupID)
		c.received[gid] = append(c.received[gid], mls.ReceivedGeneration{Epoch: b.Epoch, Sender: mls.LeafIndex(b.SenderLeaf), Generation: b.Generation})
	}
	return nil
}

// checkMember reports a recorded member that does not sit at its leaf in
// the group's tree at the recorded epoch.
func checkMember(groups map[string]*mls.Group, gid []byte, epoch uint64, leaf uint32, identity []byte) error {
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
