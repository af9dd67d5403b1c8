package projections

// Queries about groups: the groups themselves, their members and their
// epochs.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Group is a row of the groups table, without its secret state (see
// GroupState).
type Group struct {
	ID          []byte
	Ciphersuite uint16
	Epoch       uint64
	// JoinedVia is how the current membership began: "created",
	// "welcome" or "external".
	JoinedVia     string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	LastMessageAt time.Time // schema v2; zero without messages or at v1
	// Membership counts this installation's memberships of the group, the
	// current one included (schema v3; 1 before).
	Membership int64
	// HandshakeWireFormat is the wire format set for this installation's
	// own proposals and commits in the group (schema v3): 0 follows the
	// installation's option, 1 PublicMessage, 2 PrivateMessage.
	HandshakeWireFormat uint16
}

// Groups lists the groups, most recently active first at schema v2 (by
// group id at v1).
func (db *DB) Groups(ctx context.Context) ([]Group, error) {
	q := `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, NULL, 1, 0 FROM groups ORDER BY group_id`
	switch {
	case db.schema >= 3:
		q = `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, membership, handshake_wire_format FROM groups
			ORDER BY last_message_at DESC, group_id`
	case db.schema >= 2:
		q = `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, 1, 0 FROM groups
			ORDER BY last_message_at DESC, group_id`
	}
	rows, err := db.sql.QueryContext(ctx, q)
	if err != nil {
		return nil, db.wrapErr("groups", err)
	}
	defer rows.Close()
	var out []Group
	for rows.Next() {
		var g Group
		var c, u, l sql.NullInt64
		if err := rows.Scan(&g.ID, &g.Ciphersuite, &g.Epoch, &g.JoinedVia, &c, &u, &l, &g.Membership, &g.HandshakeWireFormat); err != nil {
			return nil, db.wrapErr("groups", err)
		}
		g.CreatedAt, g.UpdatedAt, g.LastMessageAt = fromNanos(c), fromNanos(u), fromNanos(l)
		out = append(out, g)
	}
	return out, db.wrapErr("groups", rows.Err())
}

// Group returns one group's row; found is false when the read model does
// not know the group.
func (db *DB) Group(ctx context.Context, groupID []byte) (g Group, found bool, err error) {
	q := `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, NULL, 1, 0 FROM groups WHERE group_id = ?`
	switch {
	case db.schema >= 3:
		q = `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, membership, handshake_wire_format FROM groups WHERE group_id = ?`
	case db.schema >= 2:
		q = `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, 1, 0 FROM groups WHERE group_id = ?`
	}
	var c, u, l sql.NullInt64
	found, err = db.lookup(ctx, "group", q, []any{groupID}, &g.ID, &g.Ciphersuite, &g.Epoch, &g.JoinedVia, &c, &u, &l, &g.Membership, &g.HandshakeWireFormat)
	if !found || err != nil {
		return Group{}, found, err
	}
	g.CreatedAt, g.UpdatedAt, g.LastMessageAt = fromNanos(c), fromNanos(u), fromNanos(l)
	return g, true, nil
}

// GroupState returns the serialized MLS state of a group (secret;
// redacted when printed): the state its current epoch began with, or the
// state the latest proposal cached in the epoch left (schema v3; see
// SentSinceState).
func (db *DB) GroupState(ctx context.Context, groupID []byte) (events.Secret, error) {
	if db.schema >= 5 {
		cur, _, err := db.GroupStates(ctx, groupID)
		return cur, err
	}
	var s []byte
	err := db.sql.QueryRowContext(ctx, `SELECT state FROM groups WHERE group_id = ?`, groupID).Scan(&s)
	return events.NewSecret(s), db.wrapErr("group state", err)
}

