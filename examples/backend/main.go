// Command backend is a small service that links engine the way a backend
// would: it starts an embedded event log, creates three installations with
// their SQLCipher read models, runs real MLS through them (a group, adds,
// a removal, application messages) with every message going through the
// delivery queues, then verifies each installation's MLS history,
// rebuilds one read model from the log and, as a restarted service
// would, fans its own commits out again (a crash may have kept them from
// the queues).
//
// Run it with `go run ./examples/backend` (or `-dir DIR` to keep the data).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// channel is the delivery channel every installation reads from; one
// channel per installation keeps Welcomes, commits and messages in order.
const channel = "mls"

func main() {
	dir := flag.String("dir", "", "data directory (default: a temporary one, removed at exit)")
	messages := flag.Int("messages", 30, "application messages to exchange")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("backend: ")
	if err := run(context.Background(), *dir, *messages); err != nil {
		log.Fatal(err)
	}
}

// service is what the backend holds: the log, the delivery queues and the
// installations it acts for.
type service struct {
	log   *eventlog.Log
	queue *engine.Deliveries
	inst  map[events.InstallationID]*engine.Installation
}

func run(ctx context.Context, dir string, messages int) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "epochlog-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	// In production the root key comes from a KMS or secret store, never
	// from code; here a fresh one is enough.
	root, err := events.GenerateRootKey()
	if err != nil {
		return err
	}
	ring, err := events.NewKeyring(1, root)
	if err != nil {
		return err
	}
	l, err := eventlog.Open(ctx, eventlog.Config{DataDir: filepath.Join(dir, "nats"), EmbeddedInProcess: true}, ring)
	if err != nil {
		return err
	}
	defer l.Close()
	s := &service{log: l, queue: engine.NewDeliveries(l, nil), inst: map[events.InstallationID]*engine.Installation{}}

	names := []events.InstallationID{"alice-phone", "bob-laptop", "carol-tablet"}
	keys := map[events.InstallationID]projections.Key{}
	for _, id := range names {
		k, err := projections.GenerateRawKey()
		if err != nil {
			return err
		}
		keys[id] = k
		in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, nil)
		if err != nil {
			return err
		}
		defer in.Close()
		s.inst[id] = in
	}
	alice, bob, carol := names[0], names[1], names[2]

	// Bob and carol publish last-resort key packages; alice creates a
	// group and adds them with one commit.
	var kps [][]byte
	for _, id := range []events.InstallationID{bob, carol} {
		published, err := s.inst[id].PublishKeyPackage(ctx, "directory", true)
		if err != nil {
			return err
		}
		kps = append(kps, published.KeyPackage)
	}
	created, err := s.inst[alice].CreateGroup(ctx, nil)
	if err != nil {
		return err
	}
	gid := created.GroupID
	co, err := decided(ctx, s.inst[alice])(s.inst[alice].AddMembers(ctx, gid, kps...))
	if err != nil {
		return err
	}
	if err := s.deliverCommit(ctx, co); err != nil {
		return err
	}
	if err := s.drainAll(ctx); err != nil {
		return err
	}

	for i := 0; i < messages; i++ {
		from := names[i%len(names)]
		out, err := s.inst[from].Send(ctx, gid, []byte(fmt.Sprintf("message %d from %s", i, from)), nil)
		if err != nil {
			return err
		}
		if out.Update != nil { // a joiner's first message follows its path update
			if err := s.deliverCommit(ctx, out.Update); err != nil {
				return err
			}
		}
		if err := s.deliverMessage(ctx, out); err != nil {
			return err
		}
		if err := s.drainAll(ctx); err != nil {
			return err
		}
	}

	co, err = decided(ctx, s.inst[alice])(s.inst[alice].RemoveMembers(ctx, gid, carol))
	if err != nil {
		return err
	}
	if err := s.deliverCommit(ctx, co); err != nil {
		return err
	}
	if err := s.drainAll(ctx); err != nil {
		return err
	}

	for _, id := range names {
		rep, err := replay.VerifyMLS(ctx, l, id)
		if err != nil {
			return fmt.Errorf("verify %s: %w", id, err)
		}
		page, err := s.inst[id].DB().Messages(ctx, gid, projections.Page{Limit: 1000})
		if err != nil {
			return err
		}
		fmt.Printf("%-13s %3d events, %d MLS transitions re-derived, %d own commits checked, %d messages in its read model\n",
			id, rep.Events, rep.Rederived, rep.Own, len(page.Messages))
	}

	// Rebuild bob's read model from the log (close it first: the rebuild
	// swaps the file) and reopen it.
	bobPath := s.inst[bob].DB().Path()
	if err := s.inst[bob].Close(); err != nil {
		return err
	}
	res, err := replay.Rebuild(ctx, l, bob, bobPath, keys[bob], nil)
	if err != nil {
		return err
	}
	if s.inst[bob], err = engine.OpenInstallation(ctx, l, bob, bobPath, keys[bob], nil); err != nil {
		return err
	}
	fmt.Printf("rebuilt %s from %d events, checkpoint %d\n", bob, res.Replayed, res.Checkpoint)
	// What a service does as it opens an installation (here bob's own
	// commits and messages were all queued before: nothing is queued
	// again).
	commits, msgs, err := s.redeliverOwnOutputs(ctx, s.inst[bob])
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d recorded own commits and %d own messages fanned out again at startup\n", bob, commits, msgs)
	return nil
}

