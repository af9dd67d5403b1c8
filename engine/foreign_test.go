package engine

// Foreign peers: members of a group that run the bare mls package, not
// the engine (another implementation, as far as the engine can tell), and
// a world that routes every message of a group between them and engine
// installations, checking after each step that all agree.

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/replay"
)

// foreign is one client of one group built from the mls package.
type foreign struct {
	t   testing.TB
	id  events.InstallationID
	cs  *ciphersuite.CipherSuite
	sig *ciphersuite.SignaturePrivateKey
	// caps are the capabilities of its key packages (nil: defaults).
	caps *mls.Capabilities
	// kps are its key packages not used yet, by ref.
	kps map[string]*foreignKP
	g   *mls.Group
	// encrypt: it sends its proposals and commits as PrivateMessage.
	encrypt bool
	// psks are the external PSKs it holds.
	psks map[string][]byte
}

type foreignKP struct {
	kp      *mls.KeyPackage
	secrets *mls.KeyPackageSecrets
}

func newForeign(t testing.TB, id events.InstallationID, encrypt bool) *foreign {
	t.Helper()
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(DefaultCiphersuite))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		t.Fatal(err)
	}
	return &foreign{t: t, id: id, cs: cs, sig: sig, kps: map[string]*foreignKP{}, encrypt: encrypt, psks: map[string][]byte{}}
}

// keyPackage makes a key package for an engine installation to add it by.
func (f *foreign) keyPackage() []byte {
	f.t.Helper()
	var opts *mls.KeyPackageOptions
	if f.caps != nil {
		c := *f.caps
		opts = &mls.KeyPackageOptions{Capabilities: &c}
	}
	kp, sec, err := mls.NewKeyPackage(f.cs.ID(), mls.NewBasicCredential([]byte(f.id)), f.sig, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	ref, _ := kp.Ref()
	f.kps[string(ref)] = &foreignKP{kp, sec}
	raw, err := kp.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

func (f *foreign) opts() mls.Options { return mls.Options{EncryptHandshake: f.encrypt} }

// withPSKs is g holding f's external PSKs.
func (f *foreign) withPSKs(g *mls.Group) *mls.Group {
	for id, s := range f.psks {
		g = g.WithExternalPSK([]byte(id), s)
	}
	return g
}

// join enters the group from a Welcome.
func (f *foreign) join(welcome []byte) {
	f.t.Helper()
	var m mls.MLSMessage
	if err := m.Unmarshal(welcome); err != nil {
		f.t.Fatal(err)
	}
	var psks []mls.ExternalPSK
	for id, s := range f.psks {
		psks = append(psks, mls.ExternalPSK{ID: []byte(id), Secret: ciphersuite.NewSecret(s)})
	}
	for ref, k := range f.kps {
		g, err := mls.Join(&m, k.kp, k.secrets, &mls.JoinOptions{Options: f.opts(), ExternalPSKs: psks})
		if err == nil {
			f.g = g
			delete(f.kps, ref)
			return
		}
	}
	f.t.Fatalf("foreign %s: no key package joins from the Welcome", f.id)
}

// process handles a proposal, commit or application message of the group.
func (f *foreign) process(wire []byte) *mls.Received {
	f.t.Helper()
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		f.t.Fatal(err)
	}
	process := f.withPSKs(f.g).Process
	if mls.IsExternalCommit(&m) {
		process = f.withPSKs(f.g).ProcessExternalCommit
	}
	ng, rec, err := process(&m)
	if err != nil {
		f.t.Fatalf("foreign %s at epoch %d processes a message: %v", f.id, f.g.Epoch(), err)
	}
	f.g = ng
	if rec.Removed {
		f.g = nil
	}
	return rec
}

// joinExternal joins by external commit from a GroupInfo (an MLSMessage;
// tree when not inline); a resync removes f's old leaf. It returns the
// commit.
func (f *foreign) joinExternal(groupInfo, tree []byte, resync bool) []byte {
	f.t.Helper()
	var m mls.MLSMessage
	if err := m.Unmarshal(groupInfo); err != nil || m.GroupInfo == nil {
		f.t.Fatalf("foreign %s: group info: %v", f.id, err)
	}
	opts := &mls.ExternalJoinOptions{Options: f.opts(), Capabilities: f.caps}
	if tree != nil {
		t, err := mls.UnmarshalRatchetTree(tree)
		if err != nil {
			f.t.Fatal(err)
		}
		opts.RatchetTree = &t
	}
	if resync {
		opts.Resync, opts.RemoveLeaf = true, f.leaf(f.id)
	}
	g, commit, err := mls.JoinExternal(m.GroupInfo, mls.NewBasicCredential([]byte(f.id)), f.sig, opts)
	if err != nil {
		f.t.Fatalf("foreign %s joins by external commit: %v", f.id, err)
	}
	f.g = g
	wire, err := commit.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	return wire
}

// groupInfo is f's GroupInfo for external joins (an MLSMessage), with the
// tree inline or returned beside it.
func (f *foreign) groupInfo(inline bool) (gi, tree []byte) {
	f.t.Helper()
	g, err := f.g.ExternalGroupInfo(inline)
	if err != nil {
		f.t.Fatal(err)
	}
	if gi, err = (&mls.MLSMessage{Version: mls.ProtocolMLS10, WireFormat: mls.WireFormatGroupInfo, GroupInfo: g}).Marshal(); err != nil {
		f.t.Fatal(err)
	}
	if !inline {
		if tree, err = f.g.Tree().Marshal(); err != nil {
			f.t.Fatal(err)
		}
	}
	return gi, tree
}

// commit makes a commit of f's with opts; it returns the commit and the
// Welcome (nil without adds).
func (f *foreign) commit(opts mls.CommitOptions) (commit, welcome []byte) {
	f.t.Helper()
	ng, res, err := f.withPSKs(f.g.WithHandshakeEncryption(f.encrypt)).Commit(opts)
	if err != nil {
		f.t.Fatalf("foreign %s commits at epoch %d: %v", f.id, f.g.Epoch(), err)
	}
	f.g = ng
	if commit, err = res.Commit.Marshal(); err != nil {
		f.t.Fatal(err)
	}
	if res.Welcome != nil {
		if welcome, err = res.Welcome.Marshal(); err != nil {
			f.t.Fatal(err)
		}
	}
	return commit, welcome
}

// propose makes a proposal of f's with build.
func (f *foreign) propose(build func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error)) []byte {
	f.t.Helper()
	ng, m, err := build(f.g.WithHandshakeEncryption(f.encrypt))
	if err != nil {
		f.t.Fatalf("foreign %s proposes: %v", f.id, err)
	}
	f.g = ng
	wire, err := m.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	return wire
}