// GroupStates returns GroupState and EpochStartState of a group, reading
// the state once where the schema stores it once (v5), in one query
// before.
func (db *DB) GroupStates(ctx context.Context, groupID []byte) (current, epochStart events.Secret, err error) {
	var s, p []byte
	if db.schema < 5 {
		err := db.sql.QueryRowContext(ctx, `SELECT g.state, e.state FROM groups g JOIN epochs e ON e.group_id = g.group_id AND e.epoch = g.epoch
			WHERE g.group_id = ?`, groupID).Scan(&s, &p)
		return events.NewSecret(s), events.NewSecret(p), db.wrapErr("group state", err)
	}
	if err := db.sql.QueryRowContext(ctx, `SELECT state, proposal_state FROM groups WHERE group_id = ?`, groupID).Scan(&s, &p); err != nil {
		return events.Secret{}, events.Secret{}, db.wrapErr("group state", err)
	}
	cur, err := withProposal(groupID, s, p)
	if err != nil {
		return events.Secret{}, events.Secret{}, db.wrapErr("group state", err)
	}
	return events.NewSecret(cur), events.NewSecret(s), nil
}

// EpochStartState returns the serialized state the group's current epoch
// started with: the state its latest commit recorded, or the event that
// created or joined it, without a proposal cached since (which
// GroupState includes). A commit's state delta starts from it.
func (db *DB) EpochStartState(ctx context.Context, groupID []byte) (events.Secret, error) {
	var s []byte
	q := `SELECT e.state FROM groups g JOIN epochs e ON e.group_id = g.group_id AND e.epoch = g.epoch WHERE g.group_id = ?`
	if db.schema >= 5 {
		q = `SELECT state FROM groups WHERE group_id = ?`
	}
	err := db.sql.QueryRowContext(ctx, q, groupID).Scan(&s)
	return events.NewSecret(s), db.wrapErr("epoch start state", err)
}

// Member is a current member of a group.
type Member struct {
	Leaf       uint32
	Identity   []byte
	AddedEpoch uint64
}

// Members lists a group's current members by leaf index.
func (db *DB) Members(ctx context.Context, groupID []byte) ([]Member, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT leaf, identity, added_epoch FROM members
		WHERE group_id = ? AND removed_epoch IS NULL ORDER BY leaf`, groupID)
	if err != nil {
		return nil, db.wrapErr("members", err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var m Member
		if err := rows.Scan(&m.Leaf, &m.Identity, &m.AddedEpoch); err != nil {
			return nil, db.wrapErr("members", err)
		}
		out = append(out, m)
	}
	return out, db.wrapErr("members", rows.Err())
}

// Epoch is a row of the epochs table. State is nil once retired.
type Epoch struct {
	Epoch              uint64
	EpochAuthenticator []byte
	State              events.Secret
	Retired            bool
}

// Epochs lists a group's epochs, oldest first.
func (db *DB) Epochs(ctx context.Context, groupID []byte) ([]Epoch, error) {
	if db.schema >= 5 {
		return db.epochsV5(ctx, groupID)
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch, epoch_authenticator, state, retired FROM epochs WHERE group_id = ? ORDER BY epoch`, groupID)
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	defer rows.Close()
	var out []Epoch
	for rows.Next() {
		var e Epoch
		var st []byte
		if err := rows.Scan(&e.Epoch, &e.EpochAuthenticator, &st, &e.Retired); err != nil {
			return nil, db.wrapErr("epochs", err)
		}
		if st != nil {
			e.State = events.NewSecret(st)
		}
		out = append(out, e)
	}
	return out, db.wrapErr("epochs", rows.Err())
}

