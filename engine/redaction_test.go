package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/projections"
)

// An Installation holds its signature key, read model and groups (with
// their external PSKs) in unexported fields: however it is printed, none
// of their secrets shows.
func TestInstallationPrintsNoSecret(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	dbKey := []byte("DBKEY-redaction-0123456789abcdef")
	k, err := projections.RawKey(dbKey)
	if err != nil {
		t.Fatal(err)
	}
	in, err := CreateInstallation(ctx, b.log, "alice", b.dbPath("alice"), k, b.opts())
	if err != nil {
		t.Fatal(err)
	}
	b.insts["alice"], b.keys["alice"] = in, k
	psk := []byte("PSK-redaction-0123456789abcdef!!")
	if err := in.RegisterExternalPSK(ctx, []byte("psk-1"), psk); err != nil {
		t.Fatal(err)
	}
	g, err := in.CreateGroup(ctx, []byte("redaction-group"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.heldPSKs(ctx); err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{"signature key": in.sig.Bytes(), "read-model key": dbKey, "external PSK": psk}
	redacttest.Check(t, in, secrets)
	redacttest.Check(t, g, secrets)
	// The Installation's cache of a group holds the serialized state its
	// epoch started with (the signature key and the epoch's secrets):
	// fmt follows one pointer under %s and %q (redacttest prints the
	// pointee of a *groupState), so it must not be a []byte there.
	gs := in.group["redaction-group"]
	if gs == nil || gs.epochStart.IsZero() {
		t.Fatal("the group's epoch-start state is not cached")
	}
	redacttest.Check(t, gs, secrets)
	if s := fmt.Sprint(in); !strings.Contains(s, "alice") || !strings.Contains(s, b.dbPath("alice")) {
		t.Errorf("printed Installation %q does not name it", s)
	}
}

// A caller's handler that keeps what Receive returned in unexported
// fields (a value, pointers in a slice, a map) prints none of the
// plaintext: fmt prints such fields by reflection, without calling
// events.Secret's Format, and the Secret keeps its bytes two pointers away.
func TestReceivedPrintsNoPlaintext(t *testing.T) {
	plaintext := []byte("PLAINTEXT-received-0123456789abc")
	rec := Received{GroupID: []byte("redaction-group"), Epoch: 2, Kind: "application", Sender: "bob", SenderLeaf: 1,
		Content: events.NewSecret(plaintext), MessageID: []byte("m-1")}
	type handler struct {
		last   Received
		recent []*Received
		byID   map[string]Received
	}
	h := handler{last: rec, recent: []*Received{&rec}, byID: map[string]Received{"m-1": rec}}
	redacttest.Check(t, h, map[string][]byte{"plaintext": plaintext})
}
