package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// mlsChannel is the one delivery channel the tests use per installation,
// so Welcomes, commits and messages of all groups arrive in send order.
const mlsChannel = "mls"

// backend is what a service linking engine holds: a Log, the delivery
// queues, and the installations it acts for with their read model keys.
type backend struct {
	t     testing.TB
	srv   *natstest.Server
	ring  *events.Keyring
	dir   string
	log   *eventlog.Log
	del   *Deliveries
	insts map[events.InstallationID]*Installation
	keys  map[events.InstallationID]projections.Key
	now   time.Time
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	return newBackendOn(t, natstest.Options{})
}

// newBackendOn is newBackend on a server started with opts.
func newBackendOn(t testing.TB, opts natstest.Options) *backend {
	t.Helper()
	srv := natstest.Start(t, opts)
	b := &backend{t: t, srv: srv, ring: keyring(t, 1, 0x42), dir: t.TempDir(),
		insts: map[events.InstallationID]*Installation{}, keys: map[events.InstallationID]projections.Key{},
		now: time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)}
	b.open()
	t.Cleanup(b.close)
	return b
}

func (b *backend) clock() time.Time { return b.now }

func (b *backend) opts() *InstallationOptions {
	return &InstallationOptions{Now: b.clock, UpdateInterval: time.Hour}
}

// open connects the Log and the delivery service (a process start).
func (b *backend) open() {
	l, err := eventlog.Open(context.Background(), testConfig(b.srv), b.ring)
	if err != nil {
		b.t.Fatalf("open log: %v", err)
	}
	b.log = l
	b.del = NewDeliveries(l, b.clock)
}

// close closes every installation and the Log (a process exit).
func (b *backend) close() {
	for id, in := range b.insts {
		if err := in.Close(); err != nil {
			b.t.Errorf("close %s: %v", id, err)
		}
		delete(b.insts, id)
	}
	if b.log != nil {
		b.log.Close()
		b.log = nil
	}
}

func (b *backend) dbPath(id events.InstallationID) string {
	return filepath.Join(b.dir, string(id)+".db")
}

func (b *backend) create(id events.InstallationID) *Installation {
	b.t.Helper()
	return b.createWith(id, b.opts())
}

// createWith is create with other installation options.
func (b *backend) createWith(id events.InstallationID, opts *InstallationOptions) *Installation {
	b.t.Helper()
	k, err := projections.GenerateRawKey()
	if err != nil {
		b.t.Fatal(err)
	}
	in, err := CreateInstallation(context.Background(), b.log, id, b.dbPath(id), k, opts)
	if err != nil {
		b.t.Fatalf("create %s: %v", id, err)
	}
	b.insts[id], b.keys[id] = in, k
	return in
}

// restart closes one installation and opens it again from its read model
// (that installation's process restarting).
func (b *backend) restart(id events.InstallationID) *Installation {
	b.t.Helper()
	if err := b.insts[id].Close(); err != nil {
		b.t.Fatalf("close %s: %v", id, err)
	}
	in, err := OpenInstallation(context.Background(), b.log, id, b.dbPath(id), b.keys[id], b.opts())
	if err != nil {
		b.t.Fatalf("reopen %s: %v", id, err)
	}
	b.insts[id] = in
	return in
}

// recordStates does what Installation.Retain does first for id: records
// the state of each group holding messages before cut that a reload
// needs (a retention stopped there leaves that, and the rows).
func (b *backend) recordStates(id events.InstallationID, cut time.Time) {
	b.t.Helper()
	in := b.insts[id]
	in.mu.Lock()
	err := in.recordStatesBefore(context.Background(), cut)
	in.mu.Unlock()
	if err != nil {
		b.t.Fatalf("record the states of %s: %v", id, err)
	}
}

// retentionKilledBeforeSnapshot leaves id's read model as a retention
// SIGKILLed after deleting its rows and before its snapshot does: the
// states before cut recorded, the rows before cut deleted (want of
// them), then a restart.
func (b *backend) retentionKilledBeforeSnapshot(id events.InstallationID, cut time.Time, want int64) {
	b.t.Helper()
	b.recordStates(id, cut)
	if n, err := b.insts[id].DB().DeleteMessagesBefore(context.Background(), cut); err != nil || n != want {
		b.t.Fatalf("%s: delete messages: %d, %v; want %d", id, n, err, want)
	}
	b.restart(id)
}