// epochsV5 is Epochs from schema v5, where the held epochs' states are
// rebuilt from the group's (see states.go), in one read transaction.
func (db *DB) epochsV5(ctx context.Context, groupID []byte) ([]Epoch, error) {
	tx, err := db.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	defer tx.Rollback()
	var cur uint64
	var start []byte
	switch err := tx.QueryRowContext(ctx, `SELECT epoch, state FROM groups WHERE group_id = ?`, groupID).Scan(&cur, &start); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil // no group, no epochs (as before v5)
	case err != nil:
		return nil, db.wrapErr("epochs", err)
	}
	rows, err := tx.QueryContext(ctx, pastDeltasQuery, groupID)
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	ds, err := scanPastDeltas(rows)
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	states, err := pastStates(groupID, cur, start, ds)
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT epoch, epoch_authenticator, retired FROM epochs WHERE group_id = ? ORDER BY epoch`, groupID)
	if err != nil {
		return nil, db.wrapErr("epochs", err)
	}
	defer rows.Close()
	var out []Epoch
	for rows.Next() {
		var e Epoch
		if err := rows.Scan(&e.Epoch, &e.EpochAuthenticator, &e.Retired); err != nil {
			return nil, db.wrapErr("epochs", err)
		}
		if st, ok := states[e.Epoch]; ok && !e.Retired {
			e.State = events.NewSecret(st)
		}
		out = append(out, e)
	}
	return out, db.wrapErr("epochs", rows.Err())
}

// HeldEpochs lists the group's epochs whose secrets the read model
// still holds (not retired), oldest first. Unlike Epochs it reads no
// state, only the key and the retired flag of each row.
func (db *DB) HeldEpochs(ctx context.Context, groupID []byte) ([]uint64, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch FROM epochs WHERE group_id = ? AND retired = 0 ORDER BY epoch`, groupID)
	if err != nil {
		return nil, db.wrapErr("held epochs", err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var e uint64
		if err := rows.Scan(&e); err != nil {
			return nil, db.wrapErr("held epochs", err)
		}
		out = append(out, e)
	}
	return out, db.wrapErr("held epochs", rows.Err())
}

// IsMember reports whether identity (a member's credential identity; an
// installation's is its id) is a current member of the group: at some
// leaf, not removed since. An unknown group has no members.
func (db *DB) IsMember(ctx context.Context, groupID, identity []byte) (bool, error) {
	return db.exists(ctx, "membership", `SELECT 1 FROM members WHERE group_id = ? AND identity = ? AND removed_epoch IS NULL`, groupID, identity)
}

// MemberRemovedAt reports whether identity left the group at epoch: the
// commit that started epoch removed a leaf identity held, in the current
// membership or (schema v3) an earlier one. A leaf keeps only its latest
// member, so a leaf taken by another member since no longer counts.
func (db *DB) MemberRemovedAt(ctx context.Context, groupID, identity []byte, epoch uint64) (bool, error) {
	q := `SELECT 1 FROM members WHERE group_id = ? AND identity = ? AND removed_epoch = ?`
	if db.schema >= 3 {
		return db.exists(ctx, "removed member", q+` UNION ALL SELECT 1 FROM past_members WHERE group_id = ? AND identity = ? AND removed_epoch = ?`,
			groupID, identity, epoch, groupID, identity, epoch)
	}
	return db.exists(ctx, "removed member", q, groupID, identity, epoch)
}

// EpochCommit is an epoch of a group with the commit that started it.
type EpochCommit struct {
	Epoch  uint64
	Commit []byte // the commit (an MLSMessage) as the commit.applied event recorded it
	// CreatedAt is the time of the event that started the epoch.
	CreatedAt time.Time
}

// NewestCommit returns the newest epoch of the group that a commit
// started and for which match reports true, reading the epochs newest
// first and stopping at the first match. Epochs no commit started (the
// one a group was created or joined at) are skipped. found is false when
// no epoch matches (or the group is unknown). match sees the stored bytes:
// it must not keep or change them.
func (db *DB) NewestCommit(ctx context.Context, groupID []byte, match func(commit []byte) bool) (ec EpochCommit, found bool, err error) {
	return db.firstEpochCommit(ctx, "epoch commits", match, `SELECT epoch, commit_message, created_at FROM epochs
		WHERE group_id = ? AND commit_message IS NOT NULL ORDER BY epoch DESC`, groupID)
}

