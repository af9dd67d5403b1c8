package replay

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// Objects under instA's snapshot names past its history that the object
// store does not read as an object of their own (a link to another
// bucket; one whose content does not match its digest: both made by
// whoever may write to the bucket) are not snapshots, and a snapshot
// passes over them as over any object that does not open. Until
// 2026-12-07 each failed every snapshot, prune and retain of instA for
// good with the object store's error. And a large object of garbage
// there costs CheckSnapshotObject its first bytes, not its size (counted
// on the Log's connection): until 2026-12-07 it was downloaded whole.
func TestSnapshotPastUnreadableForgedObjects(t *testing.T) {
	ctx := context.Background()
	l, _, db, _, _ := retainRaceWorld(t)
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, l.SnapshotBucket())
	if err != nil {
		t.Fatal(err)
	}
	const big = 16 << 20
	bigRef, err := l.PutSealedSnapshot(ctx, instA, forgedFar, bytes.Repeat([]byte("not a snapshot "), big/15))
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimSuffix(bigRef.Name, fmt.Sprintf("%020d", uint64(forgedFar)))

	other, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "OTHER"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.AddBucketLink(ctx, fmt.Sprintf("%s%020d", prefix, uint64(forgedFar+1)), other); err != nil {
		t.Fatal(err)
	}
	digestRef, err := l.PutSealedSnapshot(ctx, instA, forgedFar+2, []byte("its digest will not match"))
	if err != nil {
		t.Fatal(err)
	}
	breakDigest(t, l, js, digestRef.Name)

	for _, cp := range []uint64{forgedFar + 1, forgedFar + 2} {
		ref := eventlog.SnapshotRef{Name: fmt.Sprintf("%s%020d", prefix, cp), Checkpoint: cp}
		if err := CheckSnapshotObject(ctx, l, instA, ref); !errors.Is(err, ErrNotASnapshot) {
			t.Errorf("check of the object at %d: %v, want ErrNotASnapshot", cp, err)
		}
	}
	if _, err := SnapshotDB(ctx, l, instA, db, snapshotOpts()); err != nil {
		t.Fatalf("snapshot beside a link and an object that does not match its digest: %v", err)
	}

	before := l.Conn().Stats().InBytes
	err = CheckSnapshotObject(ctx, l, instA, bigRef)
	if !errors.Is(err, ErrNotASnapshot) || !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("check of %d bytes of garbage: %v, want ErrNotASnapshot (malformed)", big, err)
	}
	if got := l.Conn().Stats().InBytes - before; got > big/4 {
		t.Fatalf("the check of %d bytes of garbage received %d bytes: it was downloaded", big, got)
	}
}

// breakDigest rewrites the metadata of object name in the snapshots
// bucket with another digest, as anyone who may publish on the bucket's
// subjects can.
func breakDigest(t *testing.T, l *eventlog.Log, js jetstream.JetStream, name string) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, "OBJ_"+l.SnapshotBucket())
	if err != nil {
		t.Fatal(err)
	}
	subj := "$O." + l.SnapshotBucket() + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	const field = `"digest":"SHA-256=`
	i := bytes.Index(m.Data, []byte(field))
	if i < 0 {
		t.Fatalf("no digest in the metadata of %s: %s", name, m.Data)
	}
	meta := bytes.Clone(m.Data)
	meta[i+len(field)] ^= 'A' ^ 'B' // another digest, as long
	if meta[i+len(field)] != 'A' && meta[i+len(field)] != 'B' {
		meta[i+len(field)] = 'A'
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: meta, Header: nats.Header{"Nats-Rollup": []string{"sub"}}}); err != nil {
		t.Fatal(err)
	}
}

// An object the object store does not read as one of its own (a link to
// another bucket; content that does not match its digest) put under
// instA's snapshot name at the read model's own checkpoint does not
// stop the snapshot there: it is not a snapshot to put back should the
// put be undone, and the put replaces it. Until 2026-12-07 reading it
// for that failed the snapshot, "nothing stored", and an idle read
// model (whose checkpoint does not move) could not be snapshotted, nor
// retained, until someone deleted the object.
func TestSnapshotOverAnUnreadableObjectAtItsCheckpoint(t *testing.T) {
	ctx := context.Background()
	for _, forge := range []string{"link", "digest"} {
		t.Run(forge, func(t *testing.T) {
			l, _, db, _, _ := retainRaceWorld(t)
			js, err := jetstream.New(l.Conn())
			if err != nil {
				t.Fatal(err)
			}
			cp, err := db.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch forge {
			case "link":
				// The name at cp, learnt from an object put at another
				// checkpoint (a link is made only where no object is).
				far, err := l.PutSealedSnapshot(ctx, instA, forgedFar, []byte("not a snapshot"))
				if err != nil {
					t.Fatal(err)
				}
				name := strings.TrimSuffix(far.Name, fmt.Sprintf("%020d", uint64(forgedFar))) + fmt.Sprintf("%020d", cp)
				obs, err := js.ObjectStore(ctx, l.SnapshotBucket())
				if err != nil {
					t.Fatal(err)
				}
				other, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "OTHER"})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := obs.AddBucketLink(ctx, name, other); err != nil {
					t.Fatal(err)
				}
			case "digest":
				ref, err := l.PutSealedSnapshot(ctx, instA, cp, []byte("its digest will not match"))
				if err != nil {
					t.Fatal(err)
				}
				breakDigest(t, l, js, ref.Name)
			}
			res, err := SnapshotDB(ctx, l, instA, db, snapshotOpts())
			if err != nil {
				t.Fatalf("snapshot at %d over a forged object (%s) there: %v", cp, forge, err)
			}
			if res.Checkpoint != cp {
				t.Fatalf("snapshot at %d, want at the read model's checkpoint %d", res.Checkpoint, cp)
			}
			if err := CheckSnapshotObject(ctx, l, instA, eventlog.SnapshotRef{Name: res.Name, Checkpoint: cp}); err != nil {
				t.Fatalf("the object at %d after the snapshot: %v, want the snapshot", cp, err)
			}
		})
	}
}
