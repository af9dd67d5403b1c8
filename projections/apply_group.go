package projections

// The group aggregates: creation or join by Welcome, proposals, commits
// (one epoch each), members and the retirement of past epochs' secrets.
// A batch keeps what it learns of a group in a batchGroup and writes the
// commits' rows once, in flush.

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/bytedelta"
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
	ordinalDirty bool  // ordinal moved (schema v12: groups.last_ordinal), written in flush

	hasLastMsg bool
	lastMsg    int64 // latest message time (schema v2), written in flush

	proposalsKnown, hasProposals bool // whether staged proposals may exist

	membershipKnown bool
	membership      int64 // current membership (schema v3; 1 before)

	// snapshot is the state a proposal left (schema v3), written in
	// flush after row; a commit later in the batch drops it.
	snapshot *groupSnapshot

	// The commits of the batch: the group's newest row and the new
	// epochs' rows, written in flush. An epoch retired within the same
	// batch is then inserted without its state, so replay never writes
	// the large state blobs it would blank a few events later.
	row       *groupRow
	newEpochs map[uint64]*epochRow

	// minHeld, when minHeldKnown, is at most the group's oldest held
	// epoch: none below it is held (schema v5: see heldBelow).
	minHeld      uint64
	minHeldKnown bool

	// past holds, from schema v5, the state each epoch a commit of the
	// batch ended started with, until flush writes it to epoch_states
	// as a delta from the next epoch's (a retirement drops it first).
	past map[uint64][]byte
}

// group returns the batch's view of a group (created empty on first use).
func (a *applier) group(id []byte) *batchGroup {
	if g, ok := a.groups[string(id)]; ok {
		return g
	}
	g := &batchGroup{held: map[uint64]bool{}, newEpochs: map[uint64]*epochRow{}, past: map[uint64][]byte{}}
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
	committer                []byte // schema v3; nil: not recorded
	own                      any    // schema v3: nil, or 0/1
	// output is the output of an own commit that recorded it (schema
	// v9; nil otherwise).
	output *ownOutputRow
	// recordedOrdinal is recorded_ordinal (schema v12), written after
	// the insert when not 0.
	recordedOrdinal int64
}

// ownOutputRow is what schema 9 keeps of an own commit's output besides
// its message: whom the commit is for (the members of the epoch it
// ended other than this installation, by leaf, removed ones included, as
// the members table had them then), and the Welcome with the members it
// is for (the commit's added members, in the event's order).
type ownOutputRow struct {
	recipients, welcome, welcomeTo []byte // encodeIdentities; welcome(To) NULL when none
}

// commitSum is the commit_sha256 of the row (schema v8): the SHA-256 of
// its commit, or NULL for an epoch no commit started.
func (e *epochRow) commitSum() any {
	if e.commit == nil {
		return nil
	}
	return commitSHA256(e.commit)
}

// commitKept is the commit_message of the row from schema v8: the commit
// whole when this installation made it, or when who made it was not
// recorded (before schema 3); NULL for another member's commit, which its
// hash stands for.
func (e *epochRow) commitKept() any {
	if own, recorded := e.own.(bool); recorded && !own {
		return nil
	}
	return nullBytes(e.commit)
}

