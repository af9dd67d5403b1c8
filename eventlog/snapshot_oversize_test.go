package eventlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/epochlog/epochlog/events"
)

// TestSnapshotObjectLongerThanItsMetadataSays: whoever may write to the
// snapshots bucket puts, under one of instA's snapshot names, an object
// whose content is a genuine snapshot's clear header followed by 16 MiB
// of garbage (its digest matching that content) and whose metadata says
// it is 100 bytes. OpenSnapshot says it is not a snapshot
// (events.ErrTampered) having read a little more than those 100 bytes
// (counted on the Log's connection), and a genuine snapshot still opens.
// Until this test the object store's reader, which does not hold an
// object to the size its metadata gives, was read to its end: the whole
// content downloaded and held in memory, under a deadline computed from
// the 100 bytes (RequestTimeout), so that content too large to arrive
// within it would fail every snapshot, prune and retention of instA with a
// timeout instead of passing over the object.
func TestSnapshotObjectLongerThanItsMetadataSays(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	genuine := bytes.Repeat([]byte("read model "), 1000)
	if _, err := l.PutSnapshot(ctx, instA, 10, genuine); err != nil {
		t.Fatal(err)
	}
	sealed, err := l.SealedSnapshot(ctx, instA, 10)
	if err != nil {
		t.Fatal(err)
	}
	const big = 16 << 20
	forged := append(bytes.Clone(sealed[:events.SnapshotHeaderSize]), bytes.Repeat([]byte("garbage "), big/8)...)
	ref, err := l.PutSealedSnapshot(ctx, instA, 50, forged)
	if err != nil {
		t.Fatal(err)
	}
	const claimed = 100
	subj := "$O." + l.SnapshotBucket() + ".M." + base64.URLEncoding.EncodeToString([]byte(ref.Name))
	m, err := l.js.Stream(ctx, "OBJ_"+l.SnapshotBucket())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(raw.Data, &meta); err != nil {
		t.Fatal(err)
	}
	meta["size"] = claimed
	data, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{"Nats-Rollup": []string{"sub"}}}); err != nil {
		t.Fatal(err)
	}

	before := l.Conn().Stats().InBytes
	_, err = l.OpenSnapshot(ctx, instA, 50)
	if !errors.Is(err, events.ErrTampered) {
		t.Fatalf("open of an object longer than its metadata says: %v, want events.ErrTampered", err)
	}
	if got := l.Conn().Stats().InBytes - before; got > big/4 {
		t.Fatalf("the open of an object whose metadata says %d bytes received %d bytes: it was read to its end", claimed, got)
	}
	if got, err := l.OpenSnapshot(ctx, instA, 10); err != nil || !bytes.Equal(got, genuine) {
		t.Fatalf("open of the genuine snapshot: %v", err)
	}
}
