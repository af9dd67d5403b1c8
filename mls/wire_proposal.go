package mls

import (
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// PSKType distinguishes external from resumption PSKs.
type PSKType uint8

// PSK types (RFC 9420 §8.4).
const (
	PSKTypeExternal   PSKType = 1
	PSKTypeResumption PSKType = 2
)

// ResumptionPSKUsage says why a resumption PSK is injected.
type ResumptionPSKUsage uint8

// Resumption PSK usages (RFC 9420 §8.4).
const (
	ResumptionPSKUsageApplication ResumptionPSKUsage = 1
	ResumptionPSKUsageReInit      ResumptionPSKUsage = 2
	ResumptionPSKUsageBranch      ResumptionPSKUsage = 3
)

// PreSharedKeyID names a PSK (RFC 9420 §8.4). PSKID is used for external
// PSKs; Usage, PSKGroupID and PSKEpoch for resumption PSKs.
type PreSharedKeyID struct {
	Type       PSKType
	PSKID      []byte
	Usage      ResumptionPSKUsage
	PSKGroupID []byte
	PSKEpoch   uint64
	PSKNonce   []byte
}

func (p *PreSharedKeyID) marshal(w *codec.Writer) {
	w.Uint8(uint8(p.Type))
	switch p.Type {
	case PSKTypeExternal:
		w.OpaqueV(p.PSKID)
	case PSKTypeResumption:
		w.Uint8(uint8(p.Usage))
		w.OpaqueV(p.PSKGroupID)
		w.Uint64(p.PSKEpoch)
	default:
		w.Fail(fmt.Errorf("%w: psk type %d", codec.ErrEncode, p.Type))
	}
	w.OpaqueV(p.PSKNonce)
}

func (p *PreSharedKeyID) unmarshal(r *codec.Reader) error {
	t, err := r.Uint8()
	if err != nil {
		return err
	}
	p.Type = PSKType(t)
	switch p.Type {
	case PSKTypeExternal:
		p.PSKID, _ = r.OpaqueV()
	case PSKTypeResumption:
		u, _ := r.Uint8()
		p.Usage = ResumptionPSKUsage(u)
		if r.Err() == nil && (p.Usage < ResumptionPSKUsageApplication || p.Usage > ResumptionPSKUsageBranch) {
			return r.Failf("resumption psk usage %d is not defined", u)
		}
		p.PSKGroupID, _ = r.OpaqueV()
		p.PSKEpoch, _ = r.Uint64()
	default:
		return r.Failf("psk type %d is not defined", t)
	}
	p.PSKNonce, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the PreSharedKeyID.
func (p *PreSharedKeyID) Marshal() ([]byte, error) { return marshalWire(p) }

// Unmarshal decodes a PreSharedKeyID strictly.
func (p *PreSharedKeyID) Unmarshal(b []byte) error { return unmarshalWire(b, p) }

// Add proposes adding the client of a KeyPackage.
type Add struct{ KeyPackage KeyPackage }

func (a *Add) marshal(w *codec.Writer)         { a.KeyPackage.marshal(w) }
func (a *Add) unmarshal(r *codec.Reader) error { return a.KeyPackage.unmarshal(r) }

// Marshal encodes the Add body.
func (a *Add) Marshal() ([]byte, error) { return marshalWire(a) }

// Unmarshal decodes an Add body strictly.
func (a *Add) Unmarshal(b []byte) error { return unmarshalWire(b, a) }

// Update proposes replacing the sender's leaf.
type Update struct{ LeafNode LeafNode }

func (u *Update) marshal(w *codec.Writer)         { u.LeafNode.marshal(w) }
func (u *Update) unmarshal(r *codec.Reader) error { return u.LeafNode.unmarshal(r) }

// Marshal encodes the Update body.
func (u *Update) Marshal() ([]byte, error) { return marshalWire(u) }

// Unmarshal decodes an Update body strictly.
func (u *Update) Unmarshal(b []byte) error { return unmarshalWire(b, u) }

// Remove proposes removing the member at leaf Removed.
type Remove struct{ Removed LeafIndex }

func (rm *Remove) marshal(w *codec.Writer) { w.Uint32(uint32(rm.Removed)) }
func (rm *Remove) unmarshal(r *codec.Reader) error {
	v, err := r.Uint32()
	rm.Removed = LeafIndex(v)
	return err
}

// Marshal encodes the Remove body.
func (rm *Remove) Marshal() ([]byte, error) { return marshalWire(rm) }

// Unmarshal decodes a Remove body strictly.
func (rm *Remove) Unmarshal(b []byte) error { return unmarshalWire(b, rm) }

// PreSharedKey proposes injecting a PSK.
type PreSharedKey struct{ PSK PreSharedKeyID }

func (p *PreSharedKey) marshal(w *codec.Writer)         { p.PSK.marshal(w) }
func (p *PreSharedKey) unmarshal(r *codec.Reader) error { return p.PSK.unmarshal(r) }

// Marshal encodes the PreSharedKey body.
func (p *PreSharedKey) Marshal() ([]byte, error) { return marshalWire(p) }

// Unmarshal decodes a PreSharedKey body strictly.
func (p *PreSharedKey) Unmarshal(b []byte) error { return unmarshalWire(b, p) }

// ReInit proposes reinitializing the group with new parameters.
type ReInit struct {
	GroupID     []byte
	Version     ProtocolVersion
	CipherSuite ciphersuite.Suite
	Extensions  Extensions
}

func (ri *ReInit) marshal(w *codec.Writer) {
	w.OpaqueV(ri.GroupID)
	w.Uint16(uint16(ri.Version))
	w.Uint16(uint16(ri.CipherSuite))
	ri.Extensions.marshal(w)
}

func (ri *ReInit) unmarshal(r *codec.Reader) error {
	ri.GroupID, _ = r.OpaqueV()
	v, _ := r.Uint16()
	ri.Version = ProtocolVersion(v)
	ri.CipherSuite = readSuite(r)
	ri.Extensions = readExtensions(r)
	return r.Err()
}

// Marshal encodes the ReInit body.
func (ri *ReInit) Marshal() ([]byte, error) { return marshalWire(ri) }

// Unmarshal decodes a ReInit body strictly.
func (ri *ReInit) Unmarshal(b []byte) error { return unmarshalWire(b, ri) }

// ExternalInit carries the KEM output of an external commit.
type ExternalInit struct{ KEMOutput []byte }

func (e *ExternalInit) marshal(w *codec.Writer) { w.OpaqueV(e.KEMOutput) }
func (e *ExternalInit) unmarshal(r *codec.Reader) error {
	e.KEMOutput, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the ExternalInit body.
func (e *ExternalInit) Marshal() ([]byte, error) { return marshalWire(e) }

// Unmarshal decodes an ExternalInit body strictly.
func (e *ExternalInit) Unmarshal(b []byte) error { return unmarshalWire(b, e) }

// GroupContextExtensions proposes replacing the group context extensions.
type GroupContextExtensions struct{ Extensions Extensions }

func (g *GroupContextExtensions) marshal(w *codec.Writer) { g.Extensions.marshal(w) }
func (g *GroupContextExtensions) unmarshal(r *codec.Reader) error {
	g.Extensions = readExtensions(r)
	return r.Err()
}

// Marshal encodes the GroupContextExtensions body.
func (g *GroupContextExtensions) Marshal() ([]byte, error) { return marshalWire(g) }

// Unmarshal decodes a GroupContextExtensions body strictly.
func (g *GroupContextExtensions) Unmarshal(b []byte) error { return unmarshalWire(b, g) }

// Proposal is a proposed change to the group (RFC 9420 §12.1). Exactly the
// body matching Type is set.
type Proposal struct {
	Type                   ProposalType
	Add                    *Add
	Update                 *Update
	Remove                 *Remove
	PreSharedKey           *PreSharedKey
	ReInit                 *ReInit
	ExternalInit           *ExternalInit
	GroupContextExtensions *GroupContextExtensions
}

// body returns the structure selected by Type, allocating it when alloc is
// set (for decoding); nil means an unknown type or a missing body.
func (p *Proposal) body(alloc bool) wireStruct {
	switch p.Type {
	case ProposalTypeAdd:
		if alloc {
			p.Add = new(Add)
		}
		if p.Add != nil {
			return p.Add
		}
	case ProposalTypeUpdate:
		if alloc {
			p.Update = new(Update)
		}
		if p.Update != nil {
			return p.Update
		}
	case ProposalTypeRemove:
		if alloc {
			p.Remove = new(Remove)
		}
		if p.Remove != nil {
			return p.Remove
		}
	case ProposalTypePSK:
		if alloc {
			p.PreSharedKey = new(PreSharedKey)
		}
		if p.PreSharedKey != nil {
			return p.PreSharedKey
		}
	case ProposalTypeReInit:
		if alloc {
			p.ReInit = new(ReInit)
		}
		if p.ReInit != nil {
			return p.ReInit
		}
	case ProposalTypeExternalInit:
		if alloc {
			p.ExternalInit = new(ExternalInit)
		}
		if p.ExternalInit != nil {
			return p.ExternalInit
		}
	case ProposalTypeGroupContextExtensions:
		if alloc {
			p.GroupContextExtensions = new(GroupContextExtensions)
		}
		if p.GroupContextExtensions != nil {
			return p.GroupContextExtensions
		}
	}
	return nil
}

func (p *Proposal) marshal(w *codec.Writer) {
	w.Uint16(uint16(p.Type))
	b := p.body(false)
	if b == nil {
		w.Fail(fmt.Errorf("%w: proposal type %d without a matching body", codec.ErrEncode, p.Type))
		return
	}
	b.marshal(w)
}

func (p *Proposal) unmarshal(r *codec.Reader) error {
	t, err := r.Uint16()
	if err != nil {
		return err
	}
	*p = Proposal{Type: ProposalType(t)}
	b := p.body(true)
	if b == nil {
		return r.Failf("proposal type %d is not supported", t)
	}
	return b.unmarshal(r)
}

// Marshal encodes the Proposal.
func (p *Proposal) Marshal() ([]byte, error) { return marshalWire(p) }

// Unmarshal decodes a Proposal strictly.
func (p *Proposal) Unmarshal(b []byte) error { return unmarshalWire(b, p) }

// ProposalOrRefType says whether a Commit carries a proposal inline or by
// reference.
type ProposalOrRefType uint8

// ProposalOrRef types.
const (
	ProposalOrRefProposal  ProposalOrRefType = 1
	ProposalOrRefReference ProposalOrRefType = 2
)

// ProposalOrRef is one entry of a Commit's proposal list.
type ProposalOrRef struct {
	Type      ProposalOrRefType
	Proposal  *Proposal
	Reference []byte
}

func (p *ProposalOrRef) marshal(w *codec.Writer) {
	w.Uint8(uint8(p.Type))
	switch {
	case p.Type == ProposalOrRefProposal && p.Proposal != nil:
		p.Proposal.marshal(w)
	case p.Type == ProposalOrRefReference:
		w.OpaqueV(p.Reference)
	default:
		w.Fail(fmt.Errorf("%w: proposal-or-ref type %d without a body", codec.ErrEncode, p.Type))
	}
}

func (p *ProposalOrRef) unmarshal(r *codec.Reader) error {
	t, err := r.Uint8()
	if err != nil {
		return err
	}
	*p = ProposalOrRef{Type: ProposalOrRefType(t)}
	switch p.Type {
	case ProposalOrRefProposal:
		p.Proposal = new(Proposal)
		return p.Proposal.unmarshal(r)
	case ProposalOrRefReference:
		p.Reference, _ = r.OpaqueV()
		return r.Err()
	default:
		return r.Failf("proposal-or-ref type %d is not defined", t)
	}
}

// HPKECiphertext is an HPKE encapsulation and ciphertext.
type HPKECiphertext struct {
	KEMOutput  []byte
	Ciphertext []byte
}

func (c *HPKECiphertext) marshal(w *codec.Writer) {
	w.OpaqueV(c.KEMOutput)
	w.OpaqueV(c.Ciphertext)
}

func (c *HPKECiphertext) unmarshal(r *codec.Reader) error {
	c.KEMOutput, _ = r.OpaqueV()
	c.Ciphertext, _ = r.OpaqueV()
	return r.Err()
}

// UpdatePathNode carries the new public key of one filtered-direct-path
// node and the path secret encrypted to each node of its copath resolution.
type UpdatePathNode struct {
	EncryptionKey       HPKEPublicKey
	EncryptedPathSecret []HPKECiphertext
}

func (n *UpdatePathNode) marshal(w *codec.Writer) {
	w.OpaqueV(n.EncryptionKey)
	writeStructList(w, n.EncryptedPathSecret)
}

func (n *UpdatePathNode) unmarshal(r *codec.Reader) error {
	n.EncryptionKey, _ = r.OpaqueV()
	n.EncryptedPathSecret = readStructList[HPKECiphertext](r)
	return r.Err()
}

// UpdatePath is the committer's new leaf and filtered direct path (§7.6).
type UpdatePath struct {
	LeafNode LeafNode
	Nodes    []UpdatePathNode
}

func (u *UpdatePath) marshal(w *codec.Writer) {
	u.LeafNode.marshal(w)
	writeStructList(w, u.Nodes)
}

func (u *UpdatePath) unmarshal(r *codec.Reader) error {
	if err := u.LeafNode.unmarshal(r); err != nil {
		return err
	}
	u.Nodes = readStructList[UpdatePathNode](r)
	return r.Err()
}

// Marshal encodes the UpdatePath.
func (u *UpdatePath) Marshal() ([]byte, error) { return marshalWire(u) }

// Unmarshal decodes an UpdatePath strictly.
func (u *UpdatePath) Unmarshal(b []byte) error { return unmarshalWire(b, u) }

// Commit applies proposals and optionally refreshes the committer's path.
type Commit struct {
	Proposals []ProposalOrRef
	// Path is nil when the commit carries no UpdatePath.
	Path *UpdatePath
}

func (c *Commit) marshal(w *codec.Writer) {
	writeStructList(w, c.Proposals)
	w.Optional(c.Path != nil)
	if c.Path != nil {
		c.Path.marshal(w)
	}
}

func (c *Commit) unmarshal(r *codec.Reader) error {
	c.Proposals = readStructList[ProposalOrRef](r)
	present, err := r.Optional()
	if err != nil {
		return err
	}
	c.Path = nil
	if present {
		c.Path = new(UpdatePath)
		return c.Path.unmarshal(r)
	}
	return nil
}

// Marshal encodes the Commit.
func (c *Commit) Marshal() ([]byte, error) { return marshalWire(c) }

// Unmarshal decodes a Commit strictly.
func (c *Commit) Unmarshal(b []byte) error { return unmarshalWire(b, c) }
