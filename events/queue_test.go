package events

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestQueueStateRules(t *testing.T) {
	enq := func(seq uint64) Body {
		return DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: seq, Payload: []byte("secret payload")}
	}
	ack := func(upTo uint64) Body { return DeliveryAcknowledged{Recipient: "inst-a", Channel: "c", UpTo: upTo} }
	exp := func(seq uint64) Body { return DeliveryExpired{Recipient: "inst-a", Channel: "c", Sequence: seq} }
	cases := []struct {
		name string
		from QueueState
		body Body
		want QueueState // the state after; ignored when refused
		bad  string     // non-empty: refused, with this in the message
	}{
		{"first enqueue", QueueState{}, enq(1), QueueState{LastSeq: 1}, ""},
		{"next enqueue", QueueState{LastSeq: 4, AckedUpTo: 2}, enq(5), QueueState{LastSeq: 5, AckedUpTo: 2}, ""},
		{"enqueue 0", QueueState{}, enq(0), QueueState{}, "sequence 0 after 0"},
		{"enqueue gap", QueueState{LastSeq: 1}, enq(3), QueueState{}, "sequence 3 after 1"},
		{"enqueue repeat", QueueState{LastSeq: 3}, enq(3), QueueState{}, "sequence 3 after 3"},
		{"enqueue older", QueueState{LastSeq: 3}, enq(2), QueueState{}, "sequence 2 after 3"},
		{"enqueue after exhaustion", QueueState{LastSeq: math.MaxUint64}, enq(0), QueueState{}, "exhausted"},

		{"ack some", QueueState{LastSeq: 5}, ack(3), QueueState{LastSeq: 5, AckedUpTo: 3}, ""},
		{"ack all", QueueState{LastSeq: 5, AckedUpTo: 3}, ack(5), QueueState{LastSeq: 5, AckedUpTo: 5}, ""},
		{"ack older is a no-op", QueueState{LastSeq: 5, AckedUpTo: 3}, ack(1), QueueState{LastSeq: 5, AckedUpTo: 3}, ""},
		{"ack same is a no-op", QueueState{LastSeq: 5, AckedUpTo: 3}, ack(3), QueueState{LastSeq: 5, AckedUpTo: 3}, ""},
		{"ack 0 on a used queue is a no-op", QueueState{LastSeq: 2}, ack(0), QueueState{LastSeq: 2}, ""},
		{"ack beyond last", QueueState{LastSeq: 5}, ack(6), QueueState{}, "up to 6: only 5 enqueued"},
		{"ack on an empty queue", QueueState{}, ack(1), QueueState{}, "nothing was ever enqueued"},
		{"ack 0 on an empty queue", QueueState{}, ack(0), QueueState{}, "nothing was ever enqueued"},

		{"expire pending", QueueState{LastSeq: 5, AckedUpTo: 2}, exp(3), QueueState{LastSeq: 5, AckedUpTo: 2}, ""},
		{"expire last", QueueState{LastSeq: 5}, exp(5), QueueState{LastSeq: 5}, ""},
		{"expire beyond last", QueueState{LastSeq: 5}, exp(6), QueueState{}, "sequence 6: never enqueued"},
		{"expire 0", QueueState{LastSeq: 5}, exp(0), QueueState{}, "sequence 0: never enqueued"},
		{"expire on an empty queue", QueueState{}, exp(1), QueueState{}, "never enqueued"},
		{"expire acknowledged", QueueState{LastSeq: 5, AckedUpTo: 3}, exp(3), QueueState{}, "sequence 3: already acknowledged"},

		{"pointer body", QueueState{LastSeq: 1}, &DeliveryEnqueued{Sequence: 2}, QueueState{LastSeq: 2}, ""},
		{"nil pointer body", QueueState{LastSeq: 1}, (*DeliveryAcknowledged)(nil), QueueState{}, "not a delivery event"},
		{"nil body", QueueState{LastSeq: 1}, nil, QueueState{}, "not a delivery event"},
		{"other kind", QueueState{LastSeq: 1}, GroupCreated{GroupID: []byte("g")}, QueueState{}, "not a delivery event"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.from.Next(c.body)
			if c.bad == "" {
				if err != nil || got != c.want {
					t.Fatalf("Next = %+v, %v; want %+v", got, err, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Next accepted it: %+v", got)
			}
			if got != c.from {
				t.Errorf("refused, but the state moved from %+v to %+v", c.from, got)
			}
			wrapped := fmt.Errorf("projections: apply: %w", err)
			if !errors.Is(wrapped, ErrQueueRule) {
				t.Errorf("error %v does not wrap ErrQueueRule", err)
			}
			for _, other := range []error{ErrUnknownKey, ErrWrongKey, ErrTampered, ErrMoved, ErrUnknownVersion, ErrMalformed} {
				if errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), c.bad) {
				t.Errorf("error %q does not say %q", err, c.bad)
			}
			if strings.Contains(err.Error(), "secret payload") {
				t.Errorf("error %q shows the payload", err)
			}
		})
	}
}

// Folding a history gives the counters its events imply, whatever
// acknowledgements and expiries are interleaved; the first event the rules
// refuse stops the fold.
func TestQueueStateFold(t *testing.T) {
	var history []Body
	for i := uint64(1); i <= 6; i++ {
		history = append(history, DeliveryEnqueued{Sequence: i})
		if i == 3 {
			history = append(history, DeliveryExpired{Sequence: 2}, DeliveryAcknowledged{UpTo: 3}, DeliveryAcknowledged{UpTo: 1})
		}
	}
	history = append(history, DeliveryExpired{Sequence: 6}, DeliveryAcknowledged{UpTo: 5})
	var s QueueState
	for i, b := range history {
		var err error
		if s, err = s.Next(b); err != nil {
			t.Fatalf("event %d (%s): %v", i, b.Kind(), err)
		}
	}
	if want := (QueueState{LastSeq: 6, AckedUpTo: 5}); s != want {
		t.Fatalf("folded %+v, want %+v", s, want)
	}
	if _, err := s.Next(DeliveryExpired{Sequence: 4}); !errors.Is(err, ErrQueueRule) {
		t.Fatalf("expiry of an acknowledged message after the fold: %v", err)
	}
}