// inFlight bounds the own messages of a group fanned out again at
// startup: more than this service ever sends to a group at once, so
// every output a crash can have lost is among them.
const inFlight = 64

// redeliverOwnOutputs fans out again, group by group, the outputs of the
// installation's own commits (engine.Installation.OwnCommits) and of its
// newest own messages (OwnMessages), with the idempotency keys of
// deliverCommit and deliverMessage, in the live order: an epoch's
// messages after the commit that started it. A process that crashed
// between recording a commit or a message and queuing its output
// delivers it now, and one queued before is not queued twice. A commit
// whose key another commit of its epoch took (the group took that one:
// this installation forked, Receive will say engine.ErrForked) is
// skipped, with the own commits and messages after it.
func (s *service) redeliverOwnOutputs(ctx context.Context, in *engine.Installation) (commits, msgs int, err error) {
	groups, err := in.DB().Groups(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, g := range groups {
		cos, err := in.OwnCommits(ctx, g.ID, 0)
		if err != nil {
			return commits, msgs, err
		}
		outs, err := in.OwnMessages(ctx, g.ID, 0, inFlight)
		if err != nil {
			return commits, msgs, err
		}
	group:
		for len(cos) > 0 || len(outs) > 0 {
			if len(cos) > 0 && (len(outs) == 0 || cos[0].Epoch <= outs[0].Epoch) {
				if err := s.deliverCommit(ctx, cos[0]); errors.Is(err, engine.ErrIdempotencyKeyReused) {
					break group
				} else if err != nil {
					return commits, msgs, err
				}
				cos, commits = cos[1:], commits+1
				continue
			}
			if err := s.deliverMessage(ctx, outs[0]); err != nil {
				return commits, msgs, err
			}
			outs, msgs = outs[1:], msgs+1
		}
	}
	return commits, msgs, nil
}

// decided passes on a commit's output, and settles one whose append went
// unanswered (engine.OutcomeUnknownError): its output is delivered only
// if the commit turns out recorded, never otherwise.
func decided(ctx context.Context, in *engine.Installation) func(*engine.CommitOutput, error) (*engine.CommitOutput, error) {
	return func(co *engine.CommitOutput, err error) (*engine.CommitOutput, error) {
		var u *engine.OutcomeUnknownError
		if !errors.As(err, &u) || u.Commit == nil {
			return co, err
		}
		recorded, derr := in.Decide(ctx, u)
		switch {
		case derr != nil:
			return nil, fmt.Errorf("%w (deciding it: %w)", err, derr) // still unknown: decide again later
		case !recorded:
			return nil, fmt.Errorf("commit not recorded, the group moved on: %w", err)
		}
		return u.Commit, nil
	}
}

// noExpiry queues messages that never expire.
var noExpiry time.Time

func (s *service) deliverCommit(ctx context.Context, co *engine.CommitOutput) error {
	if _, err := s.queue.FanOut(ctx, co.Recipients, channel, co.Commit, noExpiry, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch)); err != nil {
		return err
	}
	if co.Welcome == nil {
		return nil
	}
	_, err := s.queue.FanOut(ctx, co.Added, channel, co.Welcome, noExpiry, fmt.Sprintf("welcome-%x-%d", co.GroupID, co.Epoch))
	return err
}

// deliverMessage queues an application message under the key of its
// message id: queued again (after a restart), it is not queued twice.
func (s *service) deliverMessage(ctx context.Context, out *engine.SendOutput) error {
	_, err := s.queue.FanOut(ctx, out.Recipients, channel, out.Message, noExpiry, fmt.Sprintf("msg-%x", out.MessageID))
	return err
}

// drainAll hands every installation its queued messages in order and
// acknowledges each once it is processed (and so recorded).
func (s *service) drainAll(ctx context.Context) error {
	for id, in := range s.inst {
		ds, err := s.queue.Fetch(ctx, id, channel, 0)
		if err != nil {
			return err
		}
		for _, d := range ds {
			// A redelivery (processed before, but this service stopped
			// before acknowledging it) is refused as a duplicate, a
			// commit of an epoch the group left as stale, junk or a
			// tampered copy as not decoding or not authentic, and so
			// on: none records anything or can succeed later
			// (engine.Settled), so acknowledge them like the rest.
			if _, err := in.Receive(ctx, d.Payload); err != nil && !engine.Settled(err) {
				return fmt.Errorf("%s: delivery %d: %w", id, d.Seq, err)
			}
			if err := s.queue.Acknowledge(ctx, id, channel, d.Seq); err != nil {
				return err
			}
		}
	}
	return nil
}
