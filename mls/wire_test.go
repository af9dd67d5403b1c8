package mls

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
)

type hexb = vectortest.HexBytes

type messagesCase struct {
	MLSWelcome                     hexb `json:"mls_welcome"`
	MLSGroupInfo                   hexb `json:"mls_group_info"`
	MLSKeyPackage                  hexb `json:"mls_key_package"`
	RatchetTree                    hexb `json:"ratchet_tree"`
	GroupSecrets                   hexb `json:"group_secrets"`
	AddProposal                    hexb `json:"add_proposal"`
	UpdateProposal                 hexb `json:"update_proposal"`
	RemoveProposal                 hexb `json:"remove_proposal"`
	PreSharedKeyProposal           hexb `json:"pre_shared_key_proposal"`
	ReInitProposal                 hexb `json:"re_init_proposal"`
	ExternalInitProposal           hexb `json:"external_init_proposal"`
	GroupContextExtensionsProposal hexb `json:"group_context_extensions_proposal"`
	Commit                         hexb `json:"commit"`
	PublicMessageApplication       hexb `json:"public_message_application"`
	PublicMessageProposal          hexb `json:"public_message_proposal"`
	PublicMessageCommit            hexb `json:"public_message_commit"`
	PrivateMessage                 hexb `json:"private_message"`
}

// codecValue is any wire structure with exported Marshal/Unmarshal.
type codecValue interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// roundTrip decodes in into v, re-encodes it and requires the same bytes.
func roundTrip(t *testing.T, what string, v codecValue, in []byte) {
	t.Helper()
	if err := v.Unmarshal(in); err != nil {
		t.Errorf("%s: decode: %v", what, err)
		return
	}
	out, err := v.Marshal()
	if err != nil {
		t.Errorf("%s: encode: %v", what, err)
		return
	}
	vectortest.Equal(t, what+" re-encoding", out, in)
}

// treeValue adapts RatchetTree to codecValue.
type treeValue struct{ t RatchetTree }

func (tv *treeValue) Marshal() ([]byte, error) { return tv.t.Marshal() }
func (tv *treeValue) Unmarshal(b []byte) error {
	var err error
	tv.t, err = UnmarshalRatchetTree(b)
	return err
}

func TestMessagesVectors(t *testing.T) {
	var cases []messagesCase
	vectortest.Load(t, "messages.json", &cases)
	tally := vectortest.NewTally(t, "messages.json")
	for i, tc := range cases {
		tally.Run(t, fmt.Sprintf("case%d", i), 0, func(t *testing.T) {
			msg := func(what string, in []byte, wf WireFormat) *MLSMessage {
				var m MLSMessage
				roundTrip(t, what, &m, in)
				if m.WireFormat != wf {
					t.Errorf("%s: wire format %d, want %d", what, m.WireFormat, wf)
				}
				return &m
			}
			msg("mls_welcome", tc.MLSWelcome, WireFormatWelcome)
			msg("mls_group_info", tc.MLSGroupInfo, WireFormatGroupInfo)
			msg("mls_key_package", tc.MLSKeyPackage, WireFormatKeyPackage)
			roundTrip(t, "ratchet_tree", &treeValue{}, tc.RatchetTree)
			roundTrip(t, "group_secrets", &GroupSecrets{}, tc.GroupSecrets)
			roundTrip(t, "add_proposal", &Add{}, tc.AddProposal)
			roundTrip(t, "update_proposal", &Update{}, tc.UpdateProposal)
			roundTrip(t, "remove_proposal", &Remove{}, tc.RemoveProposal)
			roundTrip(t, "pre_shared_key_proposal", &PreSharedKey{}, tc.PreSharedKeyProposal)
			roundTrip(t, "re_init_proposal", &ReInit{}, tc.ReInitProposal)
			roundTrip(t, "external_init_proposal", &ExternalInit{}, tc.ExternalInitProposal)
			roundTrip(t, "group_context_extensions_proposal", &GroupContextExtensions{}, tc.GroupContextExtensionsProposal)
			roundTrip(t, "commit", &Commit{}, tc.Commit)
			for _, pm := range []struct {
				what string
				in   []byte
				ct   ContentType
			}{
				{"public_message_application", tc.PublicMessageApplication, ContentTypeApplication},
				{"public_message_proposal", tc.PublicMessageProposal, ContentTypeProposal},
				{"public_message_commit", tc.PublicMessageCommit, ContentTypeCommit},
			} {
				m := msg(pm.what, pm.in, WireFormatPublicMessage)
				if m.PublicMessage != nil && m.PublicMessage.Content.ContentType != pm.ct {
					t.Errorf("%s: content type %d, want %d", pm.what, m.PublicMessage.Content.ContentType, pm.ct)
				}
			}
			msg("private_message", tc.PrivateMessage, WireFormatPrivateMessage)
		})
	}
}

