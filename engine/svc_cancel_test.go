package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestCreateInstallationUnderAnEndedContextLeavesNoFile: a create whose
// context has ended records nothing and removes the read model file it
// made, so a create again under another key (a service that draws one
// per try) works; the file was left under the first key, and every
// later create or open under another was ErrWrongKey.
func TestCreateInstallationUnderAnEndedContextLeavesNoFile(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	k1, _ := projections.GenerateRawKey()
	if _, err := CreateInstallation(ended, b.log, "svc", b.dbPath("svc"), k1, b.opts()); err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("create under an ended context: %v; want a plain error", err)
	}
	if _, err := os.Stat(b.dbPath("svc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read model file after a create that recorded nothing: %v", err)
	}
	k2, _ := projections.GenerateRawKey()
	in, err := CreateInstallation(ctx, b.log, "svc", b.dbPath("svc"), k2, b.opts())
	if err != nil {
		t.Fatalf("create again under another key: %v", err)
	}
	b.insts["svc"], b.keys["svc"] = in, k2
	b.checkRebuild("svc")
}

// TestCreateInstallationEndedAfterItsAppend: a create whose context
// ends once installation.created is durable, before its read model
// applies it, succeeds (it happened: the read model lags, as an
// operation's may), and the installation works and rebuilds. It failed:
// a service told the installation was not created tried again under
// another key, and got ErrWrongKey for good (the file), or with another
// path ErrInstallationExists, its signature key in a read model whose
// key it had dropped.
func TestCreateInstallationEndedAfterItsAppend(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	createdHook = cancel
	defer func() { createdHook = nil }()
	k, _ := projections.GenerateRawKey()
	in, err := CreateInstallation(cctx, b.log, "svc", b.dbPath("svc"), k, b.opts())
	createdHook = nil
	if err != nil {
		t.Fatalf("create whose context ended after its append: %v; want it created", err)
	}
	b.insts["svc"], b.keys["svc"] = in, k
	if _, err := in.CreateGroup(ctx, nil); err != nil {
		t.Fatal(err)
	}
	b.checkRebuild("svc")
	b.restart("svc")
	b.checkRebuild("svc")
}

// TestCreateInstallationCancelledAtEveryPoint creates installations
// under contexts that end at a sweep of moments across a create's
// duration: a create that returns an error other than ErrOutcomeUnknown
// recorded nothing and left no file, so a create again under another
// key works; after ErrOutcomeUnknown, a create again under the same key
// works or says ErrInstallationExists, and OpenInstallation opens it.
// Every installation then works and rebuilds. (A create whose
// installation.created was durable but not yet projected failed: the
// service, told it was not created, tried another key and got
// ErrWrongKey for good.)
func TestCreateInstallationCancelledAtEveryPoint(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	// How long a create takes here: the sweep covers it and a half more.
	took := time.Duration(1 << 62)
	for i := range 3 {
		start := time.Now()
		b.create(events.InstallationID(fmt.Sprintf("timing-%d", i)))
		took = min(took, time.Since(start))
	}
	const points = 60
	outcomes := map[string]int{}
	for i := range points {
		id := events.InstallationID(fmt.Sprintf("svc-%d", i))
		path := b.dbPath(id)
		k, _ := projections.GenerateRawKey()
		d := took * 3 / 2 * time.Duration(i) / points
		cctx, cancel := context.WithTimeout(ctx, d)
		in, err := CreateInstallation(cctx, b.log, id, path, k, b.opts())
		cancel()
		switch {
		case err == nil:
			outcomes["created"]++
		case errors.Is(err, ErrOutcomeUnknown):
			in, err = CreateInstallation(ctx, b.log, id, path, k, b.opts())
			switch {
			case err == nil:
				outcomes["unknown, not recorded"]++
			case errors.Is(err, ErrInstallationExists):
				outcomes["unknown, recorded"]++
				if in, err = OpenInstallation(ctx, b.log, id, path, k, b.opts()); err != nil {
					t.Fatalf("%s: recorded by a create of unknown outcome, then open: %v", id, err)
				}
			default:
				t.Fatalf("%s: create again after an unknown outcome: %v", id, err)
			}
		default:
			outcomes["failed"]++
			if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("%s: create failed (%v), its read model file is left: %v", id, err, serr)
			}
			k, _ = projections.GenerateRawKey()
			if in, err = CreateInstallation(ctx, b.log, id, path, k, b.opts()); err != nil {
				t.Fatalf("%s: create again under another key after a failed one: %v", id, err)
			}
		}
		b.insts[id], b.keys[id] = in, k
		if _, err := in.CreateGroup(ctx, nil); err != nil {
			t.Fatalf("%s: create group: %v", id, err)
		}
		b.checkRebuild(id)
	}
	t.Logf("a create took %v; outcomes: %v", took, outcomes)
}

