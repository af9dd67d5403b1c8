package projections

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// largeRowsStream is the sample with MLS-sized payloads plus rows that
// overflow their pages in every table v7 rebuilds: application messages
// of 64 KiB both ways, a cached proposal of 20 KiB, a key package of 12
// KiB (an X.509 chain) and pending deliveries of 64 KiB.
func largeRowsStream() []Record {
	s := newStream("inst-a")
	s.mlsSizes = true
	buildSample(s, 3, 30)
	big := func(tag string, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + len(tag))
		}
		return append([]byte(tag), b...)
	}
	for n := 100; n < 110; n++ {
		id := []byte(fmt.Sprintf("big-msg-%d", n))
		if n%2 == 0 {
			s.group(1, events.ApplicationMessageSent{GroupID: gid(1), Epoch: 5, SenderLeaf: 0, Sender: s.inst, MessageID: id, Content: events.NewSecret(big("sent", 64<<10)), AuthenticatedData: big("ad", 2<<10)})
		} else {
			s.group(1, events.ApplicationMessageReceived{GroupID: gid(1), Epoch: 5, SenderLeaf: 1, Sender: "peer-1", MessageID: id, Content: events.NewSecret(big("received", 64<<10))})
		}
	}
	s.group(2, events.ProposalStaged{GroupID: gid(2), Epoch: 5, ProposalRef: []byte("prop-big"), ProposalType: 1, SenderLeaf: 1, Proposal: big("add", 20<<10)})
	s.add(events.AggKeyPackage, "6b702d30303939", events.KeyPackageGenerated{
		Ref: kref(99), Ciphersuite: 3, KeyPackage: big("x509 chain", 12<<10),
		InitPrivateKey: events.NewSecret([]byte("init-priv-99")), EncryptionPrivateKey: events.NewSecret([]byte("enc-priv-99")),
	})
	far := s.t0.AddDate(100, 0, 0)
	for i := uint64(1); i <= 4; i++ {
		s.delivery("commits", events.DeliveryEnqueued{Recipient: s.inst, Channel: "commits", Sequence: i, Payload: big("commit", 64<<10), ExpiresAt: far, IdempotencyKey: fmt.Sprintf("commits-%d", i)})
	}
	s.delivery("commits", events.DeliveryAcknowledged{Recipient: s.inst, Channel: "commits", UpTo: 1})
	return s.recs
}

// A v6 read model migrated in place to v7 holds what a fresh v7 build of
// the same events holds (the digest, schema aside, of a v6 build too),
// its large rows read back whole, and the tables whose rows carry an
// object of unbounded size are rowid tables with that object last.
func TestMigrateToV7InPlace(t *testing.T) {
	recs := largeRowsStream()
	dir := t.TempDir()
	v7 := &Options{SchemaVersion: 7}
	fresh := build(t, filepath.Join(dir, "v7.db"), newKey(t), v7, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != 7 {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	k := newKey(t)
	path := filepath.Join(dir, "v6.db")
	v6 := build(t, path, k, &Options{SchemaVersion: 6}, recs)
	old, err := v6.Digest(ctx)
	v6.Close()
	if err != nil {
		t.Fatal(err)
	}
	old.Schema = want.Schema
	if d := Compare(want, old); d != nil {
		t.Fatalf("a v6 build differs from a v7 build beyond the schema version: %v", d)
	}
	if f, to, err := MigrateInPlace(ctx, path, k, v7); err != nil || f != 6 || to != 7 {
		t.Fatalf("MigrateInPlace from v6: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, &Options{NoMigrate: true})
	defer migrated.Close()
	got, err := migrated.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("v6 migrated in place differs from a fresh v7 build: %v", d)
	}
	if err := migrated.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	for name, db := range map[string]*DB{"fresh": fresh, "migrated": migrated} {
		checkRowidLargeLast(t, name, db, map[string]string{"messages": "content", "deliveries": "payload", "proposals": "proposal", "key_packages": "key_package"})
		// The keys are still enforced: a message id twice in a group, a
		// delivery's sequence twice in its queue.
		if _, err := db.w.ExecContext(ctx, `INSERT INTO messages(group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at)
			SELECT group_id, ordinal + 1000, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at FROM messages LIMIT 1`); err == nil {
			t.Errorf("%s: a message id stored twice in a group", name)
		}
		if _, err := db.w.ExecContext(ctx, `INSERT INTO deliveries(recipient, channel, seq, enqueued_at, state) VALUES ('inst-a', 'commits', 2, 0, 'pending')`); err == nil {
			t.Errorf("%s: a delivery sequence stored twice in its queue", name)
		}
		page, err := db.Messages(ctx, gid(1), Page{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) != 5 || page.Messages[0].Content.Len() < 64<<10 || !bytes.HasPrefix(page.Messages[0].Content.Bytes(), []byte("received")) {
			t.Fatalf("%s: newest messages of group 1 read back as %d messages, the first of %d bytes", name, len(page.Messages), page.Messages[0].Content.Len())
		}
		ds, err := db.PendingDeliveries(ctx, "inst-a", "commits", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 3 || ds[0].Seq != 2 || len(ds[0].Payload) < 64<<10 {
			t.Fatalf("%s: pending deliveries %d, first at %d", name, len(ds), ds[0].Seq)
		}
	}
}
