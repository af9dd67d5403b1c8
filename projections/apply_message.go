package projections

// Application messages, sent and received: events of the group aggregate,
// kept per group in order of arrival (the ordinal).

import (
	"errors"
	"fmt"
	"strings"

	"github.com/epochlog/epochlog/events"
)

// message inserts a message; output is the message as encrypted of an own
// message that recorded it (application.message_sent v2), else nil, and
// gen the generation a received message recorded
// (application.message_received v2), else nil.
func (a *applier) message(ev events.Event, dir string, group []byte, epoch uint64, leaf uint32, sender events.InstallationID, id []byte, content []byte, ad []byte, output []byte, gen *uint32) error {
	g := a.group(group)
	cur, err := a.loadEpoch(group, g)
	if err != nil {
		return err
	}
	if epoch > cur {
		return cannot("message in epoch %d, group %x is at epoch %d", epoch, group, cur)
	}
	held, err := a.epochHeld(group, g, epoch)
	if err != nil {
		return err
	}
	if !held {
		return cannot("message in epoch %d of group %x whose secrets are not held", epoch, group)
	}
	if len(id) == 0 {
		return cannot("message without id")
	}
	ord, err := a.messageOrdinal(group, g)
	if err != nil {
		return err
	}
	if ad == nil {
		ad = []byte{}
	}
	if content == nil {
		content = []byte{}
	}
	t := nanos(ev.Time)
	if output != nil && a.db.schema < 10 {
		if err := a.notKept(messageOutputsNotKeptMeta, group, epoch, id); err != nil {
			return err
		}
	}
	if gen != nil && a.db.schema < 11 {
		if err := a.notKept(generationsNotKeptMeta, group, epoch, id); err != nil {
			return err
		}
	}
	cols := `group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at`
	args := []any{group, ord + 1, id, epoch, int64(leaf), string(sender), dir, content, ad, t}
	if a.db.schema >= 3 {
		m, err := a.groupMembership(group, g)
		if err != nil {
			return err
		}
		cols, args = cols+", membership", append(args, m)
	}
	if output != nil && a.db.schema >= 10 { // an own message's output
		if epoch == cur {
			if err := a.messageRecipients(group, epoch, leaf); err != nil {
				return err
			}
		}
		cols, args = cols+", message", append(args, output)
	}
	if gen != nil && a.db.schema >= 11 {
		cols, args = cols+", generation", append(args, int64(*gen))
	}
	if _, err := a.exec(`INSERT INTO messages(`+cols+`) VALUES (?`+strings.Repeat(", ?", len(args)-1)+`)`, args...); err != nil {
		return err
	}
	g.ordinal, g.ordinalDirty = ord+1, a.db.schema >= 12
	if a.db.schema >= 2 && (!g.hasLastMsg || t > g.lastMsg) {
		g.hasLastMsg, g.lastMsg = true, t
	}
	return nil
}

// messageRecipients records, at the first own message of the group's
// current epoch that keeps its output, whom the epoch's own messages are
// for: its members but the sender (at leaf), as the engine's
// SendOutput.Recipients has them. Once per epoch: the members table
// forgets a removed member once another takes its leaf, and a later
// commit may do that before the output is asked for.
func (a *applier) messageRecipients(group []byte, epoch uint64, leaf uint32) error {
	var n int
	if err := a.query1(`SELECT count(*) FROM message_recipients WHERE group_id = ? AND epoch = ?`, []any{group, epoch}, &n); err != nil || n > 0 {
		return err
	}
	to, err := a.otherMembers(group, leaf)
	if err != nil {
		return err
	}
	_, err = a.exec(`INSERT INTO message_recipients(group_id, epoch, recipients) VALUES (?, ?, ?)`, group, epoch, to)
	return err
}

// notKept notes under meta, in a file older than the schema that keeps
// it, the first message whose recorded output (an own message as
// encrypted, schema 10) or generation (a received one, schema 11) it could
// not keep, as outputNotKept does for own commits: MigrateInPlace refuses
// such a file (ErrOutputsNotKept).
func (a *applier) notKept(meta string, group []byte, epoch uint64, id []byte) error {
	_, err := a.exec(`INSERT OR IGNORE INTO epochlog_meta(name, value) VALUES (?, ?)`,
		meta, fmt.Sprintf("group %x epoch %d message %x", group, epoch, id))
	return err
}

// messageOrdinal returns the group's highest message ordinal (0: none):
// from schema 12 the highest it handed out (groups.last_ordinal), which
// retention does not lower, so an ordinal is never handed out twice;
// before, the highest of the rows left. It is read once per batch, and
// from schema 12 with the highest stored ordinal: a last_ordinal below it
// is damage (*OrdinalError), refused before the insert would fail on the
// primary key or hand out an ordinal out of order.
func (a *applier) messageOrdinal(group []byte, g *batchGroup) (int64, error) {
	if !g.ordinalKnown {
		var err error
		if a.db.schema >= 12 {
			var highest int64
			err = a.query1(`SELECT last_ordinal, (SELECT coalesce(max(ordinal), 0) FROM messages WHERE group_id = ?1) FROM groups WHERE group_id = ?1`,
				[]any{group}, &g.ordinal, &highest)
			if err == nil && highest > g.ordinal {
				return 0, &OrdinalError{Group: group, Last: g.ordinal, Highest: highest}
			}
		} else {
			err = a.query1(`SELECT coalesce(max(ordinal), 0) FROM messages WHERE group_id = ?`, []any{group}, &g.ordinal)
		}
		if errors.Is(err, errNoRow) {
			return 0, cannot("unknown group %x", group)
		}
		if err != nil {
			return 0, err
		}
		g.ordinalKnown = true
	}
	return g.ordinal, nil
}

func applyMessageSent(a *applier, ev events.Event) error {
	b, err := body[events.ApplicationMessageSent](ev)
	if err != nil {
		return err
	}
	return a.message(ev, "sent", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content.Bytes(), b.AuthenticatedData, b.Message, nil)
}

func applyMessageReceived(a *applier, ev events.Event) error {
	b, err := body[events.ApplicationMessageReceived](ev)
	if err != nil {
		return err
	}
	var gen *uint32
	if b.GenerationKnown {
		gen = &b.Generation
	}
	return a.message(ev, "received", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content.Bytes(), b.AuthenticatedData, nil, gen)
}
