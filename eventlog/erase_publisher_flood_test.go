package eventlog

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

// floodWhile publishes on subject through l as fast as it can until the
// returned stop is called, which returns the stream sequences stored.
func floodWhile(l *Log, subject string) (stop func() []uint64) {
	quit := make(chan struct{})
	done := make(chan []uint64)
	go func() {
		var seqs []uint64
		for {
			select {
			case <-quit:
				done <- seqs
				return
			default:
			}
			ack, err := l.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: []byte("published during the erase")})
			if err == nil {
				seqs = append(seqs, ack.Sequence)
			}
		}
	}()
	return func() []uint64 { close(quit); return <-done }
}

// TestEraseUnderAPublisherOnItsTombstoneSubject: two erases of one
// installation race, from two Logs, while a publisher puts messages on
// its tombstone subject as fast as it can (a flood there already). Both
// succeed and agree on one tombstone, which stays; no message published
// during the erases is removed without being named in an Erased.Removed
// (the purge below the tombstone takes only what a scan read); a fresh
// Log says erased at that tombstone. Until this test each try to write
// the tombstone expected the subject's last sequence the scan had seen:
// the publisher came first every time, and every erase failed
// ("another message was published there before it 5 times") for as long
// as it went on.
func TestEraseUnderAPublisherOnItsTombstoneSubject(t *testing.T) {
	l, srv, subjA := instAUnderGarbage(t, 1500)
	ctx := context.Background()
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	stop := floodWhile(l, subjA)
	type erased struct {
		res *Erased
		err error
	}
	ch := make(chan erased, 2)
	for _, lg := range []*Log{l, l2} {
		go func() {
			res, err := lg.Erase(ctx, instA, &EraseOptions{By: "race"})
			ch <- erased{res, err}
		}()
	}
	a, b := <-ch, <-ch
	during := stop()
	if a.err != nil || b.err != nil {
		t.Fatalf("erases under a publisher on the tombstone subject: %v; %v", a.err, b.err)
	}
	if a.res.TombstoneSeq != b.res.TombstoneSeq {
		t.Fatalf("racing erases disagree: tombstone at seq %d and %d", a.res.TombstoneSeq, b.res.TombstoneSeq)
	}
	tomb := a.res.TombstoneSeq
	named := map[uint64]bool{}
	for _, r := range append(a.res.Removed, b.res.Removed...) {
		named[r.Seq] = true
	}
	left := map[uint64]bool{}
	for _, s := range tombstoneSubjectSeqs(t, l, subjA) {
		left[s] = true
	}
	if !left[tomb] {
		t.Fatalf("the tombstone at seq %d is gone from its subject", tomb)
	}
	for _, s := range during {
		if !left[s] && !named[s] {
			t.Errorf("message at seq %d, published during the erases, removed without being named (tombstone at %d)", s, tomb)
		}
	}
	var eerr *ErasedError
	if err := openLog(t, testConfig(srv), keyring(t, 1, 0x11)).CheckNotErased(ctx, instA); !errors.As(err, &eerr) || eerr.Seq != tomb {
		t.Fatalf("erased check after the erases: %v, want the *ErasedError at seq %d", err, tomb)
	}
}