// groupSnapshot is a group's state after a proposal was cached, and the
// highest message ordinal then: the messages sent before it are in it.
// From schema v5 it is stored as a delta from base, the state the epoch
// started with.
type groupSnapshot struct {
	state, base []byte
	ordinal     int64
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

// groupMembership returns the group's current membership: 1 before
// schema v3, which has no others.
func (a *applier) groupMembership(id []byte, g *batchGroup) (int64, error) {
	if g.membershipKnown {
		return g.membership, nil
	}
	g.membership = 1
	if a.db.schema >= 3 {
		err := a.query1(`SELECT membership FROM groups WHERE group_id = ?`, []any{id}, &g.membership)
		if errors.Is(err, errNoRow) {
			return 0, cannot("unknown group %x", id)
		}
		if err != nil {
			return 0, err
		}
	}
	g.membershipKnown = true
	return g.membership, nil
}

// newGroup records joining a group: creating it, or joining by Welcome or
// external commit. Joining a group the read model knows is a new
// membership (schema v3): allowed once this installation's previous one
// ended (removed, left, or abandoned), which is archived first.
//
// own is the commit that started the epoch, for a join by this
// installation's own external commit (nil otherwise).
// A resync abandons the current membership, member or not.
func (a *applier) newGroup(id []byte, suite uint16, epoch uint64, state []byte, auth []byte, via string, t time.Time, own []byte, resync bool) error {
	if len(id) == 0 {
		return cannot("group without id")
	}
	var n int
	if err := a.query1(`SELECT count(*) FROM groups WHERE group_id = ?`, []any{id}, &n); err != nil {
		return err
	}
	membership := int64(1)
	if n == 0 && resync {
		return cannot("resync of group %x, which the read model does not know", id)
	}
	if n != 0 {
		if a.db.schema < 3 || via == "created" {
			return cannot("group %x exists", id)
		}
		var err error
		if membership, err = a.archiveMembership(id, resync); err != nil {
			return err
		}
		membership++
		if _, err := a.exec(`UPDATE groups SET ciphersuite = ?, epoch = ?, state = ?, epoch_authenticator = ?, confirmed_transcript_hash = NULL,
			joined_via = ?, updated_at = ?, membership = ?, state_ordinal = 0`+a.sentDeletedReset()+` WHERE group_id = ?`,
			int64(suite), epoch, state, nullBytes(auth), via, nanos(t), membership, id); err != nil {
			return err
		}
		if a.db.schema >= 5 {
			if _, err := a.exec(`UPDATE groups SET proposal_state = NULL WHERE group_id = ?`, id); err != nil {
				return err
			}
		}
	} else if _, err := a.exec(`INSERT INTO groups(group_id, ciphersuite, epoch, state, epoch_authenticator, joined_via, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, int64(suite), epoch, state, nullBytes(auth), via, nanos(t), nanos(t)); err != nil {
		return err
	}
	if own != nil {
		if a.db.schema < 3 {
			return cannot("join of group %x by external commit: the read model's schema %d keeps it from schema 3 on", id, a.db.schema)
		}
		q := `INSERT INTO epochs(group_id, epoch, epoch_authenticator, state, created_at, commit_message, committer, own_commit) VALUES (?, ?, ?, ?, ?, ?, ?, 1)`
		args := []any{id, epoch, nullBytes(auth), state, nanos(t), own, []byte(a.inst)}
		if a.db.schema >= 5 { // the state is the group's
			q = `INSERT INTO epochs(group_id, epoch, epoch_authenticator, created_at, commit_message, committer, own_commit) VALUES (?, ?, ?, ?, ?, ?, 1)`
			args = slices.Delete(args, 3, 4)
		}
		if a.db.schema >= 8 {
			q = `INSERT INTO epochs(group_id, epoch, epoch_authenticator, created_at, commit_message, committer, own_commit, commit_sha256) VALUES (?, ?, ?, ?, ?, ?, 1, ?)`
			args = append(args, commitSHA256(own))
		}
		if _, err := a.exec(q, args...); err != nil {
			return err
		}
	} else if a.db.schema >= 5 {
		if _, err := a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, created_at) VALUES (?, ?, ?, ?)`,
			id, epoch, nullBytes(auth), nanos(t)); err != nil {
			return err
		}
	} else if _, err := a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, state, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, epoch, nullBytes(auth), state, nanos(t)); err != nil {
		return err
	}
	if a.db.schema >= 3 {
		if _, err := a.exec(`INSERT INTO group_memberships(group_id, membership, joined_via, joined_epoch, joined_at) VALUES (?, ?, ?, ?, ?)`,
			id, membership, via, epoch, nanos(t)); err != nil {
			return err
		}
	}
	a.starts[string(id)] = epochStart{} // not known: read back when needed
	g := a.group(id)
	g.epoch, g.epochKnown = epoch, true
	g.held = map[uint64]bool{epoch: true}
	g.minHeldKnown = false
	g.membership, g.membershipKnown = membership, true
	g.proposalsKnown, g.hasProposals = true, false
	return nil
}

