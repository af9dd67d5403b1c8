package projections

// Queries about application messages.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Page asks for up to Limit items older than the cursor Before (0 means
// from the newest).
type Page struct {
	Before uint64
	Limit  int
}

// Message is an application message, sent or received. Content is the
// plaintext (secret; redacted when printed).
type Message struct {
	Ordinal           uint64 // per-group order of arrival; the paging cursor; from schema 12 never reused
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
	rows, err := db.sql.QueryContext(ctx, `SELECT `+messageColumns+`
		FROM messages WHERE group_id = ? AND ordinal < ? ORDER BY ordinal DESC LIMIT ?`, groupID, before, limit+1)
	if err != nil {
		return MessagePage{}, db.wrapErr("messages", err)
	}
	defer rows.Close()
	var out MessagePage
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return MessagePage{}, db.wrapErr("messages", err)
		}
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

// MessagesSentInEpoch lists the messages this installation sent in the
// group's epoch, oldest first: a sender reloading a group advances its
// sending ratchet past them.
func (db *DB) MessagesSentInEpoch(ctx context.Context, groupID []byte, epoch uint64) ([]Message, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+messageColumns+` FROM messages
		WHERE group_id = ? AND epoch = ? AND direction = 'sent' ORDER BY ordinal`, groupID, epoch)
	if err != nil {
		return nil, db.wrapErr("sent messages", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, db.wrapErr("sent messages", err)
		}
		out = append(out, m)
	}
	return out, db.wrapErr("sent messages", rows.Err())
}

// ReceivedGeneration is a received message's place in its sender's
// ratchet (schema 11): its epoch, its sender's leaf and the generation
// it used.
type ReceivedGeneration struct {
	Epoch      uint64
	SenderLeaf uint32
	Generation uint32
}

