package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
)

// Receive processes an incoming MLSMessage as delivered: a Welcome joins
// the group (see ProcessWelcome), a commit moves the group to its next
// epoch, a proposal is cached for a commit by reference, an application
// message is decrypted. Proposals and commits are taken as PublicMessage
// or PrivateMessage alike. The transition is recorded and projected
// before Receive returns. An application message of a retired epoch is
// ErrEpochRetired; a proposal of a past epoch ErrStaleProposal; anything
// received before ErrDuplicateMessage.
func (in *Installation) Receive(ctx context.Context, wire []byte) (*Received, error) {
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		return nil, fmt.Errorf("engine: installation %s: receive: %w", in.id, err)
	}
	switch {
	case m.Welcome != nil:
		return in.ProcessWelcome(ctx, wire)
	case m.PublicMessage != nil:
		c := m.PublicMessage.Content
		if mls.IsExternalCommit(&m) {
			return in.processCommit(ctx, c.GroupID, c.Epoch, &m, wire)
		}
		if c.Sender.Type != mls.SenderTypeMember && c.ContentType == mls.ContentTypeProposal &&
			(c.Sender.Type == mls.SenderTypeExternal || c.Sender.Type == mls.SenderTypeNewMemberProposal) {
			return in.processProposal(ctx, c.GroupID, c.Epoch, &m, wire)
		}
		if c.Sender.Type != mls.SenderTypeMember {
			return nil, fmt.Errorf("engine: installation %s: group %x: %s from sender type %d: %w", in.id, c.GroupID, contentName(c.ContentType), c.Sender.Type, ErrUnsupportedMessage)
		}
		switch c.ContentType {
		case mls.ContentTypeCommit:
			return in.processCommit(ctx, c.GroupID, c.Epoch, &m, wire)
		case mls.ContentTypeProposal:
			return in.processProposal(ctx, c.GroupID, c.Epoch, &m, wire)
		}
		return nil, fmt.Errorf("engine: installation %s: group %x: public message of content type %d: %w", in.id, c.GroupID, c.ContentType, ErrUnsupportedMessage)
	case m.PrivateMessage != nil:
		pm := m.PrivateMessage
		switch pm.ContentType {
		case mls.ContentTypeApplication:
			return in.processApplication(ctx, pm.GroupID, pm.Epoch, &m, wire)
		case mls.ContentTypeCommit:
			return in.processCommit(ctx, pm.GroupID, pm.Epoch, &m, wire)
		case mls.ContentTypeProposal:
			return in.processProposal(ctx, pm.GroupID, pm.Epoch, &m, wire)
		}
		return nil, fmt.Errorf("engine: installation %s: group %x: private message of content type %d: %w", in.id, pm.GroupID, pm.ContentType, ErrUnsupportedMessage)
	default:
		return nil, fmt.Errorf("engine: installation %s: wire format %d: %w", in.id, m.WireFormat, ErrUnsupportedMessage)
	}
}

// contentName names a content type in errors.
func contentName(ct mls.ContentType) string {
	switch ct {
	case mls.ContentTypeApplication:
		return "application message"
	case mls.ContentTypeProposal:
		return "proposal"
	case mls.ContentTypeCommit:
		return "commit"
	}
	return fmt.Sprintf("content type %d", ct)
}