// archiveMembership ends the group's current membership for a new one:
// its members and epochs move to past_members and past_epochs, without
// the epochs' secret state (they can serve nothing any more), and its
// proposals go. It refuses while this installation is still a member,
// unless resync abandons the membership. It returns the membership
// archived.
func (a *applier) archiveMembership(id []byte, resync bool) (int64, error) {
	var member int
	if err := a.query1(`SELECT count(*) FROM members WHERE group_id = ? AND identity = ? AND removed_epoch IS NULL`,
		[]any{id, []byte(a.inst)}, &member); err != nil {
		return 0, err
	}
	if member != 0 && !resync {
		return 0, cannot("join group %x: this installation is a member of it already", id)
	}
	g := a.group(id)
	last, err := a.loadEpoch(id, g)
	if err != nil {
		return 0, err
	}
	m, err := a.groupMembership(id, g)
	if err != nil {
		return 0, err
	}
	// What the batch holds for the group belongs to the old membership.
	if err := a.flushGroup(string(id), g); err != nil {
		return 0, err
	}
	if _, err := a.exec(`INSERT INTO past_members(group_id, membership, leaf, identity, added_epoch, removed_epoch)
		SELECT group_id, ?, leaf, identity, added_epoch, removed_epoch FROM members WHERE group_id = ?`, m, id); err != nil {
		return 0, err
	}
	pastEpochs := `INSERT INTO past_epochs(group_id, membership, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, committer, own_commit, created_at)
		SELECT group_id, ?, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, committer, own_commit, created_at FROM epochs WHERE group_id = ?`
	if a.db.schema >= 8 {
		pastEpochs = `INSERT INTO past_epochs(group_id, membership, epoch, epoch_authenticator, confirmed_transcript_hash, commit_sha256, commit_message, committer, own_commit, created_at)
		SELECT group_id, ?, epoch, epoch_authenticator, confirmed_transcript_hash, commit_sha256, commit_message, committer, own_commit, created_at FROM epochs WHERE group_id = ?`
	}
	if _, err := a.exec(pastEpochs, m, id); err != nil {
		return 0, err
	}
	drop := []string{`DELETE FROM members WHERE group_id = ?`, `DELETE FROM epochs WHERE group_id = ?`, `DELETE FROM proposals WHERE group_id = ?`}
	if a.db.schema >= 5 {
		drop = append(drop, `DELETE FROM epoch_states WHERE group_id = ?`)
	}
	if a.db.schema >= 10 {
		drop = append(drop, `DELETE FROM message_recipients WHERE group_id = ?`)
	}
	for _, q := range drop {
		if _, err := a.exec(q, id); err != nil {
			return 0, err
		}
	}
	// A membership that ended without a recorded departure (a resync:
	// its state was lost or forked) is closed here, at the last epoch it
	// knew.
	if _, err := a.exec(`UPDATE group_memberships SET left_epoch = ?, left_how = 'abandoned' WHERE group_id = ? AND membership = ? AND left_how IS NULL`, last, id, m); err != nil {
		return 0, err
	}
	return m, nil
}

func applyGroupCreated(a *applier, ev events.Event) error {
	b, err := body[events.GroupCreated](ev)
	if err != nil {
		return err
	}
	if err := a.newGroup(b.GroupID, b.Ciphersuite, b.Epoch, b.State.Bytes(), nil, "created", ev.Time, nil, false); err != nil {
		return err
	}
	if err := a.addMembers(b.GroupID, b.Epoch, b.Members); err != nil {
		return err
	}
	// A successor group's first commit comes with its creation (version
	// 3): the rows are those of the two events a version 2 writer
	// appended, the creation then the commit.
	commit, ok, err := events.FirstCommitOf(ev)
	if err != nil {
		return cannot("%w", err)
	}
	if ok {
		return applyCommitApplied(a, commit)
	}
	return nil
}

// addMembers records ms as members of group from epoch (the members a
// join lists, as the group.member_added events after a version 1 join
// did, or those a commit adds), as addMember does for each, in upserts
// of up to addMembersChunk rows: a join or a
// commit adding thousands of members took two statements per member (a
// tenth of a second per thousand). An upsert inserts a new leaf and
// takes over a removed member's; a row it leaves alone (the leaf held by
// a member: the same one again, or another, which is refused) makes it
// change fewer rows than it was given, and then its members go through
// addMember one by one, which answers as before (the rows the upsert
// wrote are then found as the same member again).
func (a *applier) addMembers(group []byte, epoch uint64, ms []events.Member) error {
	for len(ms) > 0 {
		n := addMembersChunk
		if len(ms) < n {
			n = 1
		}
		chunk := ms[:n]
		ms = ms[n:]
		args := make([]any, 0, 4*n)
		for _, m := range chunk {
			args = append(args, group, int64(m.Leaf), m.Identity, epoch)
		}
		q := addMembersUpsert1
		if n > 1 {
			q = addMembersUpsertChunk
		}
		if done, err := a.execChunk(q, n, args...); err != nil {
			return err
		} else if done {
			continue
		}
		for _, m := range chunk {
			if err := a.addMember(group, epoch, m.Leaf, m.Identity); err != nil {
				return err
			}
		}
	}
	return nil
}

