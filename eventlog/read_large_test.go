package eventlog

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestReadsOfLargeEventsBufferBytesNotMessages reads a history of large
// events (600 KiB each, 90 MB in all: a long run of big commits or
// Welcomes) through every consumer a read uses, with a reader that pauses
// on the first record so that the client's buffer fills, and measures the
// heap the paused read holds. A consumer bounded by a number of messages
// alone (nats.go's default, 500) has the whole history delivered into the
// client meanwhile; bounded by bytes a request (readRequestBytes), it
// holds about two requests. Every read returns every event, in order.
func TestReadsOfLargeEventsBufferBytesNotMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 90 MB")
	}
	l, _ := newLog(t)
	const n, size = 150, 600 << 10
	agg := group(instA, "large")
	want := make([][]byte, n)
	for i := range n {
		want[i] = make([]byte, size)
		if _, err := rand.Read(want[i]); err != nil {
			t.Fatal(err)
		}
		e := msg(agg, uint64(i+1), "")
		b := e.Body.(events.ApplicationMessageSent)
		b.Content = events.NewSecret(want[i])
		e.Body = b
		mustAppend(t, l, uint64(i), e)
	}
	last := streamMsgs(t, l)
	reads := map[string]func(context.Context, func(Record) error) error{
		"Read": func(ctx context.Context, fn func(Record) error) error {
			return l.Read(ctx, instA, 1, fn)
		},
		"ReadInstallationsTo": func(ctx context.Context, fn func(Record) error) error {
			return l.ReadInstallationsTo(ctx, []events.InstallationID{instA}, 1, last, fn)
		},
		"ScanTo": func(ctx context.Context, fn func(Record) error) error {
			return l.ScanTo(ctx, []events.InstallationID{instA}, 1, last, fn)
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			got := 0
			var held uint64
			base := heapInUse()
			err := read(ctx, func(r Record) error {
				if got == 0 {
					time.Sleep(time.Second) // let the consumer's deliveries pile up
					held = heapInUse() - min(base, heapInUse())
				}
				if r.Event.Position != uint64(got+1) {
					return fmt.Errorf("record %d at position %d", got, r.Event.Position)
				}
				if c := r.Event.Body.(events.ApplicationMessageSent).Content; !bytes.Equal(c.Bytes(), want[got]) {
					return fmt.Errorf("record %d: content of %d bytes differs from the appended %d", got, c.Len(), len(want[got]))
				}
				got++
				return nil
			})
			if err != nil {
				t.Fatalf("%s of %d events of %d KiB: after %d: %v", name, n, size>>10, got, err)
			}
			if got != n {
				t.Fatalf("%s returned %d of %d events", name, got, n)
			}
			t.Logf("%s held %d MiB while its reader paused", name, held>>20)
			// Three requests, and the record in the reader's hand: its
			// envelope and its opened copy (a run under load held 25 MiB
			// against a bound of three requests alone, 24 MiB). The heap
			// is the in-process server's too, which caches the message
			// blocks it writes and reads (8 MiB each at most): two of
			// them (a run under load held 32 MiB against 25). Buffering
			// by message count, as reads did before, holds the whole
			// history here (90 MiB).
			const serverBlocks = 2 * 8 << 20
			if bound := uint64(3*l.readRequestBytes() + 2*size + serverBlocks); held > bound {
				t.Errorf("%s held %d MiB of the history while its reader paused, more than %d MiB (three requests of readRequestBytes, the record in hand and two of the server's block caches)", name, held>>20, bound>>20)
			}
		})
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
