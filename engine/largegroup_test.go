package engine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// natsDefaultMaxPayload is nats-server's default max_payload.
const natsDefaultMaxPayload = 1 << 20

// A group large enough that its events pass nats-server's default
// max_payload (1 MiB) is created, joined and moved on through the
// embedded server as it starts by default: the commit adding everyone
// (the group's whole state), the Welcome (its ratchet tree) and the join
// (both) are stored whole, and the joiner's read model rebuilds equal to
// the live one.
func TestLargeGroupOnEmbeddedDefault(t *testing.T) {
	if raceEnabled {
		t.Skip("4,000 members' MLS under the race detector takes minutes; the path is the one every group takes")
	}
	const members = 4000
	ctx := context.Background()
	dir := t.TempDir()
	l, err := eventlog.Open(ctx, eventlog.Config{DataDir: filepath.Join(dir, "nats"), EmbeddedInProcess: true}, keyring(t, 1, 0x42))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	create := func(id events.InstallationID) *Installation {
		k, err := projections.GenerateRawKey()
		if err != nil {
			t.Fatal(err)
		}
		in, err := CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = in.Close() })
		return in
	}
	committer, joiner := create(alice), create(bob)
	g, err := committer.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	kps, err := foreignKeyPackages(members - 2)
	if err != nil {
		t.Fatal(err)
	}
	jkp, err := joiner.PublishKeyPackage(ctx, "directory", true)
	if err != nil {
		t.Fatal(err)
	}
	co, err := committer.AddMembers(ctx, g.GroupID, append(kps, jkp.KeyPackage)...)
	if err != nil {
		t.Fatalf("adding %d members: %v", members-1, err)
	}
	if len(co.Welcome) <= natsDefaultMaxPayload {
		t.Fatalf("the Welcome is %d bytes: the test needs more members to pass nats-server's default max_payload", len(co.Welcome))
	}
	rec, err := joiner.Receive(ctx, co.Welcome)
	if err != nil || rec.ProjectionErr != nil {
		t.Fatalf("join from a Welcome of %d bytes: %v, %v", len(co.Welcome), err, rec)
	}
	up, err := committer.Update(ctx, g.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := joiner.Receive(ctx, up.Commit); err != nil || rec.ProjectionErr != nil {
		t.Fatalf("processing the update: %v, %v", err, rec)
	}
	ec, ac, err := committer.EpochAuthenticator(ctx, g.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	ej, aj, err := joiner.EpochAuthenticator(ctx, g.GroupID)
	if err != nil || ej != ec || ec != up.Epoch || string(aj) != string(ac) {
		t.Fatalf("joiner at epoch %d (%v), committer at %d, update to %d; authenticators equal: %v", ej, err, ec, up.Epoch, string(aj) == string(ac))
	}
	// The join's event carries the Welcome and the state whole: it reads
	// back, and the MLS history verifies.
	b := &backend{t: t, log: l, insts: map[events.InstallationID]*Installation{alice: committer, bob: joiner}}
	b.checkRebuild(bob)
	b.checkRebuild(alice)
}