// processCommit applies another member's commit (of epoch ep, as the
// message says), or a new member's external commit, and records it.
func (in *Installation) processCommit(ctx context.Context, groupID []byte, ep uint64, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		if ep < gs.g.Epoch() {
			if applied, err := in.commitApplied(ctx, groupID, ep, wire); err != nil {
				return nil, nil, err
			} else if applied {
				return nil, nil, fmt.Errorf("engine: installation %s: group %x: commit of epoch %d, applied already (group at epoch %d): %w", in.id, groupID, ep, gs.g.Epoch(), ErrDuplicateMessage)
			}
			// The commit that ended an earlier membership, delivered again.
			if removed, err := in.db.MemberRemovedAt(ctx, groupID, []byte(in.id), ep); err != nil {
				return nil, nil, fmt.Errorf("engine: installation %s: group %x membership: %w", in.id, groupID, err)
			} else if removed {
				return nil, nil, fmt.Errorf("engine: installation %s: group %x: commit of epoch %d removed this installation from an earlier membership, applied already: %w", in.id, groupID, ep, ErrDuplicateMessage)
			}
			// Another commit of an epoch this installation left: the group
			// went one way, this installation the other.
			if err := in.competingCommit(ctx, groupID, ep, m); err != nil {
				return nil, nil, err
			}
		}
		external := mls.IsExternalCommit(m)
		g, strip, err := in.lendPSKs(ctx, gs.g)
		if err != nil {
			return nil, nil, err
		}
		var ng *mls.Group
		var rec *mls.Received
		if external {
			ng, rec, err = g.ProcessExternalCommit(m)
		} else {
			ng, rec, err = g.ProcessCommit(m)
		}
		if err == nil {
			ng = strip(ng)
		}
		if errors.Is(err, mls.ErrWrongEpoch) && ep > gs.g.Epoch() {
			return nil, nil, fmt.Errorf("engine: installation %s: process commit of epoch %d for group %x at epoch %d: %w "+
				"(a commit is missing: deliver the commits of the epochs in between first)", in.id, ep, groupID, gs.g.Epoch(), err)
		}
		if errors.Is(err, mls.ErrWrongEpoch) && ep < gs.g.Epoch() {
			// An epoch this installation holds nothing of (before its
			// membership): it can never apply. Settled, not held as one
			// queued ahead of its turn.
			return nil, nil, fmt.Errorf("engine: installation %s: commit of epoch %d for group %x at epoch %d, an epoch this installation holds no state of: %w",
				in.id, ep, groupID, gs.g.Epoch(), ErrEpochRetired)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: process commit for group %x epoch %d: %w", in.id, groupID, gs.g.Epoch(), err)
		}
		out = &Received{GroupID: bytes.Clone(groupID), Epoch: ng.Epoch(), Kind: "commit", SenderLeaf: uint32(rec.Sender), Removed: rec.Removed}
		out.Sender = events.InstallationID(rec.SenderCredential.Identity)
		if rec.Removed {
			// A removed member cannot derive the next epoch: it records its
			// own removal and keeps no further state for the group. It
			// left if it had proposed its own removal in that epoch.
			out.Epoch = gs.g.Epoch() + 1
			out.Left = proposedOwnRemoval(gs.g)
			return ng, events.MemberRemoved{GroupID: groupID, Epoch: gs.g.Epoch(), Leaf: uint32(gs.g.LeafIndex()), Identity: []byte(in.id), Left: out.Left}, nil
		}
		body, err := in.commitEvent(ctx, gs.g, ng, gs.epochStart.Bytes(), wire, nil, events.Committer{Leaf: uint32(rec.Sender), Identity: rec.SenderCredential.Identity, External: external})
		if err != nil {
			return nil, nil, err
		}
		return ng, body, nil
	})
	if errors.Is(err, mls.ErrNotMember) {
		// No group state to load: removed. The commit that removed this
		// installation, delivered again, is a duplicate.
		if removed, rerr := in.removedAt(ctx, groupID, ep); rerr != nil {
			return nil, rerr
		} else if removed {
			return nil, fmt.Errorf("engine: installation %s: group %x: commit of epoch %d removed this installation, applied already: %w", in.id, groupID, ep, ErrDuplicateMessage)
		}
	}
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	if out.Removed {
		delete(in.group, string(groupID))
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// proposedOwnRemoval reports whether g caches this member's own proposal
// to remove itself (Leave).
func proposedOwnRemoval(g *mls.Group) bool {
	for _, p := range g.PendingProposals() {
		if p.Sender.Type == mls.SenderTypeMember && p.Sender.LeafIndex == g.LeafIndex() &&
			p.Proposal.Type == mls.ProposalTypeRemove && p.Proposal.Remove.Removed == g.LeafIndex() {
			return true
		}
	}
	return false
}

// processProposal caches another member's proposal (of epoch ep, as the
// message says) for a commit by reference, and records it with the
// state that holds it.
func (in *Installation) processProposal(ctx context.Context, groupID []byte, ep uint64, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	id := messageID(wire)
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		// Checked on every attempt: after a lost race the read model may
		// hold it, recorded by another process of this installation.
		if dup, err := in.db.HasProposalMessage(ctx, groupID, id); err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
		} else if dup {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x proposal %x: %w", in.id, groupID, id, ErrDuplicateMessage)
		}
		cur := gs.g.Epoch()
		if ep < cur {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: proposal of epoch %d, group at epoch %d: %w", in.id, groupID, ep, cur, ErrStaleProposal)
		}
		ng, rec, err := gs.g.Process(m)
		if errors.Is(err, mls.ErrWrongEpoch) && ep > cur {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: proposal of epoch %d: %w "+
				"(a commit is missing: deliver the commit that starts epoch %d to this member first)", in.id, groupID, ep, err, ep)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: process proposal of epoch %d: %w", in.id, groupID, ep, err)
		}
		if rec.ContentType != mls.ContentTypeProposal {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: %s sent as a proposal: %w", in.id, groupID, contentName(rec.ContentType), ErrUnsupportedMessage)
		}
		pp, ok := newProposal(gs.g, ng)
		if !ok {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x proposal %x: cached already: %w", in.id, groupID, id, ErrDuplicateMessage)
		}
		if err := in.checkProposal(ctx, gs.g, pp.Proposal); err != nil {
			return nil, nil, err
		}
		body, err := proposalEvent(ng, pp, gs.epochStart.Bytes(), wire, id, rec.SenderCredential.Identity, false)
		if err != nil {
			return nil, nil, err
		}
		out = &Received{GroupID: bytes.Clone(groupID), Epoch: rec.Epoch, Kind: "proposal", Sender: events.InstallationID(rec.SenderCredential.Identity),
			SenderLeaf: uint32(rec.Sender), ProposalType: proposalTypeName(pp.Proposal.Type), ProposalRef: pp.Ref, MessageID: id,
			AuthenticatedData: rec.AuthenticatedData}
		switch rec.SenderType {
		case mls.SenderTypeExternal:
			out.NonMember, out.SenderLeaf = "external", rec.ExternalSenderIndex
		case mls.SenderTypeNewMemberProposal:
			out.NonMember, out.SenderLeaf = "new_member", 0
		}
		return ng, body, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// removedAt reports whether this installation was removed from the group