// leaf returns the leaf of member id in f's group.
func (f *foreign) leaf(id events.InstallationID) mls.LeafIndex {
	f.t.Helper()
	for l, got := range membership.Identities(f.g) {
		if string(got) == string(id) {
			return l
		}
	}
	f.t.Fatalf("foreign %s: %s is not a member", f.id, id)
	return 0
}

// world is one group with engine installations and foreign members.
type world struct {
	t   testing.TB
	b   *backend
	gid []byte
	// foreign are the foreign clients (member or not).
	foreign map[events.InstallationID]*foreign
	// members are the current members, engine and foreign alike.
	members map[events.InstallationID]bool
	// steps counts the checked steps, for messages.
	steps int
	// stale are members whose own state is not the group's (forked, or
	// behind): check leaves them out, and deliver does not reach them.
	stale map[events.InstallationID]bool
}

func newWorld(t testing.TB, b *backend) *world {
	return &world{t: t, b: b, foreign: map[events.InstallationID]*foreign{}, members: map[events.InstallationID]bool{}, stale: map[events.InstallationID]bool{}}
}

func (w *world) addForeign(id events.InstallationID, encrypt bool) *foreign {
	f := newForeign(w.t, id, encrypt)
	w.foreign[id] = f
	return f
}

// keyPackage returns a key package of id, engine or foreign.
func (w *world) keyPackage(id events.InstallationID) []byte {
	if f, ok := w.foreign[id]; ok {
		return f.keyPackage()
	}
	return w.b.keyPackage(id)
}

// receive hands wire to member id; it returns what an engine installation
// made of it (nil for a foreign member).
func (w *world) receive(id events.InstallationID, wire []byte) *Received {
	w.t.Helper()
	if f, ok := w.foreign[id]; ok {
		var m mls.MLSMessage
		if err := m.Unmarshal(wire); err != nil {
			w.t.Fatal(err)
		}
		if m.Welcome != nil {
			f.join(wire)
		} else {
			f.process(wire)
		}
		return nil
	}
	r, err := w.b.insts[id].Receive(context.Background(), wire)
	if err != nil {
		w.t.Fatalf("%s receives: %v", id, err)
	}
	if r.ProjectionErr != nil {
		w.t.Fatalf("%s receives: read model lags: %v", id, r.ProjectionErr)
	}
	return r
}

// deliver hands wire to every current member but from.
func (w *world) deliver(from events.InstallationID, wire []byte) map[events.InstallationID]*Received {
	w.t.Helper()
	out := map[events.InstallationID]*Received{}
	for _, id := range w.memberList() {
		if id != from && !w.stale[id] {
			out[id] = w.receive(id, wire)
		}
	}
	return out
}

