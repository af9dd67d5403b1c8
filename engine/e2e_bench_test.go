package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// BenchmarkE2EGroup100 measures application messages per second through
// the whole path for a group of 100 installations: Send (seal, record,
// project) -> fan-out to 99 delivery queues -> each recipient fetches,
// Receives (open, record, project into its own SQLCipher read model) and
// acknowledges. One op is one message delivered to all 99 recipients.
//
// It runs with SQLCipher's cipher_memory_security ON (this build's default)
// and OFF (SQLCipher's own default); see projections.SetMemorySecurity.
func BenchmarkE2EGroup100(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("memsec=%v", on), func(b *testing.B) {
			prev, err := projections.MemorySecurity()
			if err != nil {
				b.Fatal(err)
			}
			if err := projections.SetMemorySecurity(on); err != nil {
				b.Fatal(err)
			}
			// Restored after the backend's cleanup closed its databases.
			b.Cleanup(func() { _ = projections.SetMemorySecurity(prev) })
			benchGroup(b, 100)
		})
	}
}

func benchGroup(b *testing.B, size int) {
	ctx := context.Background()
	be := newBackend(b)
	ids := make([]events.InstallationID, size)
	for i := range ids {
		ids[i] = events.InstallationID(fmt.Sprintf("member-%03d", i))
		be.create(ids[i])
	}
	created, err := be.insts[ids[0]].CreateGroup(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	gid := created.GroupID
	var kps [][]byte
	for _, id := range ids[1:] {
		kps = append(kps, be.keyPackage(id))
	}
	co, err := be.insts[ids[0]].AddMembers(ctx, gid, kps...)
	if err != nil {
		b.Fatal(err)
	}
	be.deliverCommit(co)
	be.drainAll()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		out := be.send(ids[0], gid, fmt.Sprintf("message %d", i))
		if len(out.Recipients) != size-1 {
			b.Fatalf("%d recipients", len(out.Recipients))
		}
		for _, r := range out.Recipients {
			if got := be.drain(r); len(got) != 1 {
				b.Fatalf("%s received %d", r, len(got))
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N*(size-1))/b.Elapsed().Seconds(), "deliveries/s")
}

// rebuildMessages is the size of the installation BenchmarkE2ERebuild
// replays.
const rebuildMessages = 100_000

// BenchmarkE2ERebuild measures rebuilding an installation's read model
// from scratch: its group with rebuildMessages real MLS application
// messages (sealed by the group, recorded as application.message_sent),
// replayed from the log into a fresh SQLCipher database. The events are
// loaded with AppendBulk, since the append path is not what is measured.
func BenchmarkE2ERebuild(b *testing.B) {
	ctx := context.Background()
	be := newBackend(b)
	in := be.create(alice)
	other := be.create(bob)
	created, err := in.CreateGroup(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	gid := created.GroupID
	co, err := in.AddMembers(ctx, gid, be.keyPackage(bob))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := other.Receive(ctx, co.Welcome); err != nil {
		b.Fatal(err)
	}
	in.mu.Lock()
	gs, err := in.loadGroup(ctx, gid)
	in.mu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	g, pos := gs.g, gs.pos
	agg := in.groupAgg(gid)
	var ts []eventlog.Transition
	var batch []events.Event
	t0 := be.now
	for i := 0; i < rebuildMessages; i++ {
		content := []byte(fmt.Sprintf("message %d with some ordinary length text", i))
		ng, msg, err := g.SealApplication(content, nil)
		if err != nil {
			b.Fatal(err)
		}
		wire, _ := msg.Marshal()
		g = ng
		pos++
		batch = append(batch, events.Event{Aggregate: agg, Position: pos, Time: t0.Add(time.Duration(i) * time.Millisecond), Body: events.ApplicationMessageSent{
			GroupID: gid, Epoch: g.Epoch(), SenderLeaf: uint32(g.LeafIndex()), Sender: alice, MessageID: messageID(wire), Content: events.Secret(content)}})
		if len(batch) == 1000 {
			ts = append(ts, eventlog.Transition{Expected: pos - uint64(len(batch)), Events: batch})
			batch = nil
		}
	}
	if len(batch) > 0 {
		ts = append(ts, eventlog.Transition{Expected: pos - uint64(len(batch)), Events: batch})
	}
	if _, err := be.log.AppendBulk(ctx, ts); err != nil {
		b.Fatal(err)
	}
	if err := in.CatchUp(ctx); err != nil {
		b.Fatal(err)
	}
	live, err := in.DB().Digest(ctx)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	var n int
	for i := 0; b.Loop(); i++ {
		k, _ := projections.GenerateRawKey()
		fresh, err := projections.Open(filepath.Join(dir, fmt.Sprintf("rebuild-%d.db", i)), k, nil)
		if err != nil {
			b.Fatal(err)
		}
		if n, _, err = replay.CatchUp(ctx, be.log, alice, fresh, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		got, err := fresh.Digest(ctx)
		if err != nil || !got.Equal(live) {
			b.Fatalf("rebuilt read model differs from the live one (%v)", err)
		}
		fresh.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