// by the commit of epoch ep (and is not a member since).
func (in *Installation) removedAt(ctx context.Context, groupID []byte, ep uint64) (bool, error) {
	if member, err := in.isMember(ctx, groupID); err != nil || member {
		return false, err
	}
	removed, err := in.db.MemberRemovedAt(ctx, groupID, []byte(in.id), ep)
	if err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x membership: %w", in.id, groupID, err)
	}
	return removed, nil
}

// messageReceived refuses an application message already recorded, as
// ErrDuplicateMessage.
func (in *Installation) messageReceived(ctx context.Context, groupID, id []byte) error {
	dup, err := in.db.HasMessage(ctx, groupID, id)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
	}
	if dup {
		return fmt.Errorf("engine: installation %s: group %x message %x: %w", in.id, groupID, id, ErrDuplicateMessage)
	}
	return nil
}

// commitApplied reports whether the group's read model records wire as
// the commit that left epoch ep.
func (in *Installation) commitApplied(ctx context.Context, groupID []byte, ep uint64, wire []byte) (bool, error) {
	applied, err := in.db.CommitStartedEpoch(ctx, groupID, ep+1, wire)
	if err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x epoch %d: %w", in.id, groupID, ep+1, err)
	}
	return applied, nil
}

func (in *Installation) processApplication(ctx context.Context, groupID []byte, epoch uint64, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	id := messageID(wire)
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		// Checked on every attempt: after a lost race the read model has
		// caught up, and may hold this message as received by another
		// process of this installation (a reloaded group cannot tell, its
		// receiving ratchets start afresh).
		if err := in.messageReceived(ctx, groupID, id); err != nil {
			return nil, nil, err
		}
		cur := gs.g.Epoch()
		if epoch > cur {
			// Before the arithmetic below (which would wrap) and the read
			// model (whose integers are signed).
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message for epoch %d, the group is in epoch %d: %w "+
				"(a commit is missing: deliver the commit (SendOutput/CommitOutput .Commit) to this member before messages of the next epoch)",
				in.id, groupID, epoch, cur, mls.ErrWrongEpoch)
		}
		if cur-epoch > uint64(in.opts.MaxPastEpochs) {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d, group at epoch %d keeps %d past epochs: %w",
				in.id, groupID, epoch, cur, in.opts.MaxPastEpochs, ErrEpochRetired)
		}
		if retired, err := in.epochRetired(ctx, groupID, epoch); err != nil {
			return nil, nil, err
		} else if retired {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d: %w", in.id, groupID, epoch, ErrEpochRetired)
		}
		ng, rec, err := gs.g.Process(m)
		if errors.Is(err, mls.ErrEpochRetired) {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d: %w (%w)", in.id, groupID, epoch, ErrEpochRetired, err)
		}
		if errors.Is(err, mls.ErrWrongEpoch) && epoch > cur {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: open message of epoch %d: %w "+
				"(a commit is missing: deliver the commit (SendOutput/CommitOutput .Commit) to this member before messages of the next epoch)",
				in.id, groupID, epoch, err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: open message of epoch %d: %w", in.id, groupID, epoch, err)
		}
		if rec.ContentType != mls.ContentTypeApplication {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, ErrUnsupportedMessage)
		}
		// Named by the credential its signature was verified with, in the
		// message's own epoch: the leaf may hold another member now.
		sender := events.InstallationID(rec.SenderCredential.Identity)
		if err := sender.Validate(); err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: sender leaf %d: %w", in.id, groupID, rec.Sender, err)
		}
		ev, r := applicationReceived(groupID, id, sender, rec)
		out = r
		return ng, ev, nil
	})
	if errors.Is(err, mls.ErrNotMember) {
		// Removed since: a message received before is still a duplicate.
		if derr := in.messageReceived(ctx, groupID, id); derr != nil {
			return nil, derr
		}
		// One of the ended membership's epochs can never be received (a
		// Welcome adds this installation back at a later epoch): settled,
		// not held as one queued ahead of that Welcome.
		if left, ended, lerr := in.leftAfter(ctx, groupID, epoch); lerr != nil {
			return nil, lerr
		} else if ended {
			return nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d, this installation's membership ended at epoch %d: %w",
				in.id, groupID, epoch, left, ErrEpochRetired)
		}
	}
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// leftAfter reports whether this installation's latest membership of the
// group ended at epoch ep or later, and at which epoch.
func (in *Installation) leftAfter(ctx context.Context, groupID []byte, ep uint64) (uint64, bool, error) {
	ms, err := in.db.Memberships(ctx, groupID)
	if err != nil {
		return 0, false, fmt.Errorf("engine: installation %s: group %x memberships: %w", in.id, groupID, err)
	}
	if len(ms) == 0 {
		return 0, false, nil
	}
	last := ms[len(ms)-1]
	return last.LeftEpoch, last.Left != "" && ep <= last.LeftEpoch, nil
}

