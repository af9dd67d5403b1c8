package mls

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// DefaultMaxPastEpochs is how many past epochs' keys a group keeps, by
// default, to decrypt late application messages.
const DefaultMaxPastEpochs = 3

// Options configures a Group. The zero value gives the defaults.
type Options struct {
	// MaxPastEpochs is how many past epochs' secret trees are kept for late
	// application messages: 0 means DefaultMaxPastEpochs, a negative value
	// keeps none.
	MaxPastEpochs int
	// MaxForwardRatchets bounds how far ahead of a sender's ratchet a
	// message's generation may be (0 means 1000).
	MaxForwardRatchets uint32
	// EncryptHandshake sends proposals and commits as PrivateMessage
	// instead of PublicMessage.
	EncryptHandshake bool
	// Padding is the number of zero bytes added to every PrivateMessage
	// content.
	Padding uint16
}

func (o Options) pastEpochs() int {
	switch {
	case o.MaxPastEpochs == 0:
		return DefaultMaxPastEpochs
	case o.MaxPastEpochs < 0:
		return 0
	}
	return o.MaxPastEpochs
}

// cachedProposal is a proposal received or sent in the current epoch,
// committable by reference.
type cachedProposal struct {
	ref      []byte
	sender   Sender
	proposal *Proposal
	// kpChecked: an Add whose key package this commit's creator has just
	// validated (an inline Add of its own), which applyProposals need
	// not check again. Never set on a proposal received or cached.
	kpChecked bool
}

// pastEpoch keeps what a late application message of an earlier epoch
// needs: the keys, the group context signed over and the epoch's leaves
// (the senders' signature keys and credentials, and the leaf count the
// secret tree is built on). The parent nodes of its tree serve no late
// message and are not kept.
type pastEpoch struct {
	ctx              GroupContext
	leaves           epochLeaves
	senderDataSecret keyschedule.Secret
	resumptionPSK    keyschedule.Secret
	keys             *epochKeys
}

// epochLeaves are the leaves of one epoch's ratchet tree, indexed by
// LeafIndex (nil: blank), as many as the tree's leaf count. The leaf
// nodes are shared with the trees and must not be modified.
type epochLeaves []*LeafNode

// leavesOf returns the leaves of t.
func leavesOf(t RatchetTree) epochLeaves {
	out := make(epochLeaves, t.LeafCount())
	t.Leaves(func(l LeafIndex, leaf *LeafNode) { out[l] = leaf })
	return out
}

// LeafCount returns the number of leaves, blank or not.
func (e epochLeaves) LeafCount() treemath.LeafCount { return treemath.LeafCount(len(e)) }

// Leaf returns the leaf node at index l, or nil if it is blank or out of
// range.
func (e epochLeaves) Leaf(l LeafIndex) *LeafNode {
	if uint64(l) >= uint64(len(e)) {
		return nil
	}
	return e[l]
}

// leafSource is what opening a message needs of an epoch's tree: a
// RatchetTree for the current epoch, epochLeaves for a past one.
type leafSource interface {
	LeafCount() treemath.LeafCount
	Leaf(l LeafIndex) *LeafNode
}

// Group is one client's state of an MLS group in one epoch (RFC 9420). It
// is a value: every operation returns a new *Group together with the
// messages to send and leaves the receiver unchanged, so that each
// transition can be recorded and replayed. A Group is safe for concurrent
// reads. Its String, GoString and every fmt verb print only the group id,
// epoch and leaf, never secrets.
type Group struct {
	cs   *ciphersuite.CipherSuite
	opts Options

	ctx  GroupContext
	tree RatchetTree
	me   LeafIndex
	sig  *ciphersuite.SignaturePrivateKey
	keys *TreePrivateKeys

	// joinerSecret serves the Welcome of the commit that created this
	// epoch; it is not saved (a loaded Group has it zero), since the whole
	// epoch's message keys derive from it.
	joinerSecret keyschedule.Secret
	pskSecret    keyschedule.Secret
	secrets      keyschedule.EpochSecrets
	epochKeys    *epochKeys

	confirmationTag []byte
	interim         []byte

	proposals      []cachedProposal
	pendingUpdates map[string]*ciphersuite.HPKEPrivateKey // own Update proposals by ref
	psks           map[string]keyschedule.Secret          // external PSKs by psk_id
	past           []pastEpoch                            // newest first
	// reinit is the ReInit this epoch's commit carried: the group is
	// closed, its members move to the group the ReInit describes (RFC
	// 9420 §11.2). Saved with the state.
	reinit *ReInit
	// lent are resumption PSKs of other groups (a branch's or a
	// reinitialisation's predecessor) lent for the one operation that
	// starts a new group; never saved.
	lent []lentPSK
	// preds are the groups a joiner holds that a Welcome may name as
	// its predecessor (JoinOptions); only during Join.
	preds  *joinPredecessors
	random io.Reader
}

