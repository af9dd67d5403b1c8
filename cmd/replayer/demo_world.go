package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
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
	// foreign are the clients of the mixed group (the first one created)
	// that run the bare mls package, not the engine; mixed is that group.
	foreign map[events.InstallationID]*demoForeign
	mixed   *demoGroup
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
	// The mixed group: foreign members, their encrypted commits, an
	// installation that left by its own proposal, a foreign member that
	// lost its state and rejoined by external commit.
	ForeignMembers   int `json:"foreign_members"`
	EncryptedCommits int `json:"foreign_encrypted_commits"`
	Proposals        int `json:"proposals"`
	Leaves           int `json:"leaves"`
	ExternalRejoins  int `json:"external_rejoins"`
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
	// foreign are its members that are not engine installations (the
	// mixed group's).
	foreign []events.InstallationID
}

// createGroup has creator create a group and add the others with one
// commit, from key packages they publish for it (as a directory would
// hand them out). The first group is the mixed group (mix).
func (w *world) createGroup(ctx context.Context, creator events.InstallationID, others []events.InstallationID) (*demoGroup, error) {
	created, err := w.inst[creator].CreateGroup(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: create group: %w", creator, err)
	}
	gid := created.GroupID
	g := &demoGroup{id: gid, members: []events.InstallationID{creator}}
	if err := w.add(ctx, g, creator, others); err != nil {
		return nil, err
	}
	if w.mixed == nil {
		w.mixed = g
		if err := w.mix(ctx, g); err != nil {
			return nil, fmt.Errorf("mixed group: %w", err)
		}
	}
	return g, nil
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
	recipients, err := w.toForeign(out.Recipients, out.Message)
	if err != nil {
		return err
	}
	if _, err := w.queue.FanOut(ctx, recipients, demoChannel, out.Message, expires, fmt.Sprintf("msg-%x", out.MessageID)); err != nil {
		return fmt.Errorf("fan out message of %s: %w", from, err)
	}
	w.stats.Enqueued += len(recipients)
	if ephemeral {
		for _, id := range recipients {
			seqs, err := w.queue.Expire(ctx, id, demoChannel)
			if err != nil {
				return fmt.Errorf("expire deliveries of %s: %w", id, err)
			}
			w.stats.Expired += len(seqs)
		}
	}
	return w.drain(ctx, recipients)
}

func (w *world) deliverCommit(ctx context.Context, co *engine.CommitOutput) error {
	w.stats.Commits++
	recipients, err := w.toForeign(co.Recipients, co.Commit)
	if err != nil {
		return err
	}
	if _, err := w.queue.FanOut(ctx, recipients, demoChannel, co.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch)); err != nil {
		return fmt.Errorf("fan out commit to epoch %d: %w", co.Epoch, err)
	}
	w.stats.Enqueued += len(recipients)
	var added []events.InstallationID
	if co.Welcome != nil {
		w.stats.Welcomes++
		if added, err = w.toForeign(co.Added, co.Welcome); err != nil {
			return err
		}
		if _, err := w.queue.FanOut(ctx, added, demoChannel, co.Welcome, time.Time{}, fmt.Sprintf("welcome-%x-%d", co.GroupID, co.Epoch)); err != nil {
			return fmt.Errorf("fan out welcome to epoch %d: %w", co.Epoch, err)
		}
		w.stats.Enqueued += len(added)
	}
	return w.drain(ctx, append(recipients, added...))
}

// toForeign hands wire to the foreign members among ids at once (their
// messages travel outside the demo's queues, which hold the
// installations' deliveries only) and returns the installations among
// ids.
func (w *world) toForeign(ids []events.InstallationID, wire []byte) ([]events.InstallationID, error) {
	var out []events.InstallationID
	for _, id := range ids {
		f := w.foreign[id]
		if f == nil {
			out = append(out, id)
			continue
		}
		if err := f.receive(wire); err != nil {
			return nil, fmt.Errorf("%s (foreign): %w", id, err)
		}
	}
	return out, nil
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

// demoForeign is a member of the mixed group that runs the bare mls
// package (another RFC 9420 client, as far as the engine installations
// can tell): its state lives in memory only, like an app's that can lose
// its database.
type demoForeign struct {
	id      events.InstallationID
	cs      *ciphersuite.CipherSuite
	sig     *ciphersuite.SignaturePrivateKey
	kp      *mls.KeyPackage
	secrets *mls.KeyPackageSecrets
	g       *mls.Group
	// encrypt: it sends its proposals and commits as PrivateMessage.
	encrypt bool
}

func newDemoForeign(id events.InstallationID, encrypt bool) (*demoForeign, error) {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(engine.DefaultCiphersuite))
	if err != nil {
		return nil, err
	}
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		return nil, err
	}
	return &demoForeign{id: id, cs: cs, sig: sig, encrypt: encrypt}, nil
}

