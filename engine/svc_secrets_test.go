package engine

import (
	"bytes"
	"context"
	"fmt"
	"github.com/epochlog/epochlog/internal/syncbuf"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

type lockedBuffer = syncbuf.Buffer

// TestServiceLogsAndErrorsHoldNoSecret runs a service's day at Debug
// level, failures included, and looks for its secrets (read-model keys,
// signature keys, an external PSK, message plaintexts, the root key) in
// everything it logged and every error it got.
func TestServiceLogsAndErrorsHoldNoSecret(t *testing.T) {
	ctx := context.Background()
	var logged lockedBuffer
	srv := natstest.Start(t, natstest.Options{})
	cfg := testConfig(srv)
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	root := bytes.Repeat([]byte{0x9c}, 32)
	ring := keyring(t, 1, 0x9c)
	l, err := eventlog.Open(ctx, cfg, ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	del := NewDeliveries(l, nil)
	host := NewHost(l, del, nil)
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	secrets := map[string][]byte{"root key": root}
	ins := map[events.InstallationID]*Installation{}
	for i, id := range []events.InstallationID{"alice", "bob", "carol"} {
		raw := bytes.Repeat([]byte{0xd0 + byte(i)}, 32)
		k, err := projections.RawKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		in, err := CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		ins[id] = in
		secrets[string(id)+" read-model key"] = raw
		secrets[string(id)+" signature key"] = in.sig.Bytes()
		// The wrong key, and another installation's read model.
		wrong, _ := projections.RawKey(bytes.Repeat([]byte{0xe0 + byte(i)}, 32))
		secrets[string(id)+" wrong key"] = bytes.Repeat([]byte{0xe0 + byte(i)}, 32)
		_, err = OpenInstallation(ctx, l, id+"-x", filepath.Join(dir, string(id)+".db"), wrong, nil)
		note(err)
	}
	alice, bob, carol := ins["alice"], ins["bob"], ins["carol"]
	psk := []byte("PSK-secret-of-the-service-day!!!")
	secrets["external PSK"] = psk
	note(alice.RegisterExternalPSK(ctx, []byte("psk-1"), psk))
	note(alice.RegisterExternalPSK(ctx, []byte("psk-1"), psk))
	note(bob.RegisterExternalPSK(ctx, []byte("psk-1"), psk))
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	kpb, err := bob.PublishKeyPackage(ctx, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	co, err := alice.AddMembers(ctx, g.GroupID, kpb.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	_, err = del.FanOut(ctx, co.Added, "mls", co.Welcome, time.Time{}, "w")
	note(err)
	_, err = carol.Receive(ctx, co.Welcome)
	note(err)
	for i := range 3 {
		text := []byte(fmt.Sprintf("PLAINTEXT-%d-of-the-service-day", i))
		secrets[fmt.Sprintf("plaintext %d", i)] = text
		res := host.Send(ctx, []SendRequest{{Installation: alice, GroupID: g.GroupID, Content: text}})
		note(res[0].Err)
		if res[0].Output != nil {
			_, err = del.FanOut(ctx, res[0].Output.Recipients, "mls", res[0].Output.Message, time.Time{}, fmt.Sprintf("m%d", i))
			note(err)
		}
	}
	for _, r := range host.Deliver(ctx, "mls", []*Installation{bob}, 0) {
		note(r.Err)
		for _, d := range r.Delivered {
			note(d.Err)
		}
	}
	// Failures: a message delivered twice, tampered, to a non-member.
	ms, err := alice.OwnMessages(ctx, g.GroupID, 0, 0)
	note(err)
	for _, m := range ms {
		_, err = bob.Receive(ctx, m.Message)
		note(err)
		_, err = carol.Receive(ctx, m.Message)
		note(err)
		bad := bytes.Clone(m.Message)
		bad[len(bad)-3] ^= 1
		_, err = bob.Receive(ctx, bad)
		note(err)
	}
	co, err = alice.CommitPreSharedKeys(ctx, g.GroupID, ExternalPSK([]byte("psk-1")))
	note(err)
	if co != nil {
		_, err = bob.Receive(ctx, co.Commit)
		note(err)
	}
	_, err = alice.CommitPreSharedKeys(ctx, g.GroupID, ExternalPSK([]byte("none")))
	note(err)
	note(alice.RetireExternalPSK(ctx, []byte("psk-1")))
	_, err = alice.Retain(ctx, replay.RetentionPolicy{}, nil)
	note(err)
	note(bob.CheckEpochAuthenticator(ctx, g.GroupID, 0, []byte("forged-authenticator")))
	_, err = replay.VerifyMLS(ctx, l, "alice")
	note(err)

	out := logged.String()
	if out == "" {
		t.Fatal("nothing logged at Debug")
	}
	for _, err := range errs {
		out += "\n" + err.Error() + fmt.Sprintf("\n%+v\n%#v", err, err)
	}
	t.Logf("%d bytes logged, %d errors", len(logged.String()), len(errs))
	for name, s := range secrets {
		if how := redacttest.Leak(out, s); how != "" {
			t.Errorf("the %s shows (%s) in the logs or errors", name, how)
		}
	}
}
