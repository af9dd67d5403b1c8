package keyschedule_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

type hexb = vectortest.HexBytes

func sec(b []byte) ciphersuite.Secret { return ciphersuite.NewSecret(b) }

// lookup returns the suite, or records the case as skipped and returns nil.
func lookup(t *testing.T, tally *vectortest.Tally, name string, suite uint16) *ciphersuite.CipherSuite {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
		tally.Skip(t, name, suite, err.Error())
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

type keyScheduleCase struct {
	CipherSuite       uint16 `json:"cipher_suite"`
	GroupID           hexb   `json:"group_id"`
	InitialInitSecret hexb   `json:"initial_init_secret"`
	Epochs            []struct {
		TreeHash                hexb `json:"tree_hash"`
		CommitSecret            hexb `json:"commit_secret"`
		PSKSecret               hexb `json:"psk_secret"`
		ConfirmedTranscriptHash hexb `json:"confirmed_transcript_hash"`
		GroupContext            hexb `json:"group_context"`
		JoinerSecret            hexb `json:"joiner_secret"`
		WelcomeSecret           hexb `json:"welcome_secret"`
		InitSecret              hexb `json:"init_secret"`
		SenderDataSecret        hexb `json:"sender_data_secret"`
		EncryptionSecret        hexb `json:"encryption_secret"`
		ExporterSecret          hexb `json:"exporter_secret"`
		EpochAuthenticator      hexb `json:"epoch_authenticator"`
		ExternalSecret          hexb `json:"external_secret"`
		ConfirmationKey         hexb `json:"confirmation_key"`
		MembershipKey           hexb `json:"membership_key"`
		ResumptionPSK           hexb `json:"resumption_psk"`
		ExternalPub             hexb `json:"external_pub"`
		Exporter                struct {
			// The label is used as the JSON string itself: the generator
			// writes a hex-looking string but it is not decoded.
			Label   string `json:"label"`
			Context hexb   `json:"context"`
			Length  int    `json:"length"`
			Secret  hexb   `json:"secret"`
		} `json:"exporter"`
	} `json:"epochs"`
}

// encodeGroupContext encodes a GroupContext with empty extensions; the mls
// package owns the struct, this is only the vector check.
func encodeGroupContext(suite uint16, groupID []byte, epoch uint64, treeHash, cth []byte) []byte {
	var w codec.Writer
	w.Uint16(1) // mls10
	w.Uint16(suite)
	w.OpaqueV(groupID)
	w.Uint64(epoch)
	w.OpaqueV(treeHash)
	w.OpaqueV(cth)
	w.OpaqueV(nil)
	return w.Bytes()
}

func TestKeyScheduleVectors(t *testing.T) {
	var cases []keyScheduleCase
	vectortest.Load(t, "key-schedule.json", &cases)
	tally := vectortest.NewTally(t, "key-schedule.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs := lookup(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if len(tc.Epochs) == 0 {
				t.Fatal("vector case has no epochs")
			}
			initSecret := sec(tc.InitialInitSecret)
			for n, ep := range tc.Epochs {
				gc := encodeGroupContext(tc.CipherSuite, tc.GroupID, uint64(n), ep.TreeHash, ep.ConfirmedTranscriptHash)
				if !vectortest.Equal(t, fmt.Sprintf("epoch %d group_context", n), gc, ep.GroupContext) {
					return
				}
				e, err := keyschedule.Derive(cs, initSecret, sec(ep.CommitSecret), sec(ep.PSKSecret), ep.GroupContext)
				if err != nil {
					t.Fatalf("epoch %d: %v", n, err)
				}
				for _, c := range []struct {
					what string
					got  ciphersuite.Secret
					want []byte
				}{
					{"joiner_secret", e.JoinerSecret, ep.JoinerSecret},
					{"welcome_secret", e.WelcomeSecret, ep.WelcomeSecret},
					{"init_secret", e.InitSecret, ep.InitSecret},
					{"sender_data_secret", e.SenderDataSecret, ep.SenderDataSecret},
					{"encryption_secret", e.EncryptionSecret, ep.EncryptionSecret},
					{"exporter_secret", e.ExporterSecret, ep.ExporterSecret},
					{"epoch_authenticator", e.EpochAuthenticator, ep.EpochAuthenticator},
					{"external_secret", e.ExternalSecret, ep.ExternalSecret},
					{"confirmation_key", e.ConfirmationKey, ep.ConfirmationKey},
					{"membership_key", e.MembershipKey, ep.MembershipKey},
					{"resumption_psk", e.ResumptionPSK, ep.ResumptionPSK},
				} {
					vectortest.Equal(t, fmt.Sprintf("epoch %d %s", n, c.what), c.got.Bytes(), c.want)
				}
				ext, err := e.ExternalKeyPair()
				if err != nil {
					t.Fatalf("epoch %d: %v", n, err)
				}
				vectortest.Equal(t, fmt.Sprintf("epoch %d external_pub", n), ext.PublicKey(), ep.ExternalPub)
				exp, err := e.Export(ep.Exporter.Label, ep.Exporter.Context, ep.Exporter.Length)
				if err != nil {
					t.Fatalf("epoch %d: %v", n, err)
				}
				vectortest.Equal(t, fmt.Sprintf("epoch %d exporter.secret", n), exp, ep.Exporter.Secret)

				// A joiner starting from joiner_secret reaches the same epoch.
				ws, err := keyschedule.WelcomeSecret(cs, sec(ep.JoinerSecret), sec(ep.PSKSecret))
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, fmt.Sprintf("epoch %d WelcomeSecret()", n), ws.Bytes(), ep.WelcomeSecret)
				j, err := keyschedule.FromJoinerSecret(cs, sec(ep.JoinerSecret), sec(ep.PSKSecret), ep.GroupContext)
				if err != nil {
					t.Fatal(err)
				}
				if !j.EpochAuthenticator.Equal(e.EpochAuthenticator) || !j.InitSecret.Equal(e.InitSecret) {
					t.Errorf("epoch %d: FromJoinerSecret differs from Derive", n)
				}
				initSecret = e.InitSecret
			}
		})
	}
}