// keyPackage makes the key package the mixed group adds f by.
func (f *demoForeign) keyPackage() ([]byte, error) {
	kp, sec, err := mls.NewKeyPackage(f.cs.ID(), mls.NewBasicCredential([]byte(f.id)), f.sig, nil)
	if err != nil {
		return nil, err
	}
	f.kp, f.secrets = kp, sec
	return kp.Marshal()
}

// receive processes a delivered Welcome, proposal, commit or message.
func (f *demoForeign) receive(wire []byte) error {
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		return err
	}
	if m.Welcome != nil {
		g, err := mls.Join(&m, f.kp, f.secrets, &mls.JoinOptions{Options: mls.Options{EncryptHandshake: f.encrypt}})
		if err != nil {
			return err
		}
		f.g = g
		return nil
	}
	if f.g == nil {
		return nil // not in the group (any more)
	}
	process := f.g.Process
	if mls.IsExternalCommit(&m) {
		process = f.g.ProcessExternalCommit
	}
	ng, rec, err := process(&m)
	if err != nil {
		return err
	}
	f.g = ng
	if rec.Removed {
		f.g = nil
	}
	return nil
}

// leaf returns the leaf of member id in f's group.
func (f *demoForeign) leaf(id events.InstallationID) (mls.LeafIndex, bool) {
	var out mls.LeafIndex
	found := false
	f.g.Tree().Leaves(func(l mls.LeafIndex, ln *mls.LeafNode) {
		if ln != nil && string(ln.Credential.Identity) == string(id) {
			out, found = l, true
		}
	})
	return out, found
}

