package projections

// Application messages, sent and received: events of the group aggregate,
// kept per group in order of arrival (the ordinal).

import (
	"github.com/epochlog/epochlog/events"
)

func (a *applier) message(ev events.Event, dir string, group []byte, epoch uint64, leaf uint32, sender events.InstallationID, id []byte, content []byte, ad []byte) error {
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
	if a.db.schema >= 3 {
		m, err := a.groupMembership(group, g)
		if err != nil {
			return err
		}
		_, err = a.exec(`INSERT INTO messages(group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at, membership)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, group, ord+1, id, epoch, int64(leaf), string(sender), dir, content, ad, t, m)
		if err != nil {
			return err
		}
	} else if _, err := a.exec(`INSERT INTO messages(group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, group, ord+1, id, epoch, int64(leaf), string(sender), dir, content, ad, t); err != nil {
		return err
	}
	g.ordinal = ord + 1
	if a.db.schema >= 2 && (!g.hasLastMsg || t > g.lastMsg) {
		g.hasLastMsg, g.lastMsg = true, t
	}
	return nil
}

// messageOrdinal returns the group's highest message ordinal (0: none).
func (a *applier) messageOrdinal(group []byte, g *batchGroup) (int64, error) {
	if !g.ordinalKnown {
		if err := a.query1(`SELECT coalesce(max(ordinal), 0) FROM messages WHERE group_id = ?`, []any{group}, &g.ordinal); err != nil {
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
	return a.message(ev, "sent", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content, b.AuthenticatedData)
}

func applyMessageReceived(a *applier, ev events.Event) error {
	b, err := body[events.ApplicationMessageReceived](ev)
	if err != nil {
		return err
	}
	return a.message(ev, "received", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content, b.AuthenticatedData)
}