// firstEpochCommit runs q, whose rows are (epoch, commit_message,
// created_at), and returns the first row whose commit match accepts.
func (db *DB) firstEpochCommit(ctx context.Context, what string, match func(commit []byte) bool, q string, args ...any) (EpochCommit, bool, error) {
	rows, err := db.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return EpochCommit{}, false, db.wrapErr(what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e EpochCommit
		var at sql.NullInt64
		if err := rows.Scan(&e.Epoch, &e.Commit, &at); err != nil {
			return EpochCommit{}, false, db.wrapErr(what, err)
		}
		if match(e.Commit) {
			e.CreatedAt = fromNanos(at)
			return e, true, nil
		}
	}
	return EpochCommit{}, false, db.wrapErr(what, rows.Err())
}

// CommitStartedEpoch reports whether commit (the MLSMessage bytes) is the
// commit the read model records as the one that started the group's
// epoch, in the current membership or (schema v3) an earlier one: whether
// that commit was applied already.
func (db *DB) CommitStartedEpoch(ctx context.Context, groupID []byte, epoch uint64, commit []byte) (bool, error) {
	if commit == nil {
		commit = []byte{} // never equal to the NULL of an epoch without commit
	}
	if db.schema >= 8 { // commits are matched by their hash
		sum := commitSHA256(commit)
		return db.exists(ctx, "epoch commit", `SELECT 1 FROM epochs WHERE group_id = ? AND epoch = ? AND commit_sha256 = ?
			UNION ALL SELECT 1 FROM past_epochs WHERE group_id = ? AND epoch = ? AND commit_sha256 = ?`,
			groupID, epoch, sum, groupID, epoch, sum)
	}
	q := `SELECT 1 FROM epochs WHERE group_id = ? AND epoch = ? AND commit_message = ?`
	if db.schema >= 3 {
		return db.exists(ctx, "epoch commit", q+` UNION ALL SELECT 1 FROM past_epochs WHERE group_id = ? AND epoch = ? AND commit_message = ?`,
			groupID, epoch, commit, groupID, epoch, commit)
	}
	return db.exists(ctx, "epoch commit", q, groupID, epoch, commit)
}

// EpochCommitter says who started the group's epoch in its current
// membership: own is true when this installation's own commit did (an
// external commit that joined it too), false when another member's did.
// known is false when the read model does not say: no such epoch, an
// epoch not started by a commit this installation processed (created,
// joined by Welcome), or one recorded without its committer (before
// schema 3, or by a commit event that did not name it).
func (db *DB) EpochCommitter(ctx context.Context, groupID []byte, epoch uint64) (own, known bool, err error) {
	if db.schema < 3 {
		return false, false, nil
	}
	var o sql.NullBool
	found, err := db.lookup(ctx, "epoch committer", `SELECT own_commit FROM epochs WHERE group_id = ? AND epoch = ?`, []any{groupID, epoch}, &o)
	if err != nil || !found || !o.Valid {
		return false, false, err
	}
	return o.Bool, true, nil
}

