package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// demoChannel is the delivery channel every demo installation reads: one
// channel per installation keeps Welcomes, commits and messages in order.
const demoChannel = "mls"

// world is the demo's backend: one log, the delivery queues, and the
// installations it acts for, each with its read model and key file.
type world struct {
	log   *eventlog.Log
	queue *engine.Deliveries
	dbDir string
	ids   []events.InstallationID
	inst  map[events.InstallationID]*engine.Installation
	keys  map[events.InstallationID]projections.Key
	rng   *rand.Rand
	stats demoStats
}

// demoStats counts what the demo did, for the summary.
type demoStats struct {
	Commits          int `json:"commits"`
	Welcomes         int `json:"welcomes"`
	Adds             int `json:"members_added"`
	Removes          int `json:"members_removed"`
	Updates          int `json:"path_updates"`
	MessagesSent     int `json:"messages_sent"`
	MessagesReceived int `json:"messages_received"`
	Enqueued         int `json:"deliveries_enqueued"`
	Acked            int `json:"deliveries_acked"`
	Expired          int `json:"deliveries_expired"`
}

func (w *world) dbPath(id events.InstallationID) string {
	return filepath.Join(w.dbDir, string(id)+".db")
}

func (w *world) keyPath(id events.InstallationID) string {
	return filepath.Join(w.dbDir, string(id)+".key")
}

// createInstallations creates n installations, each with a fresh raw
// read-model key written next to its database.
func (w *world) createInstallations(ctx context.Context, run string, n int, opts *engine.InstallationOptions) error {
	if err := os.MkdirAll(w.dbDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", w.dbDir, err)
	}
	for i := range n {
		id := events.InstallationID(fmt.Sprintf("demo-%s-%04d", run, i))
		key, err := writeDBKeyFile(w.keyPath(id))
		if err != nil {
			return err
		}
		in, err := engine.CreateInstallation(ctx, w.log, id, w.dbPath(id), key, opts)
		if err != nil {
			return fmt.Errorf("creating installation %s: %w", id, err)
		}
		w.ids = append(w.ids, id)
		w.inst[id], w.keys[id] = in, key
	}
	return nil
}

func (w *world) close() {
	for _, in := range w.inst {
		_ = in.Close()
	}
}

// demoGroup is one group as the demo tracks it.
type demoGroup struct {
	id      []byte
	members []events.InstallationID // current members, creator first
}

// createGroup has creator create a group and add the others with one
// commit, from key packages they publish for it (as a directory would
// hand them out).
func (w *world) createGroup(ctx context.Context, creator events.InstallationID, others []events.InstallationID) (*demoGroup, error) {
	created, err := w.inst[creator].CreateGroup(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: create group: %w", creator, err)
	}
	gid := created.GroupID
	g := &demoGroup{id: gid, members: []events.InstallationID{creator}}
	return g, w.add(ctx, g, creator, others)
}

func (w *world) add(ctx context.Context, g *demoGroup, by events.InstallationID, newcomers []events.InstallationID) error {
	kps := make([][]byte, 0, len(newcomers))
	for _, id := range newcomers {
		published, err := w.inst[id].PublishKeyPackage(ctx, "directory", true)
		if err != nil {
			return fmt.Errorf("%s: publish key package: %w", id, err)
		}
		kp := published.KeyPackage
		kps = append(kps, kp)
	}
	co, err := w.inst[by].AddMembers(ctx, g.id, kps...)
	if err != nil {
		return fmt.Errorf("%s: add %d members: %w", by, len(newcomers), err)
	}
	g.members = append(g.members, newcomers...)
	w.stats.Adds += len(newcomers)
	return w.deliverCommit(ctx, co)
}

func (w *world) remove(ctx context.Context, g *demoGroup, by, who events.InstallationID) error {
	co, err := w.inst[by].RemoveMembers(ctx, g.id, who)
	if err != nil {
		return fmt.Errorf("%s: remove %s: %w", by, who, err)
	}
	g.members = slices.DeleteFunc(g.members, func(id events.InstallationID) bool { return id == who })
	w.stats.Removes++
	return w.deliverCommit(ctx, co)
}

func (w *world) update(ctx context.Context, g *demoGroup, by events.InstallationID) error {
	co, err := w.inst[by].Update(ctx, g.id)
	if err != nil {
		return fmt.Errorf("%s: update: %w", by, err)
	}
	w.stats.Updates++
	return w.deliverCommit(ctx, co)
}