// execChunk runs q, which is meant to change n rows (one per member of a
// chunk), and reports whether it changed exactly that many; a caller
// redoes a chunk that did not member by member.
func (a *applier) execChunk(q string, n int, args ...any) (bool, error) {
	res, err := a.exec(q, args...)
	if err != nil {
		return false, err
	}
	changed, err := res.RowsAffected()
	return err == nil && changed == int64(n), nil
}

// addMembersChunk is how many members one upsert of addMembers adds (4
// parameters each, far under SQLite's limit); fewer go one by one, so
// that there are two statements to prepare, not one per count.
const addMembersChunk = 256

// addMembersUpsert1 and addMembersUpsertChunk add one and addMembersChunk
// members: a new row, or a removed member's row taken over.
var (
	addMembersUpsert1     = addMembersUpsert(1)
	addMembersUpsertChunk = addMembersUpsert(addMembersChunk)
)

func addMembersUpsert(n int) string {
	return `INSERT INTO members(group_id, leaf, identity, added_epoch) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", n), ", ") +
		` ON CONFLICT(group_id, leaf) DO UPDATE SET identity = excluded.identity, added_epoch = excluded.added_epoch, removed_epoch = NULL
		WHERE members.removed_epoch IS NOT NULL`
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
	if err := a.newGroup(b.GroupID, suite, b.Epoch, b.State.Bytes(), b.EpochAuthenticator, "welcome", ev.Time, nil, false); err != nil {
		return err
	}
	return a.addMembers(b.GroupID, b.Epoch, b.Members)
}

func applyExternalJoined(a *applier, ev events.Event) error {
	b, err := body[events.ExternalJoined](ev)
	if err != nil {
		return err
	}
	var suite uint16
	if err := a.query1(`SELECT ciphersuite FROM installation WHERE id = 1`, nil, &suite); err != nil {
		if errors.Is(err, errNoRow) {
			return cannot("external join of group %x before installation.created", b.GroupID)
		}
		return err
	}
	commit := b.Commit
	if commit == nil {
		commit = []byte{}
	}
	if err := a.newGroup(b.GroupID, suite, b.Epoch, b.State.Bytes(), b.EpochAuthenticator, "external", ev.Time, commit, b.Resync); err != nil {
		return err
	}
	if b.OwnOutput != nil && a.db.schema < 9 {
		if err := a.outputNotKept(b.GroupID, b.Epoch); err != nil {
			return err
		}
	}
	if a.db.schema >= 9 && b.OwnOutput != nil {
		// The join's output: its commit is for the group's other members
		// (by identity, as the engine sorts them).
		var to [][]byte
		for _, m := range b.Members {
			if string(m.Identity) != a.inst {
				to = append(to, m.Identity)
			}
		}
		slices.SortFunc(to, bytes.Compare)
		if _, err := a.exec(`UPDATE epochs SET recipients = ? WHERE group_id = ? AND epoch = ?`, encodeIdentities(to), b.GroupID, b.Epoch); err != nil {
			return err
		}
	}
	return a.addMembers(b.GroupID, b.Epoch, b.Members)
}

func applyProposalStaged(a *applier, ev events.Event) error {
	b, err := body[events.ProposalStaged](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	epoch, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	if b.Epoch != epoch {
		return cannot("proposal for epoch %d, group %x is at %d", b.Epoch, b.GroupID, epoch)
	}
	if a.db.schema < 3 {
		// What an older schema holds of it: the proposal, not who made
		// it, its message or the state it left.
		_, err = a.exec(`INSERT INTO proposals(group_id, proposal_ref, epoch, proposal_type, sender_leaf, proposal) VALUES (?, ?, ?, ?, ?, ?)`,
			b.GroupID, b.ProposalRef, b.Epoch, int64(b.ProposalType), int64(b.SenderLeaf), b.Proposal)
	} else {
		_, err = a.exec(`INSERT INTO proposals(group_id, proposal_ref, epoch, proposal_type, sender_leaf, proposal, sender, own, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			b.GroupID, b.ProposalRef, b.Epoch, int64(b.ProposalType), int64(b.SenderLeaf), b.Proposal, nullBytes(b.Sender), b.Own, nullBytes(b.MessageID))
	}
	if err != nil {
		return err
	}
	g.proposalsKnown, g.hasProposals = true, true
	if (b.State.Len() > 0 || !b.StateDelta.IsZero()) && a.db.schema >= 3 {
		return a.stateSince(b.GroupID, g, epoch, b.State, !b.StateDelta.IsZero() || b.StateSHA256 != nil, b.StateOf)
	}
	return nil
}