// TestWelcomeCancelledAtEveryPoint processes Welcomes under contexts
// that end at a sweep of moments: a failed one is processed again (or
// is a redelivery, after an unknown outcome), the member then receives
// the group's messages, and its history verifies and rebuilds.
func TestWelcomeCancelledAtEveryPoint(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	bob := b.create("bob")
	outcomes := map[string]int{}
	for i := range 30 {
		g, err := alice.CreateGroup(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		lastResort := i%2 == 0
		kp, err := bob.PublishKeyPackage(ctx, "d", lastResort)
		if err != nil {
			t.Fatal(err)
		}
		co, err := alice.AddMembers(ctx, g.GroupID, kp.KeyPackage)
		if err != nil {
			t.Fatal(err)
		}
		d := time.Duration(i) * 300 * time.Microsecond
		cctx, cancel := context.WithTimeout(ctx, d)
		_, err = bob.Receive(cctx, co.Welcome)
		cancel()
		if err != nil {
			_, err2 := bob.Receive(ctx, co.Welcome)
			switch {
			case err2 == nil:
				outcomes["failed, processed again"]++
			case errors.Is(err2, ErrDuplicateMessage):
				outcomes[fmt.Sprintf("failed (unknown %v), recorded", errors.Is(err, ErrOutcomeUnknown))]++
			default:
				t.Fatalf("welcome %d: cancelled: %v; again: %v", i, err, err2)
			}
		} else {
			outcomes["processed"]++
		}
		so, err := alice.Send(ctx, g.GroupID, []byte(fmt.Sprintf("hello %d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := bob.Receive(ctx, so.Message)
		if err != nil || string(r.Content.Bytes()) != fmt.Sprintf("hello %d", i) {
			t.Fatalf("welcome %d: then a message: %v", i, err)
		}
	}
	t.Logf("outcomes: %v", outcomes)
	b.checkRebuild("bob")
	b.restart("bob")
	b.checkRebuild("bob")
}

// TestOpenUnderAnEndedContextLeavesNoFile: an open ("open, else create")
// whose context has ended, of an installation not created yet, removes
// the read model file it made, so the open again says ErrNoInstallation
// and the CreateInstallation that follows works under another key (the
// file was left under the first key: the next open, not having created
// it, kept it, and the create was ErrWrongKey for good).
func TestOpenUnderAnEndedContextLeavesNoFile(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	k1, _ := projections.GenerateRawKey()
	if _, err := OpenInstallation(ended, b.log, "svc", b.dbPath("svc"), k1, b.opts()); err == nil {
		t.Fatal("open under an ended context succeeded")
	}
	if _, err := os.Stat(b.dbPath("svc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read model file after an open that found nothing: %v", err)
	}
	if _, err := OpenInstallation(ctx, b.log, "svc", b.dbPath("svc"), k1, b.opts()); !errors.Is(err, ErrNoInstallation) {
		t.Fatalf("open again: %v, want ErrNoInstallation", err)
	}
	k2, _ := projections.GenerateRawKey()
	in, err := CreateInstallation(ctx, b.log, "svc", b.dbPath("svc"), k2, b.opts())
	if err != nil {
		t.Fatalf("create under another key after the opens: %v", err)
	}
	b.insts["svc"], b.keys["svc"] = in, k2
	// A fresh read model of an existing installation (a lost one being
	// recovered) whose open ends before it holds anything goes the same
	// way, and the open again builds it.
	if _, err := OpenInstallation(ended, b.log, "svc", filepath.Join(b.dir, "svc-2.db"), k2, b.opts()); err == nil {
		t.Fatal("open under an ended context succeeded")
	}
	in2, err := OpenInstallation(ctx, b.log, "svc", filepath.Join(b.dir, "svc-2.db"), k2, b.opts())
	if err != nil {
		t.Fatalf("open a second read model of svc: %v", err)
	}
	in2.Close()
	b.checkRebuild("svc")
}
