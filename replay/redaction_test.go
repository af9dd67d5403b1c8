package replay

import (
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/redacttest"
)

// The MLS check holds each group's epoch-start state (the epoch's secrets
// and the signature key) and the external PSKs as it replays: fmt follows
// one pointer under %s and %q (redacttest prints a *mlsChecker's
// pointee), so they must not be []byte there.
func TestMLSCheckerPrintsNoSecret(t *testing.T) {
	state := []byte("STATE-mlschecker-0123456789abcdef")
	psk := []byte("PSK-mlschecker-0123456789abcdef!")
	c := newMLSChecker("alice")
	ev := events.Event{Body: events.ExternalPSKRegistered{PSKID: []byte("psk-1"), Secret: events.NewSecret(psk)}}
	if err := checkExternalPSKRegistered(c, ev); err != nil {
		t.Fatal(err)
	}
	if err := c.join([]byte("g"), 1, nil, events.NewSecret(state), false); err != nil {
		t.Fatal(err)
	}
	redacttest.Check(t, c, map[string][]byte{"group state": state, "external PSK": psk})
}
