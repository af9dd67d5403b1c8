package eventlog

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// ringOf builds a keyring of the given ids, each key filled with its id's
// byte (0x11 for 1, ...), current the last id given.
func ringOf(t testing.TB, ids ...events.KeyID) *events.Keyring {
	t.Helper()
	r, err := rewrapRing(ids...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rewrapRing is ringOf without a test (the kill test's child uses it).
func rewrapRing(ids ...events.KeyID) (*events.Keyring, error) {
	var r *events.Keyring
	for _, id := range ids {
		k, err := events.NewRootKey(bytes.Repeat([]byte{byte(id) * 0x11}, 32))
		if err != nil {
			return nil, err
		}
		if r == nil {
			if r, err = events.NewKeyring(id, k); err != nil {
				return nil, err
			}
			continue
		}
		if err := r.Rotate(id, k); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// wrapIDs counts the bucket's entries by the root key id wrapping them.
func wrapIDs(t testing.TB, l *Log) map[events.KeyID]int {
	t.Helper()
	out := map[events.KeyID]int{}
	for name, w := range bucketKeys(t, l) {
		id, err := events.WrappedKeyID(w)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[id]++
	}
	return out
}

// TestRewrapRetiresRootKey writes two installations' history with root
// key 2 current (1 is the pseudonym anchor), re-wraps under key 3, and
// shows: no wrap under 2 is left; key 2 alone, and the ring without 3,
// open no wrap and no event; the ring with 3 reads everything; the use
// report calls 2 retired; re-wrapping again changes nothing.
func TestRewrapRetiresRootKey(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	ctx := context.Background()
	l := openLog(t, cfg, ringOf(t, 1, 2))
	insts := []events.InstallationID{instA, instB}
	raw := map[events.InstallationID][]rawEnvelope{}
	want := map[events.InstallationID][]Record{}
	for _, inst := range insts {
		writeMixed(t, l, inst)
		raw[inst] = rawOf(t, l, inst)
		want[inst] = readAll(t, l, inst, 0)
	}
	before := wrapIDs(t, l)
	if before[2] == 0 || len(before) != 1 {
		t.Fatalf("wraps before: %v, want all under 2", before)
	}

	nl := openLog(t, cfg, ringOf(t, 1, 2, 3))
	if _, err := nl.Rewrap(ctx, &RewrapOptions{Installations: insts[:1]}); !errors.Is(err, ErrUnknownInstallations) {
		t.Fatalf("rewrap naming one of two installations: %v, want ErrUnknownInstallations", err)
	}
	res, err := nl.Rewrap(ctx, &RewrapOptions{Installations: insts})
	if err != nil {
		t.Fatal(err)
	}
	if res.Current != 3 || res.Rewrapped+res.AlreadyCurrent != before[2] || res.From[2] != res.Rewrapped || len(res.Unknown) != 0 {
		t.Fatalf("rewrap: %+v, %d entries before", res, before[2])
	}
	if after := wrapIDs(t, nl); after[3] != before[2] || len(after) != 1 {
		t.Fatalf("wraps after: %v", after)
	}

	// Key 2 alone opens no wrap.
	only2 := ringOf(t, 2)
	byPseudo := map[string]events.InstallationID{nl.instPseudonym(instA): instA, nl.instPseudonym(instB): instB}
	for name, w := range bucketKeys(t, nl) {
		pseudo, id, err := events.ParseDataKeyName(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := only2.UnwrapDataKey(cfg.streamName(), byPseudo[pseudo], id, w); !errors.Is(err, events.ErrUnknownKey) {
			t.Fatalf("key 2 unwraps %s: %v", name, err)
		}
		if _, err := ringOf(t, 3).UnwrapDataKey(cfg.streamName(), byPseudo[pseudo], id, w); err != nil {
			t.Fatalf("key 3 does not unwrap %s: %v", name, err)
		}
	}
	// The ring without 3 opens no event (a fresh Log: nothing cached).
	old := openLog(t, cfg, ringOf(t, 1, 2))
	for _, inst := range insts {
		for _, r := range raw[inst] {
			if _, err := old.OpenEnvelope(ctx, inst, r.subject, r.data); err == nil {
				t.Fatalf("the old ring opens %s seq %d after the re-wrap", inst, r.seq)
			}
		}
		if _, err := tryReadAll(old, inst, 0); err == nil {
			t.Fatalf("the old ring reads %s after the re-wrap", inst)
		}
	}
	// The new ring (fresh) reads everything, unchanged.
	fresh := openLog(t, cfg, ringOf(t, 1, 2, 3))
	for _, inst := range insts {
		got := readAll(t, fresh, inst, 0)
		if len(got) != len(want[inst]) {
			t.Fatalf("%s: %d events, want %d", inst, len(got), len(want[inst]))
		}
		for i := range got {
			sameEvent(t, got[i].Event, want[inst][i].Event)
		}
	}
	uses, err := fresh.RootKeyUses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !uses[2].Retired() || uses[3].Wraps != before[2] || !uses[1].PseudonymAnchor || uses[1].Retired() {
		t.Fatalf("uses: 1 %+v, 2 %+v, 3 %+v", *uses[1], *uses[2], *uses[3])
	}
	// Again: nothing to do.
	res, err = fresh.Rewrap(ctx, &RewrapOptions{Installations: insts})
	if err != nil || res.Rewrapped != 0 || res.AlreadyCurrent != before[2] {
		t.Fatalf("second rewrap: %+v %v", res, err)
	}
}

// TestRootKeyUsesRootSealed shows that a root key still sealing events of
// format 2, tombstones or snapshots is not called retired after a
// re-wrap, and the report says what needs it.
func TestRootKeyUsesRootSealed(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	ctx := context.Background()
	l := openLog(t, cfg, ringOf(t, 1, 2))
	writeMixed(t, l, instA)
	l.sealRoot = true
	mustAppend(t, l, 0, msg(group(instB, "g-old"), 1, "format 2"))
	l.sealRoot = false
	if _, err := l.PutSnapshot(ctx, instA, 1, []byte("snapshot")); err != nil {
		t.Fatal(err)
	}
	writeMixed(t, l, "inst-gone")
	if _, err := l.Erase(ctx, "inst-gone", nil); err != nil {
		t.Fatal(err)
	}
	nl := openLog(t, cfg, ringOf(t, 1, 2, 3))
	if _, err := nl.Rewrap(ctx, &RewrapOptions{Installations: []events.InstallationID{instA, instB}}); err != nil {
		t.Fatal(err)
	}
	uses, err := nl.RootKeyUses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u := uses[2]
	if u.Retired() || u.Wraps != 0 || u.Events != 1 || u.Tombstones != 1 || u.Snapshots != 1 {
		t.Fatalf("key 2: %+v (%s)", *u, u.Needs())
	}
	if u.Needs() != "1 events of envelope format 1/2, 1 tombstones, 1 snapshots" {
		t.Fatalf("needs: %q", u.Needs())
	}
}

// streamName is the configured stream name with defaults applied.
func (c Config) streamName() string {
	if c.Stream == "" {
		return DefaultStream
	}
	return c.Stream
}