func (in *Installation) epochRetired(ctx context.Context, groupID []byte, epoch uint64) (bool, error) {
	return in.db.EpochRetired(ctx, groupID, epoch)
}

// ProcessWelcome joins a group from a Welcome (an MLSMessage) with one of
// this installation's key packages. The join is recorded first
// (group.welcome_processed with the members); only then is the key package
// marked consumed, and a last-resort package rotated, so its private keys
// outlive every Welcome that needs them until it is processed. A Welcome
// to a group this installation was removed from (or left), for a later
// epoch than the last one it was in, starts a new membership of it.
func (in *Installation) ProcessWelcome(ctx context.Context, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		return nil, fmt.Errorf("engine: installation %s: welcome: %w", in.id, err)
	}
	if m.Welcome == nil {
		return nil, fmt.Errorf("engine: installation %s: not a welcome (wire format %d): %w", in.id, m.WireFormat, ErrUnsupportedMessage)
	}
	refs := make([][]byte, len(m.Welcome.Secrets))
	for i, s := range m.Welcome.Secrets {
		refs[i] = s.NewMember
	}
	// Decide against the installation's latest events: another process
	// may have processed this Welcome, or consumed its key package.
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	kp, err := in.findKeyPackage(ctx, refs)
	if errors.Is(err, ErrNoKeyPackage) {
		if gid, joined, cerr := in.joinedWith(ctx, refs); cerr != nil {
			return nil, cerr
		} else if joined {
			return nil, fmt.Errorf("engine: installation %s: welcome with a key package consumed by joining group %x: %w (%w)", in.id, gid, ErrDuplicateMessage, err)
		}
	}
	if err != nil {
		return nil, err
	}
	psks, err := in.heldPSKs(ctx)
	if err != nil {
		return nil, err
	}
	opts := mls.JoinOptions{Options: in.mlsOptions(), ExternalPSKs: psks, FindPredecessor: in.predecessorFinder(ctx)}
	g, err := mls.Join(&m, kp.kp, kp.secrets, &opts)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: join from welcome with key package %x: %w", in.id, kp.ref, err)
	}
	g = stripPSKs(g, psks)
	if err := in.checkMembers(ctx, nil, g, nil); err != nil {
		return nil, err
	}
	st, err := g.MarshalBinary()
	if err != nil {
		return nil, err
	}
	gid := g.GroupID()
	joined := events.WelcomeProcessed{
		GroupID: gid, Epoch: g.Epoch(), KeyPackageRef: kp.ref, Welcome: wire,
		EpochAuthenticator: g.EpochAuthenticator(), State: events.NewSecret(st),
		Members: membership.Members(g),
	}
	// A first join starts the group's aggregate (position 0); a group
	// this installation was in before is joined again after its
	// departure, at the aggregate's position (a new membership). Either
	// loses to anything appended meanwhile, and is decided again.
	var joinErr error
	var pos uint64
	for attempt := 0; ; attempt++ {
		if pos, err = in.position(ctx, events.AggGroup, groupKey(gid)); err != nil {
			return nil, err
		}
		if pos > 0 {
			if err := in.rejoinable(ctx, gid, g, kp); err != nil {
				return nil, err
			}
		}
		if attempt == in.opts.MaxAttempts {
			return nil, fmt.Errorf("engine: installation %s: record welcome to group %x: %w", in.id, gid, ErrTooManyConflicts)
		}
		joinErr = in.appendAndProject(ctx, in.groupAgg(gid), pos, joined)
		if !errors.Is(joinErr, eventlog.ErrConflict) {
			break
		}
		if err := in.project(ctx); err != nil {
			return nil, err
		}
		decidedAgain(in.log, in.groupAgg(gid), attempt+1, joinErr)
	}
	if joinErr != nil && !errors.Is(joinErr, errNotProjected) {
		return nil, fmt.Errorf("engine: installation %s: record welcome to group %x: %w", in.id, gid, joinErr)
	}
	in.group[string(gid)] = &groupState{id: gid, pos: pos + 1, g: g, epochStart: epochStartAfter(events.Secret{}, joined)}
	delete(in.wireFormat, string(gid)) // read from the read model when needed
	rec := &Received{GroupID: gid, Epoch: g.Epoch(), Kind: "welcome"}
	if err := in.consumeKeyPackage(ctx, kp, gid); err != nil {
		// The join is recorded; only the key package's bookkeeping failed
		// (its keys stay held longer, never shorter).
		rec.ProjectionErr = err
		return rec, nil
	}
	rec.ProjectionErr = joinErr
	return rec, nil
}

