package eventlog

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// An append of several events to an aggregate whose history was compacted
// away (its subject empty, the installation carried by a snapshot) can be
// refused while the subject is empty again (a racing writer's event
// purged before the lookup). settle then sees a tail before the expected
// position; it must answer with an error, not look for a partly stored
// batch at a negative count (a panic that took the process down).
func TestSettleOfACarriedEmptySubject(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	a := group(instA, "g")
	p, err := l.prepare(ctx, 3, []events.Event{msg(a, 4, "x"), msg(a, 5, "y")})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.compacted[instA] = true
	l.mu.Unlock()
	_, err = l.settle(ctx, p, tail{}, nil)
	if err == nil || errors.Is(err, ErrPartialBatch) {
		t.Fatalf("settle with the aggregate's subject empty: %v, want an error other than ErrPartialBatch", err)
	}
}