// send has from send one application message to the group and delivers
// it. An ephemeral message expires before anyone fetches it (a typing
// notice nobody was online for): the queues expire it instead.
func (w *world) send(ctx context.Context, g *demoGroup, from events.InstallationID, text string, ephemeral bool) error {
	out, err := w.inst[from].Send(ctx, g.id, []byte(text), nil)
	if err != nil {
		return fmt.Errorf("%s: send: %w", from, err)
	}
	w.stats.MessagesSent++
	if out.Update != nil { // a path update Send made first goes out first
		w.stats.Updates++
		if err := w.deliverCommit(ctx, out.Update); err != nil {
			return err
		}
	}
	var expires time.Time
	if ephemeral {
		expires = time.Now()
	}
	if _, err := w.queue.FanOut(ctx, out.Recipients, demoChannel, out.Message, expires, fmt.Sprintf("msg-%x", out.MessageID)); err != nil {
		return fmt.Errorf("fan out message of %s: %w", from, err)
	}
	w.stats.Enqueued += len(out.Recipients)
	if ephemeral {
		for _, id := range out.Recipients {
			seqs, err := w.queue.Expire(ctx, id, demoChannel)
			if err != nil {
				return fmt.Errorf("expire deliveries of %s: %w", id, err)
			}
			w.stats.Expired += len(seqs)
		}
	}
	return w.drain(ctx, out.Recipients)
}

func (w *world) deliverCommit(ctx context.Context, co *engine.CommitOutput) error {
	w.stats.Commits++
	if _, err := w.queue.FanOut(ctx, co.Recipients, demoChannel, co.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch)); err != nil {
		return fmt.Errorf("fan out commit to epoch %d: %w", co.Epoch, err)
	}
	w.stats.Enqueued += len(co.Recipients)
	if co.Welcome != nil {
		w.stats.Welcomes++
		if _, err := w.queue.FanOut(ctx, co.Added, demoChannel, co.Welcome, time.Time{}, fmt.Sprintf("welcome-%x-%d", co.GroupID, co.Epoch)); err != nil {
			return fmt.Errorf("fan out welcome to epoch %d: %w", co.Epoch, err)
		}
		w.stats.Enqueued += len(co.Added)
	}
	return w.drain(ctx, append(slices.Clone(co.Recipients), co.Added...))
}

// drain hands each recipient its queued messages in order and acknowledges
// them once processed (and so recorded in its read model).
func (w *world) drain(ctx context.Context, recipients []events.InstallationID) error {
	for _, id := range recipients {
		ds, err := w.queue.Fetch(ctx, id, demoChannel, 0)
		if err != nil {
			return fmt.Errorf("fetch for %s: %w", id, err)
		}
		if len(ds) == 0 {
			continue
		}
		for _, d := range ds {
			got, err := w.inst[id].Receive(ctx, d.Payload)
			if err != nil {
				return fmt.Errorf("%s: delivery %d: %w", id, d.Seq, err)
			}
			if got.Kind == "application" {
				w.stats.MessagesReceived++
			}
		}
		if err := w.queue.Acknowledge(ctx, id, demoChannel, ds[len(ds)-1].Seq); err != nil {
			return fmt.Errorf("acknowledge for %s: %w", id, err)
		}
		w.stats.Acked += len(ds)
	}
	return nil
}

// pick returns k distinct installations chosen at random.
func (w *world) pick(k int) []events.InstallationID {
	ids := slices.Clone(w.ids)
	w.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids[:k]
}

// rekey rebuilds id's read model under a fresh key, writes the new key
// file, proves the old key is refused, and reopens the installation.
func (w *world) rekey(ctx context.Context, id events.InstallationID) (*replay.RebuildResult, error) {
	path := w.dbPath(id)
	if err := w.inst[id].Close(); err != nil {
		return nil, err
	}
	delete(w.inst, id)
	oldKey := w.keys[id]
	// The new key goes to a side file before the swap and over the old
	// key file after it: whenever a crash hits, one of the two files
	// opens the database.
	newKeyPath := w.keyPath(id) + ".new"
	newKey, err := writeDBKeyFile(newKeyPath)
	if err != nil {
		return nil, err
	}
	res, err := replay.Rekey(ctx, w.log, id, path, oldKey, newKey, nil)
	if err != nil {
		return nil, fmt.Errorf("rekey %s: %w", id, err)
	}
	if err := os.Rename(newKeyPath, w.keyPath(id)); err != nil {
		return nil, fmt.Errorf("installing new key file for %s: %w", id, err)
	}
	if db, err := projections.Open(path, oldKey, nil); err == nil {
		db.Close()
		return nil, fmt.Errorf("rekey %s: the old key still opens %s", id, path)
	} else if !errors.Is(err, projections.ErrWrongKey) {
		return nil, fmt.Errorf("rekey %s: opening with the old key: %w, want a wrong-key error", id, err)
	}
	w.keys[id] = newKey
	in, err := engine.OpenInstallation(ctx, w.log, id, path, newKey, nil)
	if err != nil {
		return nil, fmt.Errorf("reopening %s under its new key: %w", id, err)
	}
	w.inst[id] = in
	return res, nil
}