// rejoinable decides whether a Welcome to group gid at epoch, which the
// read model knows, starts a new membership. While this installation is a
// member it does not: a Welcome to its epoch or an earlier one is a
// redelivery (or another process of the installation took it; the key
// package's bookkeeping is finished, in case the first processing stopped
// before it), one to a later epoch comes before the commits that lead
// there. After its departure (removed, or left) a Welcome to a later
// epoch than the last one it was in is an invitation back; an earlier one
// is the Welcome of a past membership delivered again.
//
// A Welcome to an epoch this membership holds is that redelivery only if
// it leads to the epoch this installation holds (the same epoch
// authenticator): another is a competing commit's Welcome (two members
// added this installation in one epoch, with different key packages) or
// a forged one, ErrStaleCommit, which records nothing and consumes no key
// package.
func (in *Installation) rejoinable(ctx context.Context, gid []byte, g *mls.Group, kp *heldKeyPackage) error {
	epoch := g.Epoch()
	member, err := in.isMember(ctx, gid)
	if err != nil {
		return err
	}
	row, _, err := in.db.Group(ctx, gid)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x: %w", in.id, gid, err)
	}
	switch {
	case member && epoch > row.Epoch:
		return fmt.Errorf("engine: installation %s: welcome to group %x at epoch %d, a member at epoch %d: %w "+
			"(commits are missing: deliver them before the Welcome, or resync)", in.id, gid, epoch, row.Epoch, mls.ErrWrongEpoch)
	case member:
		eps, err := in.db.Epochs(ctx, gid)
		if err != nil {
			return fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, gid, err)
		}
		var ours []byte
		for _, e := range eps {
			if e.Epoch == epoch {
				ours = e.EpochAuthenticator
			}
		}
		switch theirs := g.EpochAuthenticator(); {
		case ours == nil:
			return fmt.Errorf("engine: installation %s: welcome to group %x at epoch %d, before this membership's epochs (now %d): %w",
				in.id, gid, epoch, row.Epoch, ErrStaleCommit)
		case !bytes.Equal(ours, theirs):
			// Not a fork this installation can prove: a Welcome is signed
			// by whoever made it, and anyone holding one of this
			// installation's key packages can make one for any group id.
			// The group's own commits tell a real fork (ErrForked).
			return fmt.Errorf("engine: installation %s: welcome to group %x at epoch %d leads to epoch authenticator %x, this membership holds %x there: another commit's Welcome (or a forged one): %w",
				in.id, gid, epoch, theirs[:min(len(theirs), 6)], ours[:min(len(ours), 6)], ErrStaleCommit)
		}
		if err := in.consumeKeyPackage(ctx, kp, gid); err != nil {
			return err
		}
		return fmt.Errorf("engine: installation %s: welcome to group %x (epoch %d): group joined already: %w", in.id, gid, epoch, ErrDuplicateMessage)
	case epoch <= row.Epoch:
		return fmt.Errorf("engine: installation %s: welcome to group %x at epoch %d: this installation was in the group until epoch %d: %w",
			in.id, gid, epoch, row.Epoch, ErrDuplicateMessage)
	}
	return nil
}

