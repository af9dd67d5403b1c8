package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// A service opens the log on the embedded JetStream server, creates two
// installations, makes a group, and moves a message between them through
// the delivery queues.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "epochlog-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// The root key seals every event; keep it in a secret store.
	root, err := events.NewRootKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		panic(err)
	}
	keys, err := events.NewKeyring(1, root)
	if err != nil {
		panic(err)
	}
	cfg := eventlog.DefaultConfig(filepath.Join(dir, "nats"))
	cfg.EmbeddedInProcess = true // no listening socket: this process only
	log, err := eventlog.Open(ctx, cfg, keys)
	if err != nil {
		panic(err)
	}
	defer log.Close()

	open := func(id events.InstallationID) *engine.Installation {
		dbKey, err := projections.GenerateRawKey() // keep it beside the root key
		if err != nil {
			panic(err)
		}
		in, err := engine.CreateInstallation(ctx, log, id, filepath.Join(dir, string(id)+".db"), dbKey, nil)
		if err != nil {
			panic(err)
		}
		return in
	}
	alice, bob := open("alice-phone"), open("bob-laptop")
	defer alice.Close()
	defer bob.Close()
	queues := engine.NewDeliveries(log, time.Now)

	// Bob publishes a key package; Alice creates a group and adds him.
	kp, err := bob.PublishKeyPackage(ctx, "directory", true)
	if err != nil {
		panic(err)
	}
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		panic(err)
	}
	co, err := alice.AddMembers(ctx, g.GroupID, kp.KeyPackage)
	if err != nil {
		panic(err)
	}
	if _, err := queues.FanOut(ctx, co.Added, "mls", co.Welcome, time.Time{}, "welcome-1"); err != nil {
		panic(err)
	}

	// Alice sends; the queue carries the message to Bob.
	sent, err := alice.Send(ctx, g.GroupID, []byte("hello, bob"), nil)
	if err != nil {
		panic(err)
	}
	if _, err := queues.FanOut(ctx, sent.Recipients, "mls", sent.Message, time.Time{}, "msg-1"); err != nil {
		panic(err)
	}

	// Bob fetches what is pending, processes it in order, acknowledges.
	pending, err := queues.Fetch(ctx, bob.ID(), "mls", 10)
	if err != nil {
		panic(err)
	}
	for _, d := range pending {
		rec, err := bob.Receive(ctx, d.Payload)
		if err != nil {
			panic(err)
		}
		fmt.Printf("bob received: %s, epoch %d, %q\n", rec.Kind, rec.Epoch, string(rec.Content.Bytes())) // Content is an events.Secret: it prints redacted; Bytes reads it
		if err := queues.Acknowledge(ctx, bob.ID(), "mls", d.Seq); err != nil {
			panic(err)
		}
	}
	members, err := bob.Members(ctx, g.GroupID)
	if err != nil {
		panic(err)
	}
	fmt.Println("members:", members)
	// Output:
	// bob received: welcome, epoch 1, ""
	// bob received: application, epoch 1, "hello, bob"
	// members: [alice-phone bob-laptop]
}