// NewestOwnCommit returns the newest epoch of the group's current
// membership that this installation's own commit started. From schema v3
// the read model records who committed; an epoch recorded without it (a
// commit event written before, whose message is a PublicMessage naming
// its sender) is asked of legacyOwn, which sees the stored bytes and must
// not keep or change them. found is false when there is none.
func (db *DB) NewestOwnCommit(ctx context.Context, groupID []byte, legacyOwn func(commit []byte) bool) (ec EpochCommit, found bool, err error) {
	if db.schema < 3 {
		return db.NewestCommit(ctx, groupID, legacyOwn)
	}
	if db.schema >= 6 {
		return db.newestOwnCommitIndexed(ctx, groupID, legacyOwn)
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch, commit_message, created_at, own_commit FROM epochs
		WHERE group_id = ? AND commit_message IS NOT NULL AND (own_commit IS NULL OR own_commit = 1) ORDER BY epoch DESC`, groupID)
	if err != nil {
		return EpochCommit{}, false, db.wrapErr("own commits", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e EpochCommit
		var at, own sql.NullInt64
		if err := rows.Scan(&e.Epoch, &e.Commit, &at, &own); err != nil {
			return EpochCommit{}, false, db.wrapErr("own commits", err)
		}
		if (own.Valid && own.Int64 == 1) || (!own.Valid && legacyOwn(e.Commit)) {
			e.CreatedAt = fromNanos(at)
			return e, true, nil
		}
	}
	return EpochCommit{}, false, db.wrapErr("own commits", rows.Err())
}

// newestOwnCommitIndexed is NewestOwnCommit on the indexes of schema v6:
// the newest epoch recorded as started by an own commit, unless an epoch
// after it, recorded without its committer, is one (legacyOwn says).
// Neither reads the epochs of other members' commits in between.
func (db *DB) newestOwnCommitIndexed(ctx context.Context, groupID []byte, legacyOwn func(commit []byte) bool) (EpochCommit, bool, error) {
	var own EpochCommit
	var at sql.NullInt64
	found := true
	err := db.sql.QueryRowContext(ctx, `SELECT epoch, commit_message, created_at FROM epochs
		WHERE group_id = ? AND own_commit = 1 AND commit_message IS NOT NULL ORDER BY epoch DESC LIMIT 1`, groupID).Scan(&own.Epoch, &own.Commit, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		found = false
	case err != nil:
		return EpochCommit{}, false, db.wrapErr("own commits", err)
	default:
		own.CreatedAt = fromNanos(at)
	}
	after := int64(-1) // no own commit: every epoch recorded without its committer
	if found {
		after = int64(own.Epoch)
	}
	legacy, legacyFound, err := db.firstEpochCommit(ctx, "own commits", legacyOwn, `SELECT epoch, commit_message, created_at FROM epochs
		WHERE group_id = ? AND own_commit IS NULL AND commit_message IS NOT NULL AND epoch > ? ORDER BY epoch DESC`, groupID, after)
	if err != nil || legacyFound {
		return legacy, legacyFound, err
	}
	return own, found, nil
}

// Membership is one of this installation's memberships of a group (schema
// v3): joined at JoinedEpoch (by "created", "welcome" or "external"),
// ended at LeftEpoch when Left says how ("removed", "left" by its own
// proposal, "abandoned" for a rejoin after its state was lost or forked).
type Membership struct {
	Membership  int64
	JoinedVia   string
	JoinedEpoch uint64
	JoinedAt    time.Time
	LeftEpoch   uint64 // valid when Left is set and LeftEpoch known
	Left        string // "" while current
}

// Memberships lists this installation's memberships of the group, oldest
// first. Before schema v3 it is empty.
func (db *DB) Memberships(ctx context.Context, groupID []byte) ([]Membership, error) {
	if db.schema < 3 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT membership, joined_via, joined_epoch, joined_at, left_epoch, left_how FROM group_memberships
		WHERE group_id = ? ORDER BY membership`, groupID)
	if err != nil {
		return nil, db.wrapErr("memberships", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		var m Membership
		var at, left sql.NullInt64
		var how sql.NullString
		if err := rows.Scan(&m.Membership, &m.JoinedVia, &m.JoinedEpoch, &at, &left, &how); err != nil {
			return nil, db.wrapErr("memberships", err)
		}
		m.JoinedAt, m.LeftEpoch, m.Left = fromNanos(at), uint64(left.Int64), how.String
		out = append(out, m)
	}
	return out, db.wrapErr("memberships", rows.Err())
}

// PastMember is a member of a group as an earlier membership of this
// installation last knew it (schema v3).
type PastMember struct {
	Leaf         uint32
	Identity     []byte
	AddedEpoch   uint64
	RemovedEpoch uint64 // 0 while it was a member when the membership ended
	Removed      bool
}

// PastMembers lists the members of the group in this installation's
// membership m, an ended one, by leaf (schema v3; empty before).
func (db *DB) PastMembers(ctx context.Context, groupID []byte, m int64) ([]PastMember, error) {
	if db.schema < 3 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT leaf, identity, added_epoch, removed_epoch FROM past_members
		WHERE group_id = ? AND membership = ? ORDER BY leaf`, groupID, m)
	if err != nil {
		return nil, db.wrapErr("past members", err)
	}
	defer rows.Close()
	var out []PastMember
	for rows.Next() {
		var pm PastMember
		var removed sql.NullInt64
		if err := rows.Scan(&pm.Leaf, &pm.Identity, &pm.AddedEpoch, &removed); err != nil {
			return nil, db.wrapErr("past members", err)
		}
		pm.RemovedEpoch, pm.Removed = uint64(removed.Int64), removed.Valid
		out = append(out, pm)
	}
	return out, db.wrapErr("past members", rows.Err())
}

// PastEpochs lists the epochs of the group in this installation's
// membership m, an ended one, oldest first (schema v3; empty before).
// Their states are gone: an ended membership keeps no secrets.
func (db *DB) PastEpochs(ctx context.Context, groupID []byte, m int64) ([]Epoch, error) {
	if db.schema < 3 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch, epoch_authenticator FROM past_epochs WHERE group_id = ? AND membership = ? ORDER BY epoch`, groupID, m)
	if err != nil {
		return nil, db.wrapErr("past epochs", err)
	}
	defer rows.Close()
	var out []Epoch
	for rows.Next() {
		e := Epoch{Retired: true}
		if err := rows.Scan(&e.Epoch, &e.EpochAuthenticator); err != nil {
			return nil, db.wrapErr("past epochs", err)
		}
		out = append(out, e)
	}
	return out, db.wrapErr("past epochs", rows.Err())
}