// mix makes g the mixed group: two foreign clients join (one sends its
// handshakes encrypted, one as PublicMessage), the encrypting one commits
// an update, the other sends a message; an installation leaves by its
// own Remove proposal, which a foreign member commits; the public one
// loses its state (an app's lost database) and rejoins by an external
// commit that removes its old leaf, from a GroupInfo the creator
// publishes; the creator commits an update (encrypted: the engine's
// default). The engine installations record all of it; the demo's
// verification re-derives it.
func (w *world) mix(ctx context.Context, g *demoGroup) error {
	if w.foreign == nil {
		w.foreign = map[events.InstallationID]*demoForeign{}
	}
	creator := g.members[0]
	prefix := strings.TrimSuffix(string(creator), "-0000")
	fx, err := newDemoForeign(events.InstallationID(prefix+"-foreign-x"), true)
	if err != nil {
		return err
	}
	fy, err := newDemoForeign(events.InstallationID(prefix+"-foreign-y"), false)
	if err != nil {
		return err
	}
	var kps [][]byte
	for _, f := range []*demoForeign{fx, fy} {
		kp, err := f.keyPackage()
		if err != nil {
			return err
		}
		w.foreign[f.id] = f
		g.foreign = append(g.foreign, f.id)
		kps = append(kps, kp)
	}
	co, err := w.inst[creator].AddMembers(ctx, g.id, kps...)
	if err != nil {
		return fmt.Errorf("%s: add the foreign members: %w", creator, err)
	}
	w.stats.ForeignMembers += 2
	if err := w.deliverCommit(ctx, co); err != nil {
		return err
	}
	// fx's update, encrypted.
	ng, res, err := fx.g.WithHandshakeEncryption(true).Commit(mls.CommitOptions{ForcePath: true})
	if err != nil {
		return fmt.Errorf("%s: commit: %w", fx.id, err)
	}
	fx.g = ng
	w.stats.EncryptedCommits++
	if err := w.foreignSends(ctx, g, fx.id, res.Commit, fmt.Sprintf("commit-%x-%d", g.id, ng.Epoch())); err != nil {
		return err
	}
	// fy's message.
	ng, msg, err := fy.g.SealApplication([]byte("hello from a foreign client"), nil)
	if err != nil {
		return err
	}
	fy.g = ng
	if err := w.foreignSends(ctx, g, fy.id, msg, fmt.Sprintf("foreign-msg-%x-%d", g.id, ng.Epoch())); err != nil {
		return err
	}
	// The newest installation leaves, fx commits its proposal.
	if len(g.members) > 1 {
		leaver := g.members[len(g.members)-1]
		po, err := w.inst[leaver].Leave(ctx, g.id)
		if err != nil {
			return fmt.Errorf("%s: leave: %w", leaver, err)
		}
		w.stats.Proposals++
		if err := w.fanOut(ctx, g, leaver, po.Proposal, fmt.Sprintf("proposal-%x", po.MessageID)); err != nil {
			return err
		}
		ng, res, err := fx.g.WithHandshakeEncryption(true).Commit(mls.CommitOptions{ForcePath: true})
		if err != nil {
			return fmt.Errorf("%s: commit the departure of %s: %w", fx.id, leaver, err)
		}
		fx.g = ng
		w.stats.EncryptedCommits++
		if err := w.foreignSends(ctx, g, fx.id, res.Commit, fmt.Sprintf("commit-%x-%d", g.id, ng.Epoch())); err != nil {
			return err
		}
		if member, err := w.inst[leaver].DB().IsMember(ctx, g.id, []byte(leaver)); err != nil || member {
			return fmt.Errorf("%s: still a member after leaving (%v)", leaver, err)
		}
		g.members = g.members[:len(g.members)-1]
		w.stats.Leaves++
	}
	// fy loses its state and rejoins by external commit.
	gio, err := w.inst[creator].GroupInfo(ctx, g.id, true)
	if err != nil {
		return fmt.Errorf("%s: group info: %w", creator, err)
	}
	var gm mls.MLSMessage
	if err := gm.Unmarshal(gio.GroupInfo); err != nil {
		return err
	}
	old, ok := fy.leaf(fy.id)
	if !ok {
		return fmt.Errorf("%s is not in the group", fy.id)
	}
	fy.g = nil // lost
	ng, commit, err := mls.JoinExternal(gm.GroupInfo, mls.NewBasicCredential([]byte(fy.id)), fy.sig,
		&mls.ExternalJoinOptions{Resync: true, RemoveLeaf: old})
	if err != nil {
		return fmt.Errorf("%s: rejoin by external commit: %w", fy.id, err)
	}
	fy.g = ng
	w.stats.ExternalRejoins++
	if err := w.foreignSends(ctx, g, fy.id, commit, fmt.Sprintf("external-%x-%d", g.id, ng.Epoch())); err != nil {
		return err
	}
	return w.update(ctx, g, creator)
}

// foreignSends delivers a message of foreign member from to the group's
// other members: the installations through their queues, the other
// foreign members at once.
func (w *world) foreignSends(ctx context.Context, g *demoGroup, from events.InstallationID, m *mls.MLSMessage, key string) error {
	wire, err := m.Marshal()
	if err != nil {
		return err
	}
	return w.fanOut(ctx, g, from, wire, key)
}

// fanOut has every member of g but from process wire: the installations
// through their queues, the foreign members at once.
func (w *world) fanOut(ctx context.Context, g *demoGroup, from events.InstallationID, wire []byte, key string) error {
	var all []events.InstallationID
	for _, id := range append(slices.Clone(g.members), g.foreign...) {
		if id != from {
			all = append(all, id)
		}
	}
	to, err := w.toForeign(all, wire)
	if err != nil {
		return err
	}
	if _, err := w.queue.FanOut(ctx, to, demoChannel, wire, time.Time{}, key); err != nil {
		return fmt.Errorf("fan out a message of %s: %w", from, err)
	}
	w.stats.Enqueued += len(to)
	return w.drain(ctx, to)
}