// String describes the group without secrets.
func (g Group) String() string {
	return fmt.Sprintf("mls.Group(%x, epoch %d, leaf %d of %d, suite %d)", g.ctx.GroupID, g.ctx.Epoch, g.me, g.tree.LeafCount(), g.ctx.CipherSuite)
}

// GoString is String.
func (g Group) GoString() string { return g.String() }

// Format prints String for every verb.
func (g Group) Format(f fmt.State, _ rune) { fmt.Fprint(f, g.String()) }

// clone returns a copy whose mutable parts (secret tree, caches) are
// private to it. The ratchet trees are shared, with their hash and
// encoding cache: trees are values, changed only as copies, and a tree's
// cache is only ever filled, under its lock, with values that do not
// depend on who fills it (see treeCache).
func (g *Group) clone() *Group {
	c := *g
	c.epochKeys = g.epochKeys.clone()
	c.proposals = slices.Clone(g.proposals)
	c.pendingUpdates = cloneMap(g.pendingUpdates)
	c.psks = cloneMap(g.psks)
	c.past = slices.Clone(g.past)
	return &c
}

func cloneMap[V any](m map[string]V) map[string]V {
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// GroupID returns the group's id.
func (g *Group) GroupID() []byte { return bytes.Clone(g.ctx.GroupID) }

// Epoch returns the current epoch.
func (g *Group) Epoch() uint64 { return g.ctx.Epoch }

// CipherSuite returns the group's suite.
func (g *Group) CipherSuite() ciphersuite.Suite { return g.ctx.CipherSuite }

// LeafIndex returns this client's leaf.
func (g *Group) LeafIndex() LeafIndex { return g.me }

// Tree returns the ratchet tree (a value; changing it does not change the
// group).
func (g *Group) Tree() RatchetTree { return g.tree }

// GroupContext returns a copy of the current group context.
func (g *Group) GroupContext() GroupContext {
	b, _ := g.ctx.Marshal()
	var c GroupContext
	_ = c.Unmarshal(b)
	return c
}

// Members returns the leaf indices of the current members.
func (g *Group) Members() []LeafIndex {
	var out []LeafIndex
	g.tree.Leaves(func(l LeafIndex, _ *LeafNode) { out = append(out, l) })
	return out
}

// EpochAuthenticator returns the epoch authenticator of the current epoch.
func (g *Group) EpochAuthenticator() []byte { return g.secrets.EpochAuthenticator.Bytes() }

// Export is the MLS-Exporter of the current epoch (RFC 9420 §8.5).
func (g *Group) Export(label string, context []byte, length int) ([]byte, error) {
	return g.secrets.Export(label, context, length)
}

// WithExternalPSK returns a copy of the group that holds the external PSK
// id, so that commits and Welcomes injecting it can be processed.
func (g *Group) WithExternalPSK(id, secret []byte) *Group {
	c := g.clone()
	c.psks[string(id)] = ciphersuite.NewSecret(secret)
	return c
}

// WithRandom returns a copy that draws randomness from r (crypto/rand when
// nil); for deterministic tests.
func (g *Group) WithRandom(r io.Reader) *Group {
	c := g.clone()
	c.random = r
	return c
}

func (g *Group) rand() io.Reader {
	if g.random == nil {
		return rand.Reader
	}
	return g.random
}

// NewGroup creates a one-member group in epoch 0 (RFC 9420 §11) with the
// creator's KeyPackage and its private keys. A nil groupID draws a random
// 16-byte id.
func NewGroup(groupID []byte, kp *KeyPackage, secrets *KeyPackageSecrets, opts *Options) (*Group, error) {
	cs, err := ciphersuite.Lookup(kp.CipherSuite)
	if err != nil {
		return nil, err
	}
	if err := kp.Validate(); err != nil {
		return nil, err
	}
	if err := secrets.matches(kp); err != nil {
		return nil, err
	}
	if groupID == nil {
		groupID = make([]byte, 16)
		if _, err := rand.Read(groupID); err != nil {
			return nil, err
		}
	}
	g := &Group{cs: cs, sig: secrets.SignatureKey, pendingUpdates: map[string]*ciphersuite.HPKEPrivateKey{}, psks: map[string]keyschedule.Secret{}}
	if opts != nil {
		g.opts = *opts
	}
	leaf := kp.LeafNode.Clone()
	g.tree = NewRatchetTree(leaf)
	g.keys = NewTreePrivateKeys(0, secrets.EncryptionKey)
	th, err := g.tree.TreeHash(cs)
	if err != nil {
		return nil, err
	}
	g.ctx = GroupContext{Version: ProtocolMLS10, CipherSuite: kp.CipherSuite, GroupID: bytes.Clone(groupID),
		TreeHash: th, ConfirmedTranscriptHash: []byte{}, Extensions: Extensions{}}
	initSecret := make([]byte, cs.Nh())
	if _, err := rand.Read(initSecret); err != nil {
		return nil, err
	}
	gcBytes, err := g.ctx.Marshal()
	if err != nil {
		return nil, err
	}
	joiner, err := keyschedule.JoinerSecret(cs, ciphersuite.NewSecret(initSecret), keyschedule.Secret{}, gcBytes)
	if err != nil {
		return nil, err
	}
	if err := g.enterEpoch(joiner, keyschedule.Secret{}, gcBytes); err != nil {
		return nil, err
	}
	if g.confirmationTag, err = g.secrets.ConfirmationTag(g.ctx.ConfirmedTranscriptHash); err != nil {
		return nil, err
	}
	if g.interim, err = interimTranscriptHash(cs, g.ctx.ConfirmedTranscriptHash, g.confirmationTag); err != nil {
		return nil, err
	}
	return g, nil
}

// enterEpoch derives the epoch secrets and the secret tree of g.ctx.
func (g *Group) enterEpoch(joiner, psk keyschedule.Secret, gcBytes []byte) error {
	secrets, err := keyschedule.FromJoinerSecret(g.cs, joiner, psk, gcBytes)
	if err != nil {
		return err
	}
	ek, err := newEpochKeys(g.cs, secrets.EncryptionSecret, g.tree.LeafCount(), g.opts.MaxForwardRatchets)
	if err != nil {
		return err
	}
	// The secret tree now holds what the encryption and epoch secrets could
	// give; keeping them would let anyone who reads this Group re-derive
	// message keys the tree has already deleted.
	secrets.EncryptionSecret, secrets.EpochSecret = keyschedule.Secret{}, keyschedule.Secret{}
	g.joinerSecret, g.pskSecret, g.secrets, g.epochKeys = joiner, psk, secrets, ek
	return nil
}

// retireEpoch moves the current epoch's keys to the past list.
func (g *Group) retireEpoch() {
	n := g.opts.pastEpochs()
	if n == 0 {
		g.past = nil
		return
	}
	pe := pastEpoch{ctx: g.ctx, leaves: leavesOf(g.tree), senderDataSecret: g.secrets.SenderDataSecret, resumptionPSK: g.secrets.ResumptionPSK, keys: g.epochKeys}
	g.past = append([]pastEpoch{pe}, g.past...)
	if len(g.past) > n {
		g.past = g.past[:n]
	}
}

// frame builds and signs content of this member for the current epoch.
func (g *Group) frame(ct ContentType, authData []byte, app []byte, p *Proposal, c *Commit) (*AuthenticatedContent, error) {
	ac, _, err := g.frameOf(ct, authData, app, p, c)
	return ac, err
}

// frameOf is frame that also returns the encoding of the content it
// signed, for the commit's transcript hash and membership tag.
func (g *Group) frameOf(ct ContentType, authData []byte, app []byte, p *Proposal, c *Commit) (*AuthenticatedContent, []byte, error) {
	wf := WireFormatPublicMessage
	if g.opts.EncryptHandshake || ct == ContentTypeApplication {
		wf = WireFormatPrivateMessage
	}
	if authData == nil {
		authData = []byte{}
	}
	ac := &AuthenticatedContent{WireFormat: wf, Content: FramedContent{
		GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: Sender{Type: SenderTypeMember, LeafIndex: g.me},
		AuthenticatedData: authData, ContentType: ct, ApplicationData: app, Proposal: p, Commit: c,
	}}
	content, err := encodeFramedContent(&ac.Content)
	if err != nil {
		return nil, nil, err
	}
	sig, err := signFramedContentOf(g.cs, g.sig, wf, ac.Content.Sender.Type, content, &g.ctx)
	if err != nil {
		return nil, nil, err
	}
	ac.Auth.Signature = sig
	return ac, content, nil
}

// protect wraps signed content in an MLSMessage with the current epoch's
// keys; it consumes a ratchet generation of g (which must be a clone).
func (g *Group) protect(ac *AuthenticatedContent) (*MLSMessage, error) {
	return g.protectOf(ac, nil)
}

// protectOf is protect with content, the encoding of ac.Content made
// already (nil: encoded if needed).
func (g *Group) protectOf(ac *AuthenticatedContent, content []byte) (*MLSMessage, error) {
	m := &MLSMessage{Version: ProtocolMLS10, WireFormat: ac.WireFormat}
	var err error
	if ac.WireFormat == WireFormatPublicMessage {
		m.PublicMessage, err = protectPublicOf(g.cs, ac, content, &g.ctx, g.secrets.MembershipKey)
	} else {
		m.PrivateMessage, err = protectPrivate(g.cs, g.epochKeys, g.secrets.SenderDataSecret, ac, int(g.opts.Padding), g.rand())
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// SealApplication encrypts data as a PrivateMessage of the current epoch.
// authData is sent in the clear but authenticated.
func (g *Group) SealApplication(data, authData []byte) (*Group, *MLSMessage, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	ac, err := g.frame(ContentTypeApplication, authData, bytes.Clone(data), nil, nil)
	if err != nil {
		return nil, nil, err
	}
	c := g.clone()
	m, err := c.protect(ac)
	if err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

// Received describes a message processed by [Group.Process].
type Received struct {
	ContentType ContentType
	// SenderType is who sent it: a member, a new member by external
	// commit (ProcessExternalCommit), or, for proposals only, an
	// external sender or a new member asking to be added.
	SenderType SenderType
	// Sender is the sender's leaf in the message's epoch (a member's).
	Sender LeafIndex
	// ExternalSenderIndex is the external sender's entry in the group's
	// external_senders extension (SenderType external).
	ExternalSenderIndex uint32
	// SenderCredential is the credential of that leaf in the message's
	// epoch, the one its signature was verified with. Name the sender by
	// it, not by looking the leaf up in the current tree: a late message
	// of a past epoch may come from a member whose leaf was reused since.
	SenderCredential Credential
	// Epoch is the epoch the message was sent in.
	Epoch uint64
	// Generation is the generation of the sender's ratchet a
	// PrivateMessage used (zero for a PublicMessage). A member that
	// reloads a state saved before it received the message passes it to
	// MarkReceived to move its ratchet on as processing the message did.
	Generation uint32
	// ApplicationData is set for application messages.
	ApplicationData []byte
	// AuthenticatedData is the sender's authenticated associated data.
	AuthenticatedData []byte
	// Proposal is set for proposals (now cached for a commit).
	Proposal *Proposal
	// Removed reports that a commit removed this client from the group.
	Removed bool
}

// OpenApplication decrypts an application PrivateMessage of the current
// epoch or of one of the retained past epochs.
func (g *Group) OpenApplication(m *MLSMessage) (*Group, []byte, error) {
	if m.WireFormat != WireFormatPrivateMessage || m.PrivateMessage == nil || m.PrivateMessage.ContentType != ContentTypeApplication {
		return nil, nil, fmt.Errorf("%w: not an application private message", ErrDecode)
	}
	ng, r, err := g.Process(m)
	if err != nil {
		return nil, nil, err
	}
	return ng, r.ApplicationData, nil
}

// MarkSent moves this member's application sending ratchet on by n
// generations, as sealing n messages (SealApplication) did, without
// sealing or signing them: a member reloading a state saved before it
// sent them uses none of their keys again.
func (g *Group) MarkSent(n int) (*Group, error) {
	if err := g.checkActive(); err != nil {
		return nil, err
	}
	c := g.clone()
	for range n {
		if _, err := c.epochKeys.Next(c.me, keyschedule.Application); err != nil {
			return nil, fmt.Errorf("group %x epoch %d: mark sent: %w", g.ctx.GroupID, g.ctx.Epoch, err)
		}
	}
	return c, nil
}

// ReceivedGeneration names a message a member received: the epoch it was
// sent in, its sender's leaf and the generation of the sender's
// application ratchet it used (Received.Generation).
type ReceivedGeneration struct {
	Epoch      uint64
	Sender     LeafIndex
	Generation uint32
}

// MarkReceived moves the application ratchets on as processing the
// messages ms names did, in their order: each one's key is taken and
// deleted, the generations it skipped are kept. A state saved before a
// member received some messages (an epoch's first, or one a proposal
// changed) is so brought back to where it was: no generation is accepted
// twice, and a sender's next message is within the ratchet's reach
// (maximum_forward_ratchets, RFC 9420 §9.4, counted from where the
// ratchet was, not from the saved state). A mark may be further ahead of
// the one before than the ratchet reaches (the messages between were
// deleted by retention): the ratchet steps there all the same, since
// the message was accepted. A message the state consumed already, or of
// an epoch it no longer holds, is passed over: the state holds no key of
// it. Any other failure (a leaf outside the epoch's tree) is returned
// and the group is not changed.
func (g *Group) MarkReceived(ms []ReceivedGeneration) (*Group, error) {
	c := g.clone()
	cloned := map[uint64]bool{}
	for _, m := range ms {
		keys := c.epochKeys
		if m.Epoch != g.ctx.Epoch {
			i := slices.IndexFunc(c.past, func(p pastEpoch) bool { return p.ctx.Epoch == m.Epoch })
			if i < 0 || m.Epoch > g.ctx.Epoch {
				continue
			}
			if !cloned[m.Epoch] {
				c.past[i].keys, cloned[m.Epoch] = c.past[i].keys.clone(), true
			}
			keys = c.past[i].keys
		}
		if err := keys.Consume(m.Sender, keyschedule.Application, m.Generation); err != nil && !errors.Is(err, ErrGenerationReused) {
			return nil, fmt.Errorf("group %x: mark generation %d of leaf %d in epoch %d received: %w", g.ctx.GroupID, m.Generation, m.Sender, m.Epoch, err)
		}
	}
	return c, nil
}

// ProcessCommit applies a commit of another member; the returned group is
// in the next epoch. Proposals it references must have been processed.
func (g *Group) ProcessCommit(m *MLSMessage) (*Group, *Received, error) {
	if !isContent(m, ContentTypeCommit) {
		return nil, nil, fmt.Errorf("%w: not a commit", ErrDecode)
	}
	return g.Process(m)
}

func isContent(m *MLSMessage, ct ContentType) bool {
	switch {
	case m.PublicMessage != nil:
		return m.PublicMessage.Content.ContentType == ct
	case m.PrivateMessage != nil:
		return m.PrivateMessage.ContentType == ct
	}
	return false
}

// Process handles a PublicMessage or PrivateMessage of the group: an
// application message is decrypted, a proposal (of a member, an external
// sender or a new member) is cached for a later commit, and a commit
// (an external one too: see ProcessExternalCommit) moves the group to its
// next epoch.
func (g *Group) Process(m *MLSMessage) (*Group, *Received, error) {
	if IsExternalCommit(m) {
		return g.ProcessExternalCommit(m)
	}
	var groupID []byte
	var epoch uint64
	var ct ContentType
	switch {
	case m.WireFormat == WireFormatPublicMessage && m.PublicMessage != nil:
		groupID, epoch, ct = m.PublicMessage.Content.GroupID, m.PublicMessage.Content.Epoch, m.PublicMessage.Content.ContentType
	case m.WireFormat == WireFormatPrivateMessage && m.PrivateMessage != nil:
		groupID, epoch, ct = m.PrivateMessage.GroupID, m.PrivateMessage.Epoch, m.PrivateMessage.ContentType
	default:
		return nil, nil, fmt.Errorf("%w: wire format %d is not a group message", ErrDecode, m.WireFormat)
	}
	if !bytes.Equal(groupID, g.ctx.GroupID) {
		return nil, nil, fmt.Errorf("%w: message for group %x in group %x", ErrWrongGroup, groupID, g.ctx.GroupID)
	}
	if ct != ContentTypeApplication && g.keys == nil {
		return nil, nil, fmt.Errorf("%w: leaf %d was removed from group %x; it processes no more handshake messages", ErrNotMember, g.me, g.ctx.GroupID)
	}
	if ct != ContentTypeApplication && g.reinit != nil {
		return nil, nil, fmt.Errorf("%w: group %x epoch %d processes no more handshake messages", ErrReInitialized, g.ctx.GroupID, g.ctx.Epoch)
	}
	c := g.clone()
	// Locate the epoch's keys: the current one, or a retained past one for
	// application messages.
	var tree leafSource = c.tree
	ctx, sds, keys := &c.ctx, c.secrets.SenderDataSecret, c.epochKeys
	if epoch != g.ctx.Epoch {
		if epoch > g.ctx.Epoch || ct != ContentTypeApplication {
			return nil, nil, fmt.Errorf("%w: %s for epoch %d, group %x is in epoch %d", ErrWrongEpoch, contentName(ct), epoch, g.ctx.GroupID, g.ctx.Epoch)
		}
		i := slices.IndexFunc(c.past, func(p pastEpoch) bool { return p.ctx.Epoch == epoch })
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: epoch %d of group %x (current %d, %d past epochs kept)", ErrEpochRetired, epoch, g.ctx.GroupID, g.ctx.Epoch, len(g.past))
		}
		c.past[i].keys = c.past[i].keys.clone()
		ctx, tree, sds, keys = &c.past[i].ctx, c.past[i].leaves, c.past[i].senderDataSecret, c.past[i].keys
	}
	// The content's encoding is made once: the membership tag, the
	// signature and a commit's transcript hash all cover it.
	var ac *AuthenticatedContent
	var content []byte
	var gen uint32
	var err error
	if m.PublicMessage != nil {
		if m.PublicMessage.Content.Sender.Type != SenderTypeMember {
			return c.processNonMember(m.PublicMessage)
		}
		if content, err = encodeFramedContent(&m.PublicMessage.Content); err == nil {
			ac, err = unprotectPublicOf(c.cs, m.PublicMessage, content, ctx, c.secrets.MembershipKey)
		}
	} else if ac, gen, err = unprotectPrivate(c.cs, keys, sds, m.PrivateMessage, uint32(tree.LeafCount())); err == nil {
		content, err = encodeFramedContent(&ac.Content)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("group %x epoch %d: %w", groupID, epoch, err)
	}
	sender := ac.Content.Sender.LeafIndex
	leaf := tree.Leaf(sender)
	if leaf == nil {
		return nil, nil, fmt.Errorf("%w: leaf %d is blank in epoch %d", ErrNotMember, sender, epoch)
	}
	if err := verifyFramedContentOf(c.cs, leaf.SignatureKey, ac, content, ctx); err != nil {
		return nil, nil, err
	}
	r := &Received{ContentType: ct, SenderType: SenderTypeMember, Sender: sender, SenderCredential: cloneCredential(leaf.Credential), Epoch: epoch, Generation: gen, AuthenticatedData: ac.Content.AuthenticatedData}
	switch ct {
	case ContentTypeApplication:
		r.ApplicationData = ac.Content.ApplicationData
		return c, r, nil
	case ContentTypeProposal:
		if sender == g.me {
			return nil, nil, fmt.Errorf("%w: own proposal echoed back", ErrInvalidProposal)
		}
		if err := c.checkProposal(sender, ac.Content.Proposal); err != nil {
			return nil, nil, err
		}
		if err := c.cacheProposal(ac); err != nil {
			return nil, nil, err
		}
		r.Proposal = ac.Content.Proposal
		return c, r, nil
	}
	if sender == g.me {
		return nil, nil, fmt.Errorf("%w: own commit echoed back; the state returned by Commit is already in the next epoch", ErrInvalidProposal)
	}
	ng, removed, err := c.applyCommit(ac, content)
	if err != nil {
		return nil, nil, err
	}
	r.Removed = removed
	return ng, r, nil
}

// cloneCredential copies c, so a Received does not alias the tree.
func cloneCredential(c Credential) Credential {
	c.Identity = bytes.Clone(c.Identity)
	certs := make([][]byte, len(c.Certificates))
	for i, cert := range c.Certificates {
		certs[i] = bytes.Clone(cert)
	}
	if c.Certificates != nil {
		c.Certificates = certs
	}
	return c
}