// stateSince makes state (or, when asDelta, what stateOf rebuilds from
// the epoch's starting state) the group's state as of its messages so
// far (groups.state_ordinal): the state a reload starts from, which the
// messages recorded since move on. A proposal's, or one recorded before
// retention.
func (a *applier) stateSince(id []byte, g *batchGroup, epoch uint64, state events.Secret, asDelta bool, stateOf func(base []byte) (events.Secret, error)) error {
	var base []byte
	var err error
	if asDelta || a.db.schema >= 5 {
		if base, err = a.epochStartState(id, g, epoch); err != nil {
			return err
		}
	}
	if asDelta {
		if state, err = stateOf(base); err != nil {
			return cannot("%w", err)
		}
	}
	ord, err := a.messageOrdinal(id, g)
	if err != nil {
		return err
	}
	g.snapshot = &groupSnapshot{state: state.Bytes(), base: base, ordinal: ord}
	return nil
}

// applyStateRecorded: the recorded state becomes the group's, as a
// proposal's does (from v5 groups.proposal_state, a delta from
// groups.state), as of the messages recorded so far; the own messages
// retention deleted since the state before are behind it
// (groups.sent_deleted 0).
func applyStateRecorded(a *applier, ev events.Event) error {
	b, err := body[events.StateRecorded](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	epoch, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	if b.Epoch != epoch {
		return cannot("state of epoch %d recorded, group %x is at %d", b.Epoch, b.GroupID, epoch)
	}
	if a.db.schema < 3 {
		return nil // an older schema keeps the epoch's state only
	}
	if err := a.stateSince(b.GroupID, g, epoch, b.State, !b.StateDelta.IsZero() || b.StateSHA256 != nil, b.StateOf); err != nil {
		return err
	}
	if a.db.schema < 12 {
		return nil
	}
	return a.recordedOrdinal(b.GroupID, g, epoch, g.snapshot.ordinal)
}

// recordedOrdinal keeps (schema v12) in the row of the group's current
// epoch the state ordinal of the state recorded in it
// (epochs.recorded_ordinal): the received messages of the epoch, and of
// the held ones before it, up to there are behind that state and every
// state after it, past the commit that ends the epoch too, so retention
// deletes them (markedSinceRecordedState). A proposal's state is not
// one: until schema 12 a commit forgot it (state_ordinal 0), and
// history before 12 holds no group.state_recorded, so a file migrated in
// place keeps what a fresh build has.
func (a *applier) recordedOrdinal(id []byte, g *batchGroup, epoch uint64, ord int64) error {
	if row, ok := g.newEpochs[epoch]; ok {
		row.recordedOrdinal = ord
		return nil
	}
	res, err := a.exec(`UPDATE epochs SET recorded_ordinal = ? WHERE group_id = ? AND epoch = ?`, ord, id, epoch)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return cannot("state of epoch %d of group %x recorded: no such epoch", epoch, id)
	}
	return nil
}

func applyHandshakeFormatSet(a *applier, ev events.Event) error {
	b, err := body[events.HandshakeFormatSet](ev)
	if err != nil {
		return err
	}
	if _, err := a.groupEpoch(b.GroupID); err != nil {
		return err
	}
	if a.db.schema < 3 {
		return nil // an older schema does not keep it
	}
	if b.WireFormat > 2 {
		return cannot("handshake wire format %d for group %x", b.WireFormat, b.GroupID)
	}
	_, err = a.exec(`UPDATE groups SET handshake_wire_format = ? WHERE group_id = ?`, int64(b.WireFormat), b.GroupID)
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
	state, base, err := a.commitState(b, g, epoch)
	if err != nil {
		return err
	}
	if a.db.schema >= 5 {
		// The epoch this commit ends: its state goes to epoch_states at
		// flush, as a delta from the new one, unless it retires first.
		// Even retired by this very commit it is kept until then: an
		// older held epoch's delta may start from it (retireEpochs).
		if base == nil {
			if base, err = a.epochStartState(b.GroupID, g, epoch); err != nil {
				return err
			}
		}
		g.past[epoch] = base
	}
	start := epochStart{epoch: b.Epoch}
	if !b.StateDelta.IsZero() {
		start.sum, start.known = [32]byte(b.StateSHA256), true // checked by commitState
	}
	a.starts[string(b.GroupID)] = start
	t := nanos(ev.Time)
	g.row = &groupRow{epoch: b.Epoch, state: state.Bytes(),
		auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, updatedAt: t}
	g.snapshot = nil
	row := &epochRow{auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, commit: b.Commit,
		state: state.Bytes(), createdAt: t}
	if c := b.Committer; c != nil {
		row.committer, row.own = c.Identity, c.Own
		if row.committer == nil {
			row.committer = []byte{}
		}
	}
	if c := b.Committer; a.db.schema < 9 && b.OwnOutput != nil && c != nil && c.Own {
		if err := a.outputNotKept(b.GroupID, b.Epoch); err != nil {
			return err
		}
	}
	if c := b.Committer; a.db.schema >= 9 && b.OwnOutput != nil && c != nil && c.Own {
		// Before the commit's membership changes: whom it is for.
		if row.output, err = a.ownOutput(b); err != nil {
			return err
		}
	}
	g.newEpochs[b.Epoch] = row
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
	if err := a.removeMembers(b.GroupID, b.Epoch, b.Removed); err != nil {
		return err
	}
	if err := a.addMembers(b.GroupID, b.Epoch, b.Added); err != nil {
		return err
	}
	return a.retireEpochs(b.GroupID, g, b.Epoch, b.RetiredEpochs)
}