// rebuiltAsLive is rebuildAndRestart, requiring the rebuilt read model's
// digest to be the live one's.
func (b *backend) rebuiltAsLive(id events.InstallationID) *Installation {
	b.t.Helper()
	ctx := context.Background()
	live, err := b.insts[id].DB().Digest(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	in := b.rebuildAndRestart(id)
	got, err := in.DB().Digest(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	if !live.Equal(got) {
		b.t.Fatalf("%s: the rebuilt read model differs from the live one: %v", id, projections.Compare(live, got))
	}
	return in
}

// rebuildAndRestart closes id, rebuilds its read model by replay and
// opens it again from the rebuilt file.
func (b *backend) rebuildAndRestart(id events.InstallationID) *Installation {
	b.t.Helper()
	if err := b.insts[id].Close(); err != nil {
		b.t.Fatalf("close %s: %v", id, err)
	}
	if _, err := replay.Rebuild(context.Background(), b.log, id, b.dbPath(id), b.keys[id], nil); err != nil {
		b.t.Fatalf("rebuild %s: %v", id, err)
	}
	in, err := OpenInstallation(context.Background(), b.log, id, b.dbPath(id), b.keys[id], b.opts())
	if err != nil {
		b.t.Fatalf("reopen %s: %v", id, err)
	}
	b.insts[id] = in
	return in
}

// reopen opens every known installation again from its read model.
func (b *backend) reopen() {
	b.t.Helper()
	for id, k := range b.keys {
		in, err := OpenInstallation(context.Background(), b.log, id, b.dbPath(id), k, b.opts())
		if err != nil {
			b.t.Fatalf("reopen %s: %v", id, err)
		}
		b.insts[id] = in
	}
}

// deliverCommit queues a commit's messages.
func (b *backend) deliverCommit(co *CommitOutput) {
	b.t.Helper()
	ctx := context.Background()
	if _, err := b.del.FanOut(ctx, co.Recipients, mlsChannel, co.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch)); err != nil {
		b.t.Fatalf("fan out commit: %v", err)
	}
	if co.Welcome != nil {
		if _, err := b.del.FanOut(ctx, co.Added, mlsChannel, co.Welcome, time.Time{}, fmt.Sprintf("welcome-%x-%d", co.GroupID, co.Epoch)); err != nil {
			b.t.Fatalf("fan out welcome: %v", err)
		}
	}
}

func (b *backend) send(from events.InstallationID, gid []byte, text string) *SendOutput {
	b.t.Helper()
	out, err := b.insts[from].Send(context.Background(), gid, []byte(text), nil)
	if err != nil {
		b.t.Fatalf("%s send: %v", from, err)
	}
	b.deliverSend(out)
	return out
}

// deliverSend queues a Send's path update, if any, then its message.
func (b *backend) deliverSend(out *SendOutput) {
	b.t.Helper()
	if out.Update != nil {
		b.deliverCommit(out.Update)
	}
	if _, err := b.del.FanOut(context.Background(), out.Recipients, mlsChannel, out.Message, time.Time{}, fmt.Sprintf("msg-%x", out.MessageID)); err != nil {
		b.t.Fatalf("fan out message: %v", err)
	}
}

// drain delivers every pending message to id and acknowledges it; it
// returns the application messages received.
func (b *backend) drain(id events.InstallationID) []*Received {
	b.t.Helper()
	ctx := context.Background()
	ds, err := b.del.Fetch(ctx, id, mlsChannel, 0)
	if err != nil {
		b.t.Fatalf("fetch %s: %v", id, err)
	}
	var got []*Received
	for _, d := range ds {
		r, err := b.insts[id].Receive(ctx, d.Payload)
		if err != nil {
			b.t.Fatalf("%s receive seq %d: %v", id, d.Seq, err)
		}
		if r.Kind == "application" {
			got = append(got, r)
		}
		if err := b.del.Acknowledge(ctx, id, mlsChannel, d.Seq); err != nil {
			b.t.Fatalf("ack %s %d: %v", id, d.Seq, err)
		}
	}
	return got
}

func (b *backend) drainAll() map[events.InstallationID][]*Received {
	out := map[events.InstallationID][]*Received{}
	for id := range b.insts {
		out[id] = b.drain(id)
	}
	return out
}

func (b *backend) keyPackage(id events.InstallationID) []byte {
	b.t.Helper()
	published, err := b.insts[id].PublishKeyPackage(context.Background(), "directory", true)
	if err != nil {
		b.t.Fatalf("%s publish key package: %v", id, err)
	}
	kp := published.KeyPackage
	return kp
}

// checkRebuild verifies id's MLS history and rebuilds its read model from
// scratch into a new file, which must equal the live one.
func (b *backend) checkRebuild(id events.InstallationID) {
	b.t.Helper()
	ctx := context.Background()
	if _, err := replay.VerifyMLS(ctx, b.log, id); err != nil {
		b.t.Fatalf("verify MLS of %s: %v", id, err)
	}
	in := b.insts[id]
	if err := in.CatchUp(ctx); err != nil {
		b.t.Fatal(err)
	}
	k, _ := projections.GenerateRawKey()
	fresh, err := projections.Open(filepath.Join(b.t.TempDir(), "fresh.db"), k, &in.opts.DB)
	if err != nil {
		b.t.Fatal(err)
	}
	defer fresh.Close()
	if _, _, err := replay.CatchUp(ctx, b.log, id, fresh, nil); err != nil {
		b.t.Fatalf("rebuild %s: %v", id, err)
	}
	live, err := in.DB().Digest(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	got, err := fresh.Digest(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	if !live.Equal(got) {
		d, _ := projections.CompareDB(ctx, in.DB(), fresh)
		b.t.Fatalf("%s: rebuilt read model differs from the live one: %v", id, d)
	}
}

func mustErrIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

var (
	keyring    = logtest.Keyring
	testConfig = logtest.Config
	openLog    = logtest.Open
	rawDBKey   = logtest.RawDBKey
)

// keyPackageRef is the ref of a TLS-encoded KeyPackage.
func keyPackageRef(t testing.TB, raw []byte) []byte {
	t.Helper()
	var kp mls.KeyPackage
	if err := kp.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	ref, err := kp.Ref()
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
