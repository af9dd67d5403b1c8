package projections

import (
	"context"
	"database/sql"
	"time"

	"github.com/epochlog/epochlog/events"
)

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid || n.Int64 == 0 {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

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

// Page asks for up to Limit items older than the cursor Before (0 means
// from the newest).
type Page struct {
	Before uint64
	Limit  int
}

// Message is an application message, sent or received. Content is the
// plaintext (secret; redacted when printed).
type Message struct {
	Ordinal           uint64 // per-group order of arrival; the paging cursor
	ID                []byte
	Epoch             uint64
	SenderLeaf        uint32
	Sender            events.InstallationID
	Direction         string // "sent" or "received"
	Content           events.Secret
	AuthenticatedData []byte
	SentAt            time.Time
}

// MessagePage is one page of messages, newest first. Next is the cursor
// for the following (older) page, 0 when there is none.
type MessagePage struct {
	Messages []Message
	Next     uint64
}

// Messages returns a page of a group's messages, newest first.
func (db *DB) Messages(ctx context.Context, groupID []byte, p Page) (MessagePage, error) {
	limit := p.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	before := int64(p.Before)
	if p.Before == 0 {
		before = 1<<63 - 1
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at
		FROM messages WHERE group_id = ? AND ordinal < ? ORDER BY ordinal DESC LIMIT ?`, groupID, before, limit+1)
	if err != nil {
		return MessagePage{}, db.wrapErr("messages", err)
	}
	defer rows.Close()
	var out MessagePage
	for rows.Next() {
		var m Message
		var sender string
		var content []byte
		var at sql.NullInt64
		if err := rows.Scan(&m.Ordinal, &m.ID, &m.Epoch, &m.SenderLeaf, &sender, &m.Direction, &content, &m.AuthenticatedData, &at); err != nil {
			return MessagePage{}, db.wrapErr("messages", err)
		}
		m.Sender, m.Content, m.SentAt = events.InstallationID(sender), events.Secret(content), fromNanos(at)
		out.Messages = append(out.Messages, m)
	}
	if err := rows.Err(); err != nil {
		return MessagePage{}, db.wrapErr("messages", err)
	}
	if len(out.Messages) > limit {
		out.Messages = out.Messages[:limit]
		out.Next = out.Messages[limit-1].Ordinal
	}
	return out, nil
}

// Delivery is a queued message for a recipient on a channel.
type Delivery struct {
	Recipient      events.InstallationID
	Channel        string
	Seq            uint64
	Payload        []byte
	ExpiresAt      time.Time // zero: never
	IdempotencyKey string
	EnqueuedAt     time.Time
}

// PendingDeliveries returns up to limit unacknowledged, unexpired messages
// of (recipient, channel) with a sequence above afterSeq, in sequence order.
// Messages whose expiry has passed are not returned even before their
// expiry event is applied.
func (db *DB) PendingDeliveries(ctx context.Context, recipient events.InstallationID, channel string, afterSeq uint64, limit int) ([]Delivery, error) {
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT seq, payload, expires_at, coalesce(idempotency_key, ''), enqueued_at FROM deliveries
		WHERE recipient = ? AND channel = ? AND seq > ? AND state = 'pending' AND (expires_at IS NULL OR expires_at > ?)
		ORDER BY seq LIMIT ?`, string(recipient), channel, afterSeq, time.Now().UnixNano(), limit)
	if err != nil {
		return nil, db.wrapErr("pending deliveries", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d := Delivery{Recipient: recipient, Channel: channel}
		var exp, at sql.NullInt64
		if err := rows.Scan(&d.Seq, &d.Payload, &exp, &d.IdempotencyKey, &at); err != nil {
			return nil, db.wrapErr("pending deliveries", err)
		}
		d.ExpiresAt, d.EnqueuedAt = fromNanos(exp), fromNanos(at)
		out = append(out, d)
	}
	return out, db.wrapErr("pending deliveries", rows.Err())
}

// KeyPackage is a key package the installation can hand out.
type KeyPackage struct {
	Ref         []byte
	Ciphersuite uint16
	KeyPackage  []byte
	LastResort  bool
	State       string
	GeneratedAt time.Time
}

// AvailableKeyPackages lists key packages that can still be used to join
// this installation: generated or published and not consumed, plus
// consumed last-resort packages until they are rotated; all with their
// private keys still held.
func (db *DB) AvailableKeyPackages(ctx context.Context) ([]KeyPackage, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT ref, ciphersuite, key_package, last_resort, state, generated_at FROM key_packages
		WHERE (state IN ('generated','published') OR (state = 'consumed' AND last_resort = 1))
		AND init_private_key IS NOT NULL ORDER BY generated_at, ref`)
	if err != nil {
		return nil, db.wrapErr("key packages", err)
	}
	defer rows.Close()
	var out []KeyPackage
	for rows.Next() {
		var k KeyPackage
		var at sql.NullInt64
		if err := rows.Scan(&k.Ref, &k.Ciphersuite, &k.KeyPackage, &k.LastResort, &k.State, &at); err != nil {
			return nil, db.wrapErr("key packages", err)
		}
		k.GeneratedAt = fromNanos(at)
		out = append(out, k)
	}
	return out, db.wrapErr("key packages", rows.Err())
}
