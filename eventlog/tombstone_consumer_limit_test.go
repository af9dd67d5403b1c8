package eventlog

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTombstoneSubjectScanAtTheConsumerLimit: with the account's
// consumer limit reached, a fresh Log's erased check, LastSeq and Erase
// of an installation whose tombstone subject holds more messages than
// the scan reads with gets (garbage a publisher put there) still work:
// the scan reads the rest a get a message when the server refuses its
// consumer. From 2026-12-07 (a4e15ac) until this test each failed with
// "maximum consumers limit reached" for as long as the limit was
// reached, though none of them needs a consumer otherwise.
func TestTombstoneSubjectScanAtTheConsumerLimit(t *testing.T) {
	const garbage = 20
	l, srv, subjA := instAUnderGarbage(t, garbage)
	ctx := context.Background()
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if _, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "someone-elses", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	acc := srv.NATSServer().GlobalAccount()
	full := map[string]server.JetStreamAccountLimits{"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: acc.JetStreamUsage().Consumers}}
	if err := acc.UpdateJetStreamLimits(full); err != nil {
		t.Fatal(err)
	}
	if _, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "one-more", AckPolicy: jetstream.AckNonePolicy}); err == nil {
		t.Fatal("the account's consumer limit is not reached")
	}

	if err := fresh.CheckNotErased(ctx, instA); err != nil {
		t.Fatalf("erased check of the live %s at the consumer limit: %v", instA, err)
	}
	if seq, err := fresh.LastSeq(ctx, instA); err != nil || seq == 0 {
		t.Fatalf("last seq of the live %s at the consumer limit: %d, %v", instA, seq, err)
	}
	res, err := fresh.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatalf("erase of %s at the consumer limit: %v", instA, err)
	}
	if len(res.Removed) != garbage {
		t.Fatalf("erase removed %d messages from the tombstone subject, want %d", len(res.Removed), garbage)
	}
	if seqs := tombstoneSubjectSeqs(t, l, subjA); len(seqs) != 1 || seqs[0] != res.TombstoneSeq {
		t.Fatalf("tombstone subject after the erase holds %v, want only the tombstone at %d", seqs, res.TombstoneSeq)
	}
	var eerr *ErasedError
	if err := openLog(t, testConfig(srv), keyring(t, 1, 0x11)).CheckNotErased(ctx, instA); !errors.As(err, &eerr) || eerr.Seq != res.TombstoneSeq {
		t.Fatalf("erased check after the erase: %v, want the *ErasedError at seq %d", err, res.TombstoneSeq)
	}
}
