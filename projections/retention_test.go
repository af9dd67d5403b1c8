package projections

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Retention that deletes every own message of an epoch takes whom they
// were for (message_recipients) with them; a later own message of the
// epoch records it again.
func TestRetentionTakesWhomOwnMessagesWereFor(t *testing.T) {
	ctx := context.Background()
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	s.ownMessage(1, 1, true)
	db := build(t, filepath.Join(t.TempDir(), "r.db"), newKey(t), nil, s.recs)
	defer db.Close()
	recipientRows := func() int {
		t.Helper()
		var n int
		if err := db.sql.QueryRowContext(ctx, `SELECT count(*) FROM message_recipients`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := recipientRows(); n != 1 {
		t.Fatalf("%d message_recipients rows after an own message, want 1", n)
	}
	s.recs = nil
	s.group(1, events.StateRecorded{GroupID: gid(1), Epoch: 1, State: events.NewSecret([]byte("s-1-r"))}) // or it is kept
	applyAll(t, db, s.recs)
	if n, err := db.DeleteMessagesBefore(ctx, time.Now().AddDate(100, 0, 0)); err != nil || n != 1 {
		t.Fatalf("DeleteMessagesBefore = %d, %v; want 1", n, err)
	}
	if n := recipientRows(); n != 0 {
		t.Fatalf("%d message_recipients rows once every own message is deleted, want 0", n)
	}
	s.recs = nil
	m2 := s.ownMessage(1, 2, true)
	applyAll(t, db, s.recs)
	got, err := db.OwnMessageOutputs(ctx, gid(1), 0, 0)
	if err != nil || len(got) != 1 || string(got[0].MessageID) != string(m2.MessageID) || len(got[0].Recipients) != 1 || string(got[0].Recipients[0]) != "peer-1" {
		t.Fatalf("own message outputs after a new message of the epoch: %+v, %v; want %s for peer-1", got, err, m2.MessageID)
	}
}
