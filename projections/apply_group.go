package projections

// The group aggregates: creation or join by Welcome, proposals, commits
// (one epoch each), members and the retirement of past epochs' secrets.
// A batch keeps what it learns of a group in a batchGroup and writes the
// commits' rows once, in flush.

import (
	"database/sql"
	"errors"
	"time"

	"github.com/epochlog/epochlog/events"
)

// batchGroup is one group as the batch sees it, loaded lazily: one map
// lookup per event instead of one per fact. Zero "known" flags mean the
// fact has not been read from the database yet.
type batchGroup struct {
	epochKnown bool
	epoch      uint64          // current epoch
	held       map[uint64]bool // epoch -> secrets held, as read or set

	ordinalKnown bool
	ordinal      int64 // highest message ordinal

	hasLastMsg bool
	lastMsg    int64 // latest message time (schema v2), written in flush

	proposalsKnown, hasProposals bool // whether staged proposals may exist

	// The commits of the batch: the group's newest row and the new
	// epochs' rows, written in flush. An epoch retired within the same
	// batch is then inserted without its state, so replay never writes
	// the large state blobs it would blank a few events later.
	row       *groupRow
	newEpochs map[uint64]*epochRow
}

// group returns the batch's view of a group (created empty on first use).
func (a *applier) group(id []byte) *batchGroup {
	if g, ok := a.groups[string(id)]; ok {
		return g
	}
	g := &batchGroup{held: map[uint64]bool{}, newEpochs: map[uint64]*epochRow{}}
	a.groups[string(id)] = g
	return g
}

type groupRow struct {
	epoch     uint64
	state     []byte
	auth, cth []byte
	updatedAt int64
}

type epochRow struct {
	auth, cth, commit, state []byte
	createdAt                int64
	retired                  bool
}

type epochKey struct {
	group string
	epoch uint64
}

func (a *applier) groupEpoch(id []byte) (uint64, error) {
	return a.loadEpoch(id, a.group(id))
}

func (a *applier) loadEpoch(id []byte, g *batchGroup) (uint64, error) {
	if g.epochKnown {
		return g.epoch, nil
	}
	err := a.query1(`SELECT epoch FROM groups WHERE group_id = ?`, []any{id}, &g.epoch)
	if errors.Is(err, errNoRow) {
		return 0, cannot("unknown group %x", id)
	}
	g.epochKnown = err == nil
	return g.epoch, err
}

// epochHeld reports whether the group's epoch exists with its secrets.
func (a *applier) epochHeld(id []byte, g *batchGroup, epoch uint64) (bool, error) {
	if e, ok := g.newEpochs[epoch]; ok {
		return !e.retired, nil
	}
	if h, ok := g.held[epoch]; ok {
		return h, nil
	}
	var retired bool
	err := a.query1(`SELECT retired FROM epochs WHERE group_id = ? AND epoch = ?`, []any{id, epoch}, &retired)
	if errors.Is(err, errNoRow) {
		g.held[epoch] = false
		return false, nil
	}
	if err != nil {
		return false, err
	}
	g.held[epoch] = !retired
	return !retired, nil
}