// outputNotKept notes in a file older than schema 9 (kept at its schema
// by follow, or built for an older reader) the first own commit whose
// recorded output it could not keep: migrated in place, such a file would
// lack what a fresh build of the same events has, so MigrateInPlace
// refuses it (ErrOutputsNotKept) rather than lose the outputs silently.
func (a *applier) outputNotKept(group []byte, epoch uint64) error {
	_, err := a.exec(`INSERT OR IGNORE INTO epochlog_meta(name, value) VALUES ('`+outputsNotKeptMeta+`', ?)`,
		fmt.Sprintf("group %x epoch %d", group, epoch))
	return err
}

// otherMembers returns the group's current members but the one at leaf,
// by leaf, packed by encodeIdentities: whom this installation's own
// commit or message is for (the engine's outputs' Recipients).
func (a *applier) otherMembers(group []byte, leaf uint32) ([]byte, error) {
	rows, err := a.query(`SELECT identity FROM members WHERE group_id = ? AND removed_epoch IS NULL AND leaf != ? ORDER BY leaf`,
		group, int64(leaf))
	if err != nil {
		return nil, err
	}
	var to [][]byte
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		to = append(to, id)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return encodeIdentities(to), nil
}

// ownOutput is the output of the own commit b, read before its
// membership changes apply: the engine delivered it to the members of
// the epoch it ended but the committer (CommitOutput.Recipients, by leaf)
// and its Welcome to the members it added.
func (a *applier) ownOutput(b events.CommitApplied) (*ownOutputRow, error) {
	to, err := a.otherMembers(b.GroupID, b.Committer.Leaf)
	if err != nil {
		return nil, err
	}
	out := &ownOutputRow{recipients: to}
	if b.OwnOutput.Welcome != nil {
		added := make([][]byte, len(b.Added))
		for i, m := range b.Added {
			added[i] = m.Identity
		}
		out.welcome, out.welcomeTo = b.OwnOutput.Welcome, encodeIdentities(added)
	}
	return out, nil
}

// commitState returns the state a commit recorded: whole, or as a delta
// from the state the epoch before (cur) started with. A delta made in
// this process (events.CommitApplied.KnownDelta) from a base whose
// digest is the one the read model knows for that state is taken as its
// writer knows it; any other is applied to the base read back and
// checked against its digest (StateOf).
//
// It also returns that base when it had it at hand (nil for a state
// recorded whole).
func (a *applier) commitState(b events.CommitApplied, g *batchGroup, cur uint64) (state events.Secret, base []byte, err error) {
	if b.StateDelta.IsZero() && b.StateSHA256 == nil {
		return b.State, nil, nil
	}
	if st, base, baseSum, ok := b.KnownDelta(); ok && len(b.StateSHA256) == sha256.Size {
		if s, ok := a.epochStartSum(b.GroupID); ok && s.epoch == cur && s.sum == baseSum {
			return st, base.Bytes(), nil
		}
	}
	base, err = a.epochStartState(b.GroupID, g, cur)
	if err != nil {
		return events.Secret{}, nil, err
	}
	st, err := b.StateOf(base)
	if err != nil {
		return events.Secret{}, nil, cannot("%w", err)
	}
	return st, base, nil
}

// epochStartSum returns what the read model knows of the digest of the
// state the group's current epoch started with: from this batch, else
// from the batches committed before it.
func (a *applier) epochStartSum(id []byte) (epochStart, bool) {
	if s, ok := a.starts[string(id)]; ok {
		return s, s.known
	}
	s, ok := a.db.starts[string(id)]
	return s, ok
}