// Proposal is a proposal cached in the group's current epoch for a commit
// by reference (schema v3 adds who made it and its message id).
type Proposal struct {
	Ref        []byte
	Epoch      uint64
	Type       uint16 // RFC 9420 ProposalType
	SenderLeaf uint32
	Sender     []byte // credential identity; nil before schema v3
	Own        bool
	MessageID  []byte
	Proposal   []byte // TLS-encoded Proposal
}

// PendingProposals lists the proposals cached in the group's current
// epoch, by reference.
func (db *DB) PendingProposals(ctx context.Context, groupID []byte) ([]Proposal, error) {
	q := `SELECT proposal_ref, epoch, proposal_type, sender_leaf, NULL, 0, NULL, proposal FROM proposals WHERE group_id = ? ORDER BY epoch, proposal_ref`
	if db.schema >= 3 {
		q = `SELECT proposal_ref, epoch, proposal_type, sender_leaf, sender, own, message_id, proposal FROM proposals WHERE group_id = ? ORDER BY epoch, proposal_ref`
	}
	rows, err := db.sql.QueryContext(ctx, q, groupID)
	if err != nil {
		return nil, db.wrapErr("proposals", err)
	}
	defer rows.Close()
	var out []Proposal
	for rows.Next() {
		var p Proposal
		if err := rows.Scan(&p.Ref, &p.Epoch, &p.Type, &p.SenderLeaf, &p.Sender, &p.Own, &p.MessageID, &p.Proposal); err != nil {
			return nil, db.wrapErr("proposals", err)
		}
		out = append(out, p)
	}
	return out, db.wrapErr("proposals", rows.Err())
}

// HasProposalMessage reports whether the group holds a proposal carried by
// the message with this id (schema v3; false before): a redelivered
// proposal.
func (db *DB) HasProposalMessage(ctx context.Context, groupID, messageID []byte) (bool, error) {
	if db.schema < 3 {
		return false, nil
	}
	return db.exists(ctx, "proposal message", `SELECT 1 FROM proposals WHERE group_id = ? AND message_id = ?`, groupID, messageID)
}

