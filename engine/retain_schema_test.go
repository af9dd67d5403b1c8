package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/replay"
)

// Retention through the engine on a read model kept at an older schema
// (as replayer retain opens a file: at the schema it has), which keeps
// no count of deleted own messages (groups.sent_deleted, schema 11):
// the sender's own messages of the current epoch are kept until a state
// recorded after them (from schema 3) or a commit, so that a reloaded
// sender does not seal under their generations again; its peer receives
// its next message.
func TestRetentionAtAnOlderSchemaKeepsSentGenerations(t *testing.T) {
	for _, schema := range []int{2, 4, 10} {
		t.Run(fmt.Sprint(schema), func(t *testing.T) {
			ctx := context.Background()
			b := newBackend(t)
			o := b.opts()
			o.DB.SchemaVersion = schema
			o.UpdateInterval = 1000 * time.Hour // no path update: one epoch
			a := b.createWith(alice, o)
			b.create(bob)
			gid := b.groupOf(a, bob)
			b.send(alice, gid, "one")
			b.send(alice, gid, "two")
			if got := b.drain(bob); len(got) != 2 {
				t.Fatalf("bob received %d, want 2", len(got))
			}
			b.now = b.now.Add(24 * time.Hour)
			if _, err := a.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			a, err := OpenInstallation(ctx, b.log, alice, b.dbPath(alice), b.keys[alice], o)
			if err != nil {
				t.Fatal(err)
			}
			b.insts[alice] = a
			out, err := a.Send(ctx, gid, []byte("three"), nil)
			if err != nil {
				t.Fatalf("alice sends after retention and a restart: %v", err)
			}
			if out.Update != nil { // schema 2 keeps no time of the last update
				if _, err := b.insts[bob].Receive(ctx, out.Update.Commit); err != nil {
					t.Fatal(err)
				}
			}
			if r, err := b.insts[bob].Receive(ctx, out.Message); err != nil || string(r.Content.Bytes()) != "three" {
				t.Fatalf("bob receives alice's message after her retention and restart: %+v, %v", r, err)
			}
		})
	}
}
