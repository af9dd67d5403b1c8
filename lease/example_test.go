package lease_test

import (
	"context"
	"errors"
	"log"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A service takes an installation's lease before it writes the
// installation's read model, and checks it before each write; the share
// group's followers then leave that read model alone.
func ExampleBucket_Acquire() {
	ctx := context.Background()
	var l *eventlog.Log // opened with eventlog.Open
	b, err := lease.Open(ctx, l, lease.Config{Group: "models"})
	if err != nil {
		log.Fatal(err)
	}
	ls, err := b.Acquire(ctx, "alice-phone")
	var held *lease.HeldError
	switch {
	case errors.As(err, &held):
		log.Printf("alice-phone is served elsewhere: %s", held.Holder)
		return
	case err != nil:
		log.Fatal(err)
	}
	defer ls.Release(ctx)
	// ... open the installation; before each write:
	if err := ls.Check(); err != nil {
		return // lost: stop writing (errors.Is(err, lease.ErrLeaseLost))
	}
}

// Followers of a share group: each runs a Member, which calls serve for
// each installation the group gives it; the projection is fenced by the
// lease and stops when serve's context ends.
func ExampleMember_Run() {
	ctx := context.Background()
	var l *eventlog.Log // opened with eventlog.Open
	var key projections.Key
	b, err := lease.Open(ctx, l, lease.Config{Group: "models"})
	if err != nil {
		log.Fatal(err)
	}
	known := func() []events.InstallationID { return []events.InstallationID{"alice-phone", "bob-laptop"} }
	serve := func(ctx context.Context, ls *lease.Lease) {
		db, err := projections.OpenExisting("/srv/models/"+string(ls.Installation())+".db", key, nil)
		if err != nil {
			log.Print(err)
			return
		}
		defer db.Close()
		err = replay.Project(ctx, l, []replay.Projection{{Installation: ls.Installation(), DB: db}},
			&replay.ProjectOptions{Fence: func(events.InstallationID) error { return ls.Check() }})
		if err != nil && ctx.Err() == nil {
			log.Print(err)
		}
	}
	_ = b.NewMember("").Run(ctx, known, serve) // until ctx ends
}
