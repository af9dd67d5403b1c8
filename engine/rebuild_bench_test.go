package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

// BenchmarkRebuildMLSCheck rebuilds a member's read model from a real MLS
// history (a group of three: commits with path updates and application
// messages, delivered and acknowledged) with the MLS re-derivation that
// replay.Rebuild runs by default ("check") and without it ("skip"): the
// ratio of the two is the check's cost (docs/benchmarks.md).
func BenchmarkRebuildMLSCheck(b *testing.B) {
	ctx := context.Background()
	be := newBackend(b)
	members := []events.InstallationID{alice, bob, carol}
	for _, id := range members {
		be.create(id)
	}
	created, err := be.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	gid := created.GroupID
	co, err := be.insts[alice].AddMembers(ctx, gid, be.keyPackage(bob), be.keyPackage(carol))
	if err != nil {
		b.Fatal(err)
	}
	be.deliverCommit(co)
	be.drainAll()
	for round := 0; round < 20; round++ {
		co, err := be.insts[members[round%3]].Update(ctx, gid)
		if err != nil {
			b.Fatal(err)
		}
		be.deliverCommit(co)
		be.drainAll()
		for i := 0; i < 25; i++ {
			be.send(members[i%3], gid, fmt.Sprintf("round %d message %d", round, i))
			be.drainAll() // each member processes it before sending (no racing commits)
		}
	}
	dir := b.TempDir()
	for _, mode := range []string{"check", "skip"} {
		b.Run(mode, func(b *testing.B) {
			var replayed int
			for i := 0; b.Loop(); i++ {
				path := filepath.Join(dir, fmt.Sprintf("%s-%d.db", mode, i))
				res, err := replay.Rebuild(ctx, be.log, bob, path, be.keys[bob], &replay.RebuildOptions{Options: replay.Options{SkipMLSCheck: mode == "skip"}})
				if err != nil {
					b.Fatal(err)
				}
				replayed = res.Replayed
			}
			b.ReportMetric(float64(replayed), "events")
			b.ReportMetric(float64(replayed)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