// epochStartState returns the state the group's current epoch (cur)
// started with, from which a commit's state delta starts: a commit's
// still in the batch, else the epoch's row (every schema keeps it; a
// proposal's state, which groups.state holds from schema 3 on, is not
// it).
func (a *applier) epochStartState(id []byte, g *batchGroup, cur uint64) ([]byte, error) {
	if g.row != nil && g.row.epoch == cur {
		return g.row.state, nil
	}
	var st []byte
	q, args := `SELECT state FROM epochs WHERE group_id = ? AND epoch = ?`, []any{id, cur}
	if a.db.schema >= 5 {
		q, args = `SELECT state FROM groups WHERE group_id = ? AND epoch = ?`, []any{id, cur}
	}
	err := a.query1(q, args, &st)
	if errors.Is(err, errNoRow) {
		return nil, cannot("group %x has no row for its epoch %d", id, cur)
	}
	return st, err
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

// removeMembers records that a commit removed ms from group in epoch, as
// removeMember does for each (not left: removed by another's proposal),
// in updates of addMembersChunk rows where every member of a chunk names
// its identity and is not this installation (whose departure also ends
// its membership). An update that changes fewer rows than it was given
// (a member already removed, or whose identity does not match) is done
// again member by member, which answers as before: the rows the update
// wrote are then found removed in this very epoch.
func (a *applier) removeMembers(group []byte, epoch uint64, ms []events.Member) error {
	for len(ms) > 0 {
		n := min(len(ms), addMembersChunk)
		chunk := ms[:n]
		ms = ms[n:]
		bulk := n == addMembersChunk
		args := make([]any, 0, 2+2*n)
		args = append(args, epoch, group)
		for _, m := range chunk {
			if len(m.Identity) == 0 || string(m.Identity) == a.inst {
				bulk = false
				break
			}
			args = append(args, int64(m.Leaf), m.Identity)
		}
		if bulk {
			if done, err := a.execChunk(removeMembersChunk, n, args...); err != nil {
				return err
			} else if done {
				continue
			}
		}
		for _, m := range chunk {
			if err := a.removeMember(group, epoch, m.Leaf, m.Identity, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeMembersChunk marks addMembersChunk members removed, each where
// its leaf holds it (the identity) and it was a member.
var removeMembersChunk = `UPDATE members SET removed_epoch = ? WHERE group_id = ? AND removed_epoch IS NULL AND (leaf, identity) IN (VALUES ` +
	strings.TrimSuffix(strings.Repeat("(?, ?), ", addMembersChunk), ", ") + `)`

func (a *applier) removeMember(group []byte, epoch uint64, leaf uint32, identity []byte, left bool) error {
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
	if _, err = a.exec(`UPDATE members SET removed_epoch = ? WHERE group_id = ? AND leaf = ?`, epoch, group, int64(leaf)); err != nil {
		return err
	}
	if a.db.schema >= 3 && a.inst != "" && string(cur) == a.inst {
		// This installation's own departure ends its membership.
		m, err := a.groupMembership(group, a.group(group))
		if err != nil {
			return err
		}
		how := "removed"
		if left {
			how = "left"
		}
		_, err = a.exec(`UPDATE group_memberships SET left_epoch = ?, left_how = ? WHERE group_id = ? AND membership = ?`, epoch, how, group, m)
		return err
	}
	return nil
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
	return a.removeMember(b.GroupID, b.Epoch, b.Leaf, b.Identity, b.Left)
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
	return a.retireEpochs(b.GroupID, g, cur, b.Epochs)
}

// retireEpochs deletes the secrets of the listed epochs of a group at
// epoch cur: what group.epoch_secrets_retired records, and a
// group.commit_applied since version 3 (its retired_epochs), into the
// same rows.
func (a *applier) retireEpochs(id []byte, g *batchGroup, cur uint64, epochs []uint64) error {
	for _, e := range epochs {
		if e >= cur {
			return cannot("retire epoch %d of group %x: the group is at epoch %d", e, id, cur)
		}
	}
	rebase := false
	if a.db.schema >= 5 && len(epochs) > 0 {
		var err error
		if rebase, err = a.heldBelow(id, g, epochs); err != nil {
			return err
		}
		if rebase {
			// Past epochs' states are deltas from the next held epoch's:
			// retiring one that an older held epoch's delta starts from
			// (not the oldest) takes the batch written and the deltas
			// made again from whole states. The engine only retires the
			// oldest; this is for any other writer.
			if err := a.flushGroup(string(id), g); err != nil {
				return err
			}
		}
	}
	var states map[uint64][]byte
	if rebase {
		var err error
		if states, err = a.heldStates(id); err != nil {
			return err
		}
	}
	for _, e := range epochs {
		delete(g.past, e)
		if row, ok := g.newEpochs[e]; ok {
			row.retired, row.state = true, nil
			continue
		}
		q := `UPDATE epochs SET state = NULL, retired = 1 WHERE group_id = ? AND epoch = ?`
		if a.db.schema >= 5 {
			if _, err := a.exec(`DELETE FROM epoch_states WHERE group_id = ? AND epoch = ?`, id, e); err != nil {
				return err
			}
			q = `UPDATE epochs SET retired = 1 WHERE group_id = ? AND epoch = ?`
		}
		res, err := a.exec(q, id, e)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return cannot("retire epoch %d of group %x: no such epoch", e, id)
		}
	}
	if rebase {
		for _, e := range epochs {
			delete(states, e)
		}
		if err := a.writePastStates(id, cur, states); err != nil {
			return err
		}
	}
	// Exactly the listed epochs, no window of the read model's own: the
	// window (maximum_past_epochs) is the writer's, and it is recorded by
	// what the writer lists, so that a rebuild, or another process with
	// other options, projects the same rows and accepts the same late
	// messages as the live read model did.
	for _, e := range epochs {
		g.held[e] = false
	}
	return nil
}

// heldBelow reports whether a held epoch of the group, not in epochs, is
// older than one of epochs (schema v5): retiring them then breaks the
// chain of deltas in epoch_states.
func (a *applier) heldBelow(id []byte, g *batchGroup, epochs []uint64) (bool, error) {
	// The engine retires the oldest held epochs, in order: known without
	// a query once the group's oldest held epoch is.
	if !g.minHeldKnown {
		var m sql.NullInt64
		if err := a.query1(`SELECT min(epoch) FROM epochs WHERE group_id = ? AND retired = 0`, []any{id}, &m); err != nil {
			return false, err
		}
		g.minHeld, g.minHeldKnown = uint64(m.Int64), true // NULL: 0, a bound that proves nothing
	}
	r := slices.Sorted(slices.Values(epochs))
	r = slices.Compact(r)
	if r[0] == g.minHeld && r[len(r)-1]-r[0] == uint64(len(r)-1) {
		g.minHeld = r[len(r)-1] + 1
		return false, nil
	}
	g.minHeldKnown = false // whatever follows, read again
	top := r[len(r)-1]
	for e, row := range g.newEpochs {
		if e < top && !row.retired && !slices.Contains(epochs, e) {
			return true, nil
		}
	}
	rows, err := a.query(`SELECT epoch FROM epochs WHERE group_id = ? AND epoch < ? AND retired = 0`, id, top)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var e uint64
		if err := rows.Scan(&e); err != nil {
			return false, err
		}
		if !slices.Contains(epochs, e) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// heldStates returns the state every held epoch of the group started
// with (schema v5), the current one included, from the database: the
// batch's rows for the group must have been written.
func (a *applier) heldStates(id []byte) (map[uint64][]byte, error) {
	var cur uint64
	var start []byte
	if err := a.query1(`SELECT epoch, state FROM groups WHERE group_id = ?`, []any{id}, &cur, &start); err != nil {
		return nil, err
	}
	rows, err := a.query(pastDeltasQuery, id)
	if err != nil {
		return nil, err
	}
	ds, err := scanPastDeltas(rows)
	if err != nil {
		return nil, err
	}
	return pastStates(id, cur, start, ds)
}

// writePastStates replaces the group's epoch_states with the held past
// epochs of states (epoch -> whole state; cur, the current epoch, is the
// base of the newest), each a delta from the next one's.
func (a *applier) writePastStates(id []byte, cur uint64, states map[uint64][]byte) error {
	if _, err := a.exec(`DELETE FROM epoch_states WHERE group_id = ?`, id); err != nil {
		return err
	}
	held := slices.Sorted(maps.Keys(states))
	for i, e := range held {
		if e >= cur {
			break
		}
		if _, err := a.exec(`INSERT INTO epoch_states(group_id, epoch, state_delta) VALUES (?, ?, ?)`,
			id, e, bytedelta.Diff(states[held[i+1]], states[e])); err != nil {
			return err
		}
	}
	return nil
}