// committed delivers a commit of from's, and its Welcome to the members it
// added, then records the new membership.
func (w *world) committed(from events.InstallationID, commit, welcome []byte) {
	w.t.Helper()
	before := w.memberList()
	for _, id := range before {
		if id != from && !w.stale[id] {
			w.receive(id, commit)
		}
	}
	now := w.identities(from)
	if welcome != nil {
		for id := range now {
			if !slices.Contains(before, id) {
				w.receive(id, welcome)
			}
		}
	}
	w.members = now
	w.check(fmt.Sprintf("commit of %s", from))
}

// engineCommitted delivers an engine installation's commit output.
func (w *world) engineCommitted(from events.InstallationID, co *CommitOutput, err error) *CommitOutput {
	w.t.Helper()
	if err != nil {
		w.t.Fatalf("%s commits: %v", from, err)
	}
	if co.ProjectionErr != nil {
		w.t.Fatalf("%s commits: %v", from, co.ProjectionErr)
	}
	w.committed(from, co.Commit, co.Welcome)
	return co
}

// update has engine installation id commit a path update, delivered.
func (w *world) update(id events.InstallationID) *CommitOutput {
	w.t.Helper()
	co, err := w.b.insts[id].Update(context.Background(), w.gid)
	return w.engineCommitted(id, co, err)
}

// identities returns the members of the group as member id sees it.
func (w *world) identities(id events.InstallationID) map[events.InstallationID]bool {
	w.t.Helper()
	out := map[events.InstallationID]bool{}
	if f, ok := w.foreign[id]; ok {
		for _, m := range membership.Identities(f.g) {
			out[events.InstallationID(m)] = true
		}
		return out
	}
	ms, err := w.b.insts[id].Members(context.Background(), w.gid)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, m := range ms {
		out[m] = true
	}
	return out
}

func (w *world) memberList() []events.InstallationID {
	var out []events.InstallationID
	for id := range w.members {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// state is member id's epoch and epoch authenticator.
func (w *world) state(id events.InstallationID) (uint64, []byte) {
	w.t.Helper()
	if f, ok := w.foreign[id]; ok {
		return f.g.Epoch(), f.g.EpochAuthenticator()
	}
	e, a, err := w.b.insts[id].EpochAuthenticator(context.Background(), w.gid)
	if err != nil {
		w.t.Fatalf("%s: epoch authenticator: %v", id, err)
	}
	return e, a
}

// check requires every member to agree on the epoch, the epoch
// authenticator and the member list.
func (w *world) check(step string) {
	w.t.Helper()
	w.steps++
	var epoch uint64
	var auth []byte
	var first events.InstallationID
	want := strings.Join(idList(w.members), ",")
	i := -1
	for _, id := range w.memberList() {
		if w.stale[id] {
			continue
		}
		i++
		e, a := w.state(id)
		if got := strings.Join(idList(w.identities(id)), ","); got != want {
			w.t.Fatalf("step %d (%s): %s sees members %s, want %s", w.steps, step, id, got, want)
		}
		if i == 0 {
			epoch, auth, first = e, a, id
			continue
		}
		if e != epoch || !bytes.Equal(a, auth) {
			w.t.Fatalf("step %d (%s): %s at epoch %d, %s at epoch %d; authenticators equal: %v", w.steps, step, first, epoch, id, e, bytes.Equal(a, auth))
		}
	}
}

func idList(m map[events.InstallationID]bool) []string {
	var out []string
	for id := range m {
		out = append(out, string(id))
	}
	sort.Strings(out)
	return out
}

// engines lists the engine installations among ids.
func (w *world) engines() []events.InstallationID {
	var out []events.InstallationID
	for id := range w.b.insts {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// verifyAll re-derives every engine installation's MLS history and
// rebuilds its read model from the log, which must equal the live one.
func (w *world) verifyAll() {
	w.t.Helper()
	for _, id := range w.engines() {
		w.b.checkRebuild(id)
	}
}

// rebuildAndReopen closes id, rebuilds its read model in place from the
// log (replay.Rebuild, swapped in) and opens it again.
func (w *world) rebuildAndReopen(id events.InstallationID) {
	w.t.Helper()
	ctx := context.Background()
	if err := w.b.insts[id].Close(); err != nil {
		w.t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, w.b.log, id, w.b.dbPath(id), w.b.keys[id], nil); err != nil {
		w.t.Fatalf("rebuild %s: %v", id, err)
	}
	in, err := OpenInstallation(ctx, w.b.log, id, w.b.dbPath(id), w.b.keys[id], w.b.opts())
	if err != nil {
		w.t.Fatal(err)
	}
	w.b.insts[id] = in
}

// wireFormatOf returns the wire format of an MLSMessage.
func wireFormatOf(t testing.TB, wire []byte) mls.WireFormat {
	t.Helper()
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		t.Fatal(err)
	}
	return m.WireFormat
}