// TestDecodeRejects checks that strict decoding refuses malformed input:
// trailing bytes, truncation, unknown enum values, a wrong version.
func TestDecodeRejects(t *testing.T) {
	var cases []messagesCase
	vectortest.Load(t, "messages.json", &cases)
	tc := cases[0]
	bad := map[string]struct {
		v  codecValue
		in []byte
	}{
		"trailing byte":          {&MLSMessage{}, append(bytes.Clone(tc.MLSKeyPackage), 0)},
		"truncated":              {&MLSMessage{}, tc.MLSWelcome[:len(tc.MLSWelcome)-1]},
		"version 2":              {&MLSMessage{}, append([]byte{0, 2}, tc.MLSWelcome[2:]...)},
		"wire format 9":          {&MLSMessage{}, append([]byte{0, 1, 0, 9}, tc.MLSWelcome[4:]...)},
		"proposal type 99":       {&Proposal{}, []byte{0, 99, 0, 0, 0, 1}},
		"proposal-or-ref type 3": {&Commit{}, []byte{2, 3, 0, 0}},
		"optional octet 2":       {&Commit{}, []byte{0, 2}},
		"credential type 7":      {&ExternalSender{}, []byte{0, 0, 7, 0}},
		"non-minimal varint":     {&ExternalInit{}, []byte{0x40, 0x01, 0xaa}},
		"empty ratchet tree":     {&treeValue{}, []byte{0}},
		"trailing blank node":    {&treeValue{}, withTrailingBlank(t, tc.RatchetTree)},
		"leaf at odd position":   {&treeValue{}, []byte{3, 0, 1, 1}},
	}
	for name, b := range bad {
		if err := b.v.Unmarshal(b.in); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: got %v, want an error wrapping ErrDecode", name, err)
		}
	}
}

// withTrailingBlank re-encodes an encoded ratchet tree with one more,
// blank, entry.
func withTrailingBlank(t *testing.T, tree []byte) []byte {
	r := codec.NewReader(tree)
	sub, err := r.VectorV()
	if err != nil {
		t.Fatal(err)
	}
	content, _ := sub.Raw(sub.Len())
	var w codec.Writer
	w.OpaqueV(append(content, 0))
	b, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSecretsNotPrinted(t *testing.T) {
	secret := []byte("very-secret-joiner-bytes")
	gs := GroupSecrets{JoinerSecret: ciphersuite.NewSecret(secret), PathSecret: &PathSecret{PathSecret: ciphersuite.NewSecret(secret)}}
	for _, s := range []string{fmt.Sprint(gs), fmt.Sprintf("%v %+v %#v", gs, gs, gs), fmt.Sprint(*gs.PathSecret), fmt.Sprintf("%#v", *gs.PathSecret)} {
		if bytes.Contains([]byte(s), secret) || bytes.Contains([]byte(s), []byte(fmt.Sprint(secret))) {
			t.Errorf("formatted GroupSecrets reveals the secret: %s", s)
		}
	}
}

// GroupSecrets and PathSecret (the joiner secret and path secret of a
// Welcome) redact under every fmt verb and refuse JSON and text
// marshaling.
func TestGroupSecretsNeverPrintSecrets(t *testing.T) {
	joiner := []byte{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04}
	path := []byte{0xca, 0xfe, 0xba, 0xbe, 0x05, 0x06, 0x07, 0x08}
	gs := GroupSecrets{JoinerSecret: ciphersuite.NewSecret(joiner), PathSecret: &PathSecret{PathSecret: ciphersuite.NewSecret(path)}, PSKs: []PreSharedKeyID{}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		for _, v := range []any{gs, &gs, *gs.PathSecret, gs.PathSecret} {
			out := fmt.Sprintf(verb, v)
			for _, s := range [][]byte{joiner, path} {
				if strings.Contains(out, strings.Trim(fmt.Sprint(s), "[]")) || strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", s)) {
					t.Errorf("%s of %T prints a secret: %s", verb, v, out)
				}
			}
		}
	}
	for _, v := range []any{gs, &gs, *gs.PathSecret, gs.PathSecret} {
		if b, err := json.Marshal(v); !errors.Is(err, ciphersuite.ErrSecretMarshal) {
			t.Errorf("json.Marshal(%T) = %s, %v; want ErrSecretMarshal", v, b, err)
		}
	}
	for _, v := range []any{gs, *gs.PathSecret} {
		tm, ok := v.(encoding.TextMarshaler)
		if !ok {
			t.Errorf("%T has no MarshalText, so encoders fall back to its fields", v)
			continue
		}
		if b, err := tm.MarshalText(); !errors.Is(err, ciphersuite.ErrSecretMarshal) {
			t.Errorf("%T.MarshalText() = %s, %v; want ErrSecretMarshal", v, b, err)
		}
	}
}