// OldestHeldEpoch returns the oldest epoch of the group whose secrets the
// read model still holds (not retired), and false when it holds none.
// Retention by count never destroys the keys of an epoch from it on: the
// archive keeps what the member keeps.
func (db *DB) OldestHeldEpoch(ctx context.Context, groupID []byte) (uint64, bool, error) {
	var n sql.NullInt64
	if _, err := db.lookup(ctx, "oldest held epoch", `SELECT MIN(epoch) FROM epochs WHERE group_id = ? AND retired = 0`, []any{groupID}, &n); err != nil {
		return 0, false, err
	}
	return uint64(n.Int64), n.Valid, nil
}

// EpochRetired reports whether the secrets of the group's epoch were
// deleted (epoch.secrets_retired). An epoch the read model does not know
// is not reported as retired: the caller's own checks (the group's epoch,
// its window of past epochs) decide about those.
func (db *DB) EpochRetired(ctx context.Context, groupID []byte, epoch uint64) (bool, error) {
	var retired bool
	_, err := db.lookup(ctx, "epoch retired", `SELECT retired FROM epochs WHERE group_id = ? AND epoch = ?`, []any{groupID, epoch}, &retired)
	return retired, err
}

// OwnCommitOutput is the recorded output of one of this installation's
// own commits (schema v9): what the engine's operation returned for the
// delivery service.
type OwnCommitOutput struct {
	// Epoch is the epoch the commit started.
	Epoch uint64
	// Commit is the commit (an MLSMessage).
	Commit []byte
	// Recipients are the members of the epoch the commit ended other
	// than this installation, by leaf, removed ones included.
	Recipients [][]byte
	// Welcome is the commit's Welcome, nil when it added no one, and
	// Added the members it is for.
	Welcome []byte
	Added   [][]byte
}

// OwnCommitOutputs returns the recorded outputs of this installation's
// own commits in the group's current membership that started an epoch
// from fromEpoch on, oldest first. Only commits whose
// group.commit_applied recorded its output (version 5 on) and that were
// projected at schema 9 or later have one; the others are left out.
// Before schema 9 it is empty.
func (db *DB) OwnCommitOutputs(ctx context.Context, groupID []byte, fromEpoch uint64) ([]OwnCommitOutput, error) {
	if db.schema < 9 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch, commit_message, recipients, welcome, welcome_recipients FROM epochs
		WHERE group_id = ? AND own_commit = 1 AND epoch >= ? AND recipients IS NOT NULL ORDER BY epoch`, groupID, fromEpoch)
	if err != nil {
		return nil, db.wrapErr("own commit outputs", err)
	}
	defer rows.Close()
	var out []OwnCommitOutput
	for rows.Next() {
		var o OwnCommitOutput
		var to, welcomeTo []byte
		if err := rows.Scan(&o.Epoch, &o.Commit, &to, &o.Welcome, &welcomeTo); err != nil {
			return nil, db.wrapErr("own commit outputs", err)
		}
		if o.Recipients, err = decodeIdentities(to); err != nil {
			return nil, fmt.Errorf("projections: %s: group %x epoch %d: recipients: %w", db.path, groupID, o.Epoch, err)
		}
		if o.Welcome != nil {
			if o.Added, err = decodeIdentities(welcomeTo); err != nil {
				return nil, fmt.Errorf("projections: %s: group %x epoch %d: welcome recipients: %w", db.path, groupID, o.Epoch, err)
			}
		}
		out = append(out, o)
	}
	return out, db.wrapErr("own commit outputs", rows.Err())
}

// encodeIdentities packs a list of identities as a uvarint count, then
// each as a uvarint length and its bytes: never empty, so an empty list
// is not NULL.
func encodeIdentities(ids [][]byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
	}
	return b
}

// decodeIdentities unpacks what encodeIdentities packed; anything else is
// ErrCorrupt.
func decodeIdentities(b []byte) ([][]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: identity list of %d bytes has no valid count", ErrCorrupt, len(b))
	}
	b = b[k:]
	var ids [][]byte
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: identity list: entry %d of %d runs past the end", ErrCorrupt, i, n)
		}
		ids = append(ids, bytes.Clone(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: identity list: %d bytes after its %d entries", ErrCorrupt, len(b), n)
	}
	return ids, nil
}