// joinedWith reports whether one of refs is a one-time key package of
// this installation that was consumed by joining a group it is still in:
// then a Welcome naming it (whose keys are gone) is that join's
// redelivery, or a misuse of the package. Not a last-resort package: it
// serves many Welcomes, and one naming it after its keys were rotated out
// is a new invitation that cannot be processed (ErrNoKeyPackage).
func (in *Installation) joinedWith(ctx context.Context, refs [][]byte) ([]byte, bool, error) {
	for _, ref := range refs {
		gid, found, err := in.db.GroupJoinedWith(ctx, ref, []byte(in.id))
		if err != nil {
			return nil, false, fmt.Errorf("engine: installation %s: key package %x: %w", in.id, ref, err)
		}
		if found {
			return gid, true, nil
		}
	}
	return nil, false, nil
}

// applicationReceived is the event an application message rec of group
// gid, with message id id, from sender records, and what Receive returns
// of it. The event records the generation the message used: a process
// reloading the group's saved state marks it received (loadGroup).
func applicationReceived(gid, id []byte, sender events.InstallationID, rec *mls.Received) (events.ApplicationMessageReceived, *Received) {
	return events.ApplicationMessageReceived{
			GroupID: gid, Epoch: rec.Epoch, SenderLeaf: uint32(rec.Sender), Sender: sender, MessageID: id,
			Content: events.NewSecret(rec.ApplicationData), AuthenticatedData: rec.AuthenticatedData,
			Generation: rec.Generation, GenerationKnown: true,
		}, &Received{GroupID: bytes.Clone(gid), Epoch: rec.Epoch, Kind: "application", Sender: sender, SenderLeaf: uint32(rec.Sender),
			Content: events.NewSecret(rec.ApplicationData), AuthenticatedData: rec.AuthenticatedData, MessageID: id}
}