type pskCase struct {
	CipherSuite uint16 `json:"cipher_suite"`
	PSKs        []struct {
		PSKID    hexb `json:"psk_id"`
		PSK      hexb `json:"psk"`
		PSKNonce hexb `json:"psk_nonce"`
	} `json:"psks"`
	PSKSecret hexb `json:"psk_secret"`
}

func TestPSKSecretVectors(t *testing.T) {
	var cases []pskCase
	vectortest.Load(t, "psk_secret.json", &cases)
	tally := vectortest.NewTally(t, "psk_secret.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d_n%d", i, tc.CipherSuite, len(tc.PSKs))
		cs := lookup(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			var psks []keyschedule.PSK
			for _, p := range tc.PSKs {
				// PreSharedKeyID with psktype external(1).
				var w codec.Writer
				w.Uint8(1)
				w.OpaqueV(p.PSKID)
				w.OpaqueV(p.PSKNonce)
				psks = append(psks, keyschedule.PSK{ID: w.Bytes(), Secret: sec(p.PSK)})
			}
			got, err := keyschedule.PSKSecret(cs, psks)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "psk_secret", got.Bytes(), tc.PSKSecret)
		})
	}
}

type secretTreeCase struct {
	CipherSuite uint16 `json:"cipher_suite"`
	SenderData  struct {
		SenderDataSecret hexb `json:"sender_data_secret"`
		Ciphertext       hexb `json:"ciphertext"`
		Key              hexb `json:"key"`
		Nonce            hexb `json:"nonce"`
	} `json:"sender_data"`
	EncryptionSecret hexb `json:"encryption_secret"`
	Leaves           [][]struct {
		Generation       uint32 `json:"generation"`
		HandshakeKey     hexb   `json:"handshake_key"`
		HandshakeNonce   hexb   `json:"handshake_nonce"`
		ApplicationKey   hexb   `json:"application_key"`
		ApplicationNonce hexb   `json:"application_nonce"`
	} `json:"leaves"`
}

func TestSecretTreeVectors(t *testing.T) {
	var cases []secretTreeCase
	vectortest.Load(t, "secret-tree.json", &cases)
	tally := vectortest.NewTally(t, "secret-tree.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d_leaves%d", i, tc.CipherSuite, len(tc.Leaves))
		cs := lookup(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			sd := tc.SenderData
			key, nonce, err := keyschedule.SenderDataKeyNonce(cs, sec(sd.SenderDataSecret), sd.Ciphertext)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "sender_data key", key.Bytes(), sd.Key)
			vectortest.Equal(t, "sender_data nonce", nonce.Bytes(), sd.Nonce)

			st, err := keyschedule.NewSecretTree(cs, sec(tc.EncryptionSecret), treemath.LeafCount(len(tc.Leaves)), nil)
			if err != nil {
				t.Fatal(err)
			}
			// Visit leaves from last to first so that derivation does not
			// depend on the order leaves are first used in.
			for l := len(tc.Leaves) - 1; l >= 0; l-- {
				for _, g := range tc.Leaves[l] {
					hs, err := st.Get(treemath.LeafIndex(l), keyschedule.Handshake, g.Generation)
					if err != nil {
						t.Fatalf("leaf %d handshake generation %d: %v", l, g.Generation, err)
					}
					app, err := st.Get(treemath.LeafIndex(l), keyschedule.Application, g.Generation)
					if err != nil {
						t.Fatalf("leaf %d application generation %d: %v", l, g.Generation, err)
					}
					what := fmt.Sprintf("leaf %d generation %d", l, g.Generation)
					vectortest.Equal(t, what+" handshake_key", hs.Key.Bytes(), g.HandshakeKey)
					vectortest.Equal(t, what+" handshake_nonce", hs.Nonce.Bytes(), g.HandshakeNonce)
					vectortest.Equal(t, what+" application_key", app.Key.Bytes(), g.ApplicationKey)
					vectortest.Equal(t, what+" application_nonce", app.Nonce.Bytes(), g.ApplicationNonce)
					if hs.Generation != g.Generation || app.Generation != g.Generation {
						t.Errorf("%s: returned generations %d/%d", what, hs.Generation, app.Generation)
					}
				}
			}
		})
	}
}