// MessagesReceivedSinceState lists, in the order they were received, the
// received messages of the group's current membership whose generation
// it keeps and that the state GroupState returns may not have seen: those
// recorded after that state (a commit's: every one since; a proposal's or
// one recorded before retention: those after it) of the current epoch
// and of the past epochs it holds (late messages; the state recorded at
// the commit saw the ones received before it, which
// mls.Group.MarkReceived passes over). A member reloading the group marks them, so that its ratchets
// are where receiving them left them. Before schema 11 it lists none.
func (db *DB) MessagesReceivedSinceState(ctx context.Context, groupID []byte) ([]ReceivedGeneration, error) {
	if db.schema < 11 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT m.epoch, m.sender_leaf, m.generation
		FROM messages m JOIN groups g ON g.group_id = m.group_id
		WHERE m.group_id = ? AND m.generation IS NOT NULL AND m.membership = g.membership AND m.ordinal > g.state_ordinal
			AND (m.epoch = g.epoch
				OR m.epoch < g.epoch AND m.epoch IN (SELECT e.epoch FROM epochs e WHERE e.group_id = g.group_id AND e.retired = 0))
		ORDER BY m.ordinal`, groupID)
	if err != nil {
		return nil, db.wrapErr("received generations", err)
	}
	defer rows.Close()
	var out []ReceivedGeneration
	for rows.Next() {
		var r ReceivedGeneration
		if err := rows.Scan(&r.Epoch, &r.SenderLeaf, &r.Generation); err != nil {
			return nil, db.wrapErr("received generations", err)
		}
		out = append(out, r)
	}
	return out, db.wrapErr("received generations", rows.Err())
}

// SentSinceState counts the messages this installation sent in the
// group's current epoch and membership after the state GroupState returns
// was recorded, those retention deleted since included (schema 11): a
// sender reloading the group from that state moves its sending ratchet
// past them (mls.Group.MarkSent). Before schema 11 it counts those the
// read model still holds; before schema v3, whose state is always the
// epoch's first, those of the epoch (MessagesSentInEpoch).
func (db *DB) SentSinceState(ctx context.Context, groupID []byte, epoch uint64) (int, error) {
	if db.schema < 3 {
		sent, err := db.MessagesSentInEpoch(ctx, groupID, epoch)
		return len(sent), err
	}
	deleted := `0`
	if db.schema >= 11 {
		deleted = `g.sent_deleted`
	}
	var n int
	err := db.sql.QueryRowContext(ctx, `SELECT `+deleted+` + (SELECT count(*) FROM messages m
		WHERE m.group_id = g.group_id AND m.epoch = ? AND m.direction = 'sent' AND m.membership = g.membership AND m.ordinal > g.state_ordinal)
		FROM groups g WHERE g.group_id = ?`, epoch, groupID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, db.wrapErr("sent messages", err)
}

// HasMessage reports whether the group holds a message (sent or received)
// with this id.
func (db *DB) HasMessage(ctx context.Context, groupID, messageID []byte) (bool, error) {
	return db.exists(ctx, "message", `SELECT 1 FROM messages WHERE group_id = ? AND message_id = ?`, groupID, messageID)
}

const messageColumns = `ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at`

// scanMessage reads one row of messageColumns.
func scanMessage(rows *sql.Rows) (Message, error) {
	var m Message
	var sender string
	var content []byte
	var at sql.NullInt64
	if err := rows.Scan(&m.Ordinal, &m.ID, &m.Epoch, &m.SenderLeaf, &sender, &m.Direction, &content, &m.AuthenticatedData, &at); err != nil {
		return Message{}, err
	}
	m.Sender, m.Content, m.SentAt = events.InstallationID(sender), events.NewSecret(content), fromNanos(at)
	return m, nil
}

// OwnMessageOutput is the recorded output of one of this installation's
// own application messages (schema v10): what the engine's Send returned
// for the delivery service.
type OwnMessageOutput struct {
	// Ordinal is the message's place among the group's messages.
	Ordinal uint64
	// Epoch is the epoch the message was encrypted in.
	Epoch uint64
	// MessageID is the digest of Message.
	MessageID []byte
	// Message is the message as encrypted (an MLSMessage).
	Message []byte
	// Recipients are the members of Epoch other than this installation,
	// by leaf.
	Recipients [][]byte
}

// OwnMessageOutputs returns the recorded outputs of this installation's
// own application messages in the group's current membership, of epochs
// from fromEpoch on that it has not retired: the newest limit of them
// (all when limit <= 0), oldest first. Only messages whose
// application.message_sent recorded the message (version 2 on) and that
// were projected at schema 10 or later have one; the others are left
// out. Before schema 10 it is empty.
func (db *DB) OwnMessageOutputs(ctx context.Context, groupID []byte, fromEpoch uint64, limit int) ([]OwnMessageOutput, error) {
	if db.schema < 10 {
		return nil, nil
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT m.ordinal, m.epoch, m.message_id, m.message, r.recipients
		FROM messages m INDEXED BY messages_own_output
		JOIN groups g ON g.group_id = m.group_id AND g.membership = m.membership
		JOIN epochs e ON e.group_id = m.group_id AND e.epoch = m.epoch AND e.retired = 0
		JOIN message_recipients r ON r.group_id = m.group_id AND r.epoch = m.epoch
		WHERE m.group_id = ? AND m.message IS NOT NULL AND m.epoch >= ?
		ORDER BY m.ordinal DESC LIMIT ?`, groupID, fromEpoch, limit)
	if err != nil {
		return nil, db.wrapErr("own message outputs", err)
	}
	defer rows.Close()
	var out []OwnMessageOutput
	for rows.Next() {
		var o OwnMessageOutput
		var to []byte
		if err := rows.Scan(&o.Ordinal, &o.Epoch, &o.MessageID, &o.Message, &to); err != nil {
			return nil, db.wrapErr("own message outputs", err)
		}
		if o.Recipients, err = decodeIdentities(to); err != nil {
			return nil, fmt.Errorf("projections: %s: group %x epoch %d message %x: recipients: %w", db.path, groupID, o.Epoch, o.MessageID, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrapErr("own message outputs", err)
	}
	slices.Reverse(out)
	return out, nil
}
