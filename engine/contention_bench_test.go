package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BenchmarkContendedGroup: three processes of one installation (each an
// Installation with its own read model) send and commit on one group as
// fast as they can, 60 operations each a round (one commit in ten). It
// reports `lost-%`, the share of operations that lost every race
// (ErrTooManyConflicts), at 8 attempts and at DefaultMaxAttempts: the
// figure behind the default (docs/engine.md, "Two processes, one
// installation").
//
//	go test -run '^$' -bench ContendedGroup -benchtime 9x ./engine/
func BenchmarkContendedGroup(b *testing.B) {
	for _, attempts := range []int{8, DefaultMaxAttempts} {
		b.Run(fmt.Sprintf("attempts=%d", attempts), func(b *testing.B) {
			var ops, lost int
			for range b.N {
				o, l := contendedRound(b, attempts)
				ops, lost = ops+o, lost+l
			}
			b.ReportMetric(100*float64(lost)/float64(ops), "lost-%")
		})
	}
}

// contendedRound runs one round of BenchmarkContendedGroup on a fresh
// server and returns the operations tried and those that lost every race.
func contendedRound(b *testing.B, attempts int) (ops, lost int) {
	b.StopTimer()
	be := newBackend(b)
	ctx := context.Background()
	alice := be.create("alice")
	be.create("bob")
	gid := be.groupOf(alice, "bob")
	var procs []*Installation
	for i := range 3 {
		in, err := OpenInstallation(ctx, be.log, "alice", filepath.Join(be.dir, fmt.Sprintf("alice-%d.db", i)), be.keys["alice"],
			&InstallationOptions{Now: be.clock, UpdateInterval: time.Hour, MaxAttempts: attempts})
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		procs = append(procs, in)
	}
	b.StartTimer()
	defer b.StopTimer()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, in := range procs {
		wg.Go(func() {
			for i := range 60 {
				var err error
				if i%10 == 9 {
					_, err = in.Update(ctx, gid)
				} else {
					_, err = in.Send(ctx, gid, []byte("x"), nil)
				}
				mu.Lock()
				ops++
				switch {
				case errors.Is(err, ErrTooManyConflicts):
					lost++
				case err != nil:
					b.Error(err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ops, lost
}
