package events

import (
	"bytes"
	"fmt"
	"testing"
)

func benchEvent(size int) Event {
	e := samples(testInst)[KindDeliveryEnqueued]
	d := e.Body.(DeliveryEnqueued)
	d.Payload = bytes.Repeat([]byte{0xab}, size)
	e.Body = d
	return e
}

// BenchmarkSeal seals a delivery.enqueued event whose payload is the given
// size (the envelope adds Overhead plus the msgpack framing of the event).
func BenchmarkSeal(b *testing.B) {
	r := mustRing(b, 1, 0x11)
	for _, size := range []int{256, 4096} {
		e := benchEvent(size)
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(r, testBinding, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMessageIDsSeal seals the events of BenchmarkSeal with their
// message ids, as a writer appending them does.
func BenchmarkMessageIDsSeal(b *testing.B) {
	r := mustRing(b, 1, 0x11)
	m := mustMessageIDs(b, r)
	now := testTime
	for _, size := range []int{256, 4096} {
		e := benchEvent(size)
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.Seal(testBinding, testAggPseudonym, e, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen opens the envelopes BenchmarkSeal produces.
func BenchmarkOpen(b *testing.B) {
	r := mustRing(b, 1, 0x11)
	for _, size := range []int{256, 4096} {
		env := mustSeal(b, r, testBinding, benchEvent(size))
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(r, testInst, testBinding, env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
