package projections

// Queries about groups: the groups themselves, their members and their
// epochs.

import (
	"context"
	"database/sql"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Group is a row of the groups table, without its secret state (see
// GroupState).
type Group struct {
	ID            []byte
	Ciphersuite   uint16
	Epoch         uint64
	JoinedVia     string // "created" or "welcome"
	CreatedAt     time.Time
	UpdatedAt     time.Time
	LastMessageAt time.Time // schema v2; zero without messages or at v1
}

// Groups lists the groups, most recently active first at schema v2 (by
// group id at v1).
func (db *DB) Groups(ctx context.Context) ([]Group, error) {
	q := `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, NULL FROM groups ORDER BY group_id`
	if db.schema >= 2 {
		q = `SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at FROM groups
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
		if err := rows.Scan(&g.ID, &g.Ciphersuite, &g.Epoch, &g.JoinedVia, &c, &u, &l); err != nil {
			return nil, db.wrapErr("groups", err)
		}
		g.CreatedAt, g.UpdatedAt, g.LastMessageAt = fromNanos(c), fromNanos(u), fromNanos(l)
		out = append(out, g)
	}
	return out, db.wrapErr("groups", rows.Err())
}

// GroupState returns the serialized MLS state of a group at its current
// epoch (secret; redacted when printed).
func (db *DB) GroupState(ctx context.Context, groupID []byte) (events.Secret, error) {
	var s []byte
	err := db.sql.QueryRowContext(ctx, `SELECT state FROM groups WHERE group_id = ?`, groupID).Scan(&s)
	return events.Secret(s), db.wrapErr("group state", err)
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
			e.State = events.Secret(st)
		}
		out = append(out, e)
	}
	return out, db.wrapErr("epochs", rows.Err())
}

// IsMember reports whether identity (a member's credential identity; an
// installation's is its id) is a current member of the group: at some
// leaf, not removed since. An unknown group has no members.
func (db *DB) IsMember(ctx context.Context, groupID, identity []byte) (bool, error) {
	return db.exists(ctx, "membership", `SELECT 1 FROM members WHERE group_id = ? AND identity = ? AND removed_epoch IS NULL`, groupID, identity)
}

// MemberRemovedAt reports whether identity left the group at epoch: the
// commit that started epoch removed a leaf identity held. A leaf keeps
// only its latest member, so a leaf taken by another member since no
// longer counts.
func (db *DB) MemberRemovedAt(ctx context.Context, groupID, identity []byte, epoch uint64) (bool, error) {
	return db.exists(ctx, "removed member", `SELECT 1 FROM members WHERE group_id = ? AND identity = ? AND removed_epoch = ?`, groupID, identity, epoch)
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
	rows, err := db.sql.QueryContext(ctx, `SELECT epoch, commit_message, created_at FROM epochs
		WHERE group_id = ? AND commit_message IS NOT NULL ORDER BY epoch DESC`, groupID)
	if err != nil {
		return EpochCommit{}, false, db.wrapErr("epoch commits", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e EpochCommit
		var at sql.NullInt64
		if err := rows.Scan(&e.Epoch, &e.Commit, &at); err != nil {
			return EpochCommit{}, false, db.wrapErr("epoch commits", err)
		}
		if match(e.Commit) {
			e.CreatedAt = fromNanos(at)
			return e, true, nil
		}
	}
	return EpochCommit{}, false, db.wrapErr("epoch commits", rows.Err())
}

// CommitStartedEpoch reports whether commit (the MLSMessage bytes) is the
// commit the read model records as the one that started the group's
// epoch: whether that commit was applied already.
func (db *DB) CommitStartedEpoch(ctx context.Context, groupID []byte, epoch uint64, commit []byte) (bool, error) {
	if commit == nil {
		commit = []byte{} // never equal to the NULL of an epoch without commit
	}
	return db.exists(ctx, "epoch commit", `SELECT 1 FROM epochs WHERE group_id = ? AND epoch = ? AND commit_message = ?`, groupID, epoch, commit)
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