func (a *applier) newGroup(id []byte, suite uint16, epoch uint64, state []byte, auth []byte, via string, t time.Time) error {
	if len(id) == 0 {
		return cannot("group without id")
	}
	var n int
	if err := a.query1(`SELECT count(*) FROM groups WHERE group_id = ?`, []any{id}, &n); err != nil {
		return err
	}
	if n != 0 {
		return cannot("group %x exists", id)
	}
	if _, err := a.exec(`INSERT INTO groups(group_id, ciphersuite, epoch, state, epoch_authenticator, joined_via, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, int64(suite), epoch, state, nullBytes(auth), via, nanos(t), nanos(t)); err != nil {
		return err
	}
	_, err := a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, state, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, epoch, nullBytes(auth), state, nanos(t))
	if err == nil {
		g := a.group(id)
		g.epoch, g.epochKnown = epoch, true
		g.held[epoch] = true
	}
	return err
}

func applyGroupCreated(a *applier, ev events.Event) error {
	b, err := body[events.GroupCreated](ev)
	if err != nil {
		return err
	}
	return a.newGroup(b.GroupID, b.Ciphersuite, b.Epoch, b.State, nil, "created", ev.Time)
}

func applyWelcomeProcessed(a *applier, ev events.Event) error {
	b, err := body[events.WelcomeProcessed](ev)
	if err != nil {
		return err
	}
	var suite uint16
	if len(b.KeyPackageRef) > 0 {
		if err := a.query1(`SELECT ciphersuite FROM key_packages WHERE ref = ?`, []any{b.KeyPackageRef}, &suite); err != nil {
			if errors.Is(err, errNoRow) {
				return cannot("welcome for unknown key package %x", b.KeyPackageRef)
			}
			return err
		}
	} else {
		if err := a.query1(`SELECT ciphersuite FROM installation WHERE id = 1`, nil, &suite); err != nil && !errors.Is(err, errNoRow) {
			return err
		}
	}
	return a.newGroup(b.GroupID, suite, b.Epoch, b.State, b.EpochAuthenticator, "welcome", ev.Time)
}

func applyProposalStaged(a *applier, ev events.Event) error {
	b, err := body[events.ProposalStaged](ev)
	if err != nil {
		return err
	}
	epoch, err := a.groupEpoch(b.GroupID)
	if err != nil {
		return err
	}
	if b.Epoch != epoch {
		return cannot("proposal for epoch %d, group %x is at %d", b.Epoch, b.GroupID, epoch)
	}
	_, err = a.exec(`INSERT INTO proposals(group_id, proposal_ref, epoch, proposal_type, sender_leaf, proposal) VALUES (?, ?, ?, ?, ?, ?)`,
		b.GroupID, b.ProposalRef, b.Epoch, int64(b.ProposalType), int64(b.SenderLeaf), b.Proposal)
	if err == nil {
		g := a.group(b.GroupID)
		g.proposalsKnown, g.hasProposals = true, true
	}
	return err
}

func applyCommitApplied(a *applier, ev events.Event) error {
	b, err := body[events.CommitApplied](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	epoch, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	if b.Epoch != epoch+1 {
		return cannot("commit to epoch %d, group %x is at epoch %d", b.Epoch, b.GroupID, epoch)
	}
	t := nanos(ev.Time)
	g.row = &groupRow{epoch: b.Epoch, state: []byte(b.State),
		auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, updatedAt: t}
	g.newEpochs[b.Epoch] = &epochRow{auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, commit: b.Commit,
		state: []byte(b.State), createdAt: t}
	a.epochOrder = append(a.epochOrder, epochKey{string(b.GroupID), b.Epoch})
	g.epoch = b.Epoch
	g.held[b.Epoch] = true
	// Proposals belong to the epoch they were sent in.
	if !g.proposalsKnown || g.hasProposals {
		if _, err := a.exec(`DELETE FROM proposals WHERE group_id = ? AND epoch < ?`, b.GroupID, b.Epoch); err != nil {
			return err
		}
		g.proposalsKnown, g.hasProposals = true, false
	}
	for _, m := range b.Removed {
		if err := a.removeMember(b.GroupID, b.Epoch, m.Leaf, m.Identity); err != nil {
			return err
		}
	}
	for _, m := range b.Added {
		if err := a.addMember(b.GroupID, b.Epoch, m.Leaf, m.Identity); err != nil {
			return err
		}
	}
	return nil
}

// addMember is idempotent for the same member at the same leaf, because a
// commit's summary and the member.added event describe the same change.
func (a *applier) addMember(group []byte, epoch uint64, leaf uint32, identity []byte) error {
	var cur []byte
	var removed sql.NullInt64
	err := a.query1(`SELECT identity, removed_epoch FROM members WHERE group_id = ? AND leaf = ?`, []any{group, int64(leaf)}, &cur, &removed)
	switch {
	case errors.Is(err, errNoRow):
		_, err = a.exec(`INSERT INTO members(group_id, leaf, identity, added_epoch) VALUES (?, ?, ?, ?)`, group, int64(leaf), identity, epoch)
		return err
	case err != nil:
		return err
	case !removed.Valid && string(cur) == string(identity):
		return nil
	case !removed.Valid:
		return cannot("add member at leaf %d of group %x: leaf is occupied by another member", leaf, group)
	}
	// A removed member's leaf is reused.
	_, err = a.exec(`UPDATE members SET identity = ?, added_epoch = ?, removed_epoch = NULL WHERE group_id = ? AND leaf = ?`, identity, epoch, group, int64(leaf))
	return err
}

func (a *applier) removeMember(group []byte, epoch uint64, leaf uint32, identity []byte) error {
	var cur []byte
	var removed sql.NullInt64
	err := a.query1(`SELECT identity, removed_epoch FROM members WHERE group_id = ? AND leaf = ?`, []any{group, int64(leaf)}, &cur, &removed)
	if errors.Is(err, errNoRow) {
		return cannot("remove leaf %d of group %x: no such member", leaf, group)
	}
	if err != nil {
		return err
	}
	if len(identity) > 0 && string(cur) != string(identity) {
		return cannot("remove leaf %d of group %x: identity does not match", leaf, group)
	}
	if removed.Valid {
		if uint64(removed.Int64) == epoch {
			return nil
		}
		return cannot("remove leaf %d of group %x: already removed in epoch %d", leaf, group, removed.Int64)
	}
	_, err = a.exec(`UPDATE members SET removed_epoch = ? WHERE group_id = ? AND leaf = ?`, epoch, group, int64(leaf))
	return err
}

// epochReached refuses an event of a group's future epoch; what names the
// event in the error.
func (a *applier) epochReached(group []byte, epoch uint64, what string) error {
	cur, err := a.groupEpoch(group)
	if err != nil {
		return err
	}
	if epoch > cur {
		return cannot("%s in epoch %d, group %x is at epoch %d", what, epoch, group, cur)
	}
	return nil
}

func applyMemberAdded(a *applier, ev events.Event) error {
	b, err := body[events.MemberAdded](ev)
	if err != nil {
		return err
	}
	if err := a.epochReached(b.GroupID, b.Epoch, "member added"); err != nil {
		return err
	}
	return a.addMember(b.GroupID, b.Epoch, b.Leaf, b.Identity)
}

func applyMemberRemoved(a *applier, ev events.Event) error {
	b, err := body[events.MemberRemoved](ev)
	if err != nil {
		return err
	}
	if err := a.epochReached(b.GroupID, b.Epoch, "member removed"); err != nil {
		return err
	}
	return a.removeMember(b.GroupID, b.Epoch, b.Leaf, b.Identity)
}

func applyEpochSecretsRetired(a *applier, ev events.Event) error {
	b, err := body[events.EpochSecretsRetired](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	cur, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	for _, e := range b.Epochs {
		if e >= cur {
			return cannot("retire epoch %d of group %x: the group is at epoch %d", e, b.GroupID, cur)
		}
		if row, ok := g.newEpochs[e]; ok {
			row.retired, row.state = true, nil
			continue
		}
		res, err := a.exec(`UPDATE epochs SET state = NULL, retired = 1 WHERE group_id = ? AND epoch = ?`, b.GroupID, e)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return cannot("retire epoch %d of group %x: no such epoch", e, b.GroupID)
		}
	}
	// Exactly the listed epochs, no window of the read model's own: the
	// window (maximum_past_epochs) is the writer's, and it is recorded by
	// what the writer lists, so that a rebuild, or another process with
	// other options, projects the same rows and accepts the same late
	// messages as the live read model did.
	for _, e := range b.Epochs {
		g.held[e] = false
	}
	return nil
}
