package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

type welcomeCase struct {
	CipherSuite uint16 `json:"cipher_suite"`
	InitPriv    vxb    `json:"init_priv"`
	SignerPub   vxb    `json:"signer_pub"`
	KeyPackage  vxb    `json:"key_package"`
	Welcome     vxb    `json:"welcome"`
}

func TestWelcomeVectors(t *testing.T) {
	var cases []welcomeCase
	vectortest.Load(t, "welcome.json", &cases)
	tally := vectortest.NewTally(t, "welcome.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs, err := ciphersuite.Lookup(ciphersuite.Suite(tc.CipherSuite))
		if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			tally.Skip(t, name, tc.CipherSuite, err.Error())
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if err != nil {
				t.Fatal(err)
			}
			var kpm, wm MLSMessage
			if err := kpm.Unmarshal(tc.KeyPackage); err != nil || kpm.KeyPackage == nil {
				t.Fatalf("key_package: %v", err)
			}
			if err := wm.Unmarshal(tc.Welcome); err != nil || wm.Welcome == nil {
				t.Fatalf("welcome: %v", err)
			}
			initKey := parseVectorHPKEKey(t, cs, tc.InitPriv)
			g := &Group{cs: cs, psks: map[string]keyschedule.Secret{}}
			gi, gs, psk, err := g.openWelcome(wm.Welcome, kpm.KeyPackage, initKey)
			if err != nil {
				t.Fatal(err)
			}
			if err := gi.VerifySignature(cs, SignaturePublicKey(tc.SignerPub)); err != nil {
				t.Fatal(err)
			}
			gcBytes, err := gi.GroupContext.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			es, err := keyschedule.FromJoinerSecret(cs, gs.JoinerSecret, psk, gcBytes)
			if err != nil {
				t.Fatal(err)
			}
			tag, err := es.ConfirmationTag(gi.GroupContext.ConfirmedTranscriptHash)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "confirmation tag", tag, gi.ConfirmationTag)

			// A Welcome for another key package is refused with its sentinel.
			other := *kpm.KeyPackage
			other.InitKey = bytes.Clone(other.InitKey)
			other.InitKey[len(other.InitKey)-1] ^= 1
			if _, _, _, err := g.openWelcome(wm.Welcome, &other, initKey); !errors.Is(err, ErrNoWelcomeSecrets) {
				t.Fatalf("foreign key package: %v, want ErrNoWelcomeSecrets", err)
			}
		})
	}
}

type passiveCase struct {
	CipherSuite  uint16 `json:"cipher_suite"`
	ExternalPSKs []struct {
		PSKID vxb `json:"psk_id"`
		PSK   vxb `json:"psk"`
	} `json:"external_psks"`
	KeyPackage                vxb  `json:"key_package"`
	SignaturePriv             vxb  `json:"signature_priv"`
	EncryptionPriv            vxb  `json:"encryption_priv"`
	InitPriv                  vxb  `json:"init_priv"`
	Welcome                   vxb  `json:"welcome"`
	RatchetTree               *vxb `json:"ratchet_tree"`
	InitialEpochAuthenticator vxb  `json:"initial_epoch_authenticator"`
	Epochs                    []struct {
		Proposals          []vxb `json:"proposals"`
		Commit             vxb   `json:"commit"`
		EpochAuthenticator vxb   `json:"epoch_authenticator"`
	} `json:"epochs"`
}

func TestPassiveClientWelcomeVectors(t *testing.T) { runPassiveFile(t, "passive-client-welcome.json") }

func TestPassiveClientHandlingCommitVectors(t *testing.T) {
	runPassiveFile(t, "passive-client-handling-commit.json")
}

func TestPassiveClientRandomVectors(t *testing.T) { runPassiveFile(t, "passive-client-random.json") }

func runPassiveFile(t *testing.T, file string) {
	var cases []passiveCase
	vectortest.Load(t, file, &cases)
	tally := vectortest.NewTally(t, file)
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs, err := ciphersuite.Lookup(ciphersuite.Suite(tc.CipherSuite))
		if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			tally.Skip(t, name, tc.CipherSuite, err.Error())
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if err != nil {
				t.Fatal(err)
			}
			runPassiveCase(t, cs, &tc)
		})
	}
}

func runPassiveCase(t *testing.T, cs *ciphersuite.CipherSuite, tc *passiveCase) {
	var kpm, wm MLSMessage
	if err := kpm.Unmarshal(tc.KeyPackage); err != nil || kpm.KeyPackage == nil {
		t.Fatalf("key_package: %v", err)
	}
	if err := wm.Unmarshal(tc.Welcome); err != nil {
		t.Fatalf("welcome: %v", err)
	}
	var secrets KeyPackageSecrets
	secrets.InitKey = parseVectorHPKEKey(t, cs, tc.InitPriv)
	secrets.EncryptionKey = parseVectorHPKEKey(t, cs, tc.EncryptionPriv)
	secrets.SignatureKey = parseVectorSigKey(t, cs, tc.SignaturePriv)
	opts := &JoinOptions{}
	for _, p := range tc.ExternalPSKs {
		opts.ExternalPSKs = append(opts.ExternalPSKs, ExternalPSK{ID: p.PSKID, Secret: ciphersuite.NewSecret(p.PSK)})
	}
	if tc.RatchetTree != nil {
		tree, err := UnmarshalRatchetTree(*tc.RatchetTree)
		if err != nil {
			t.Fatal(err)
		}
		opts.RatchetTree = &tree
	}
	g, err := Join(&wm, kpm.KeyPackage, &secrets, opts)
	if err != nil {
		t.Fatal(err)
	}
	vectortest.Equal(t, "initial epoch authenticator", g.EpochAuthenticator(), tc.InitialEpochAuthenticator)
	for i, ep := range tc.Epochs {
		for j, pb := range ep.Proposals {
			var m MLSMessage
			if err := m.Unmarshal(pb); err != nil {
				t.Fatalf("epoch %d proposal %d: %v", i, j, err)
			}
			if g, _, err = g.Process(&m); err != nil {
				t.Fatalf("epoch %d proposal %d: %v", i, j, err)
			}
		}
		var m MLSMessage
		if err := m.Unmarshal(ep.Commit); err != nil {
			t.Fatalf("epoch %d commit: %v", i, err)
		}
		if g, _, err = g.ProcessCommit(&m); err != nil {
			t.Fatalf("epoch %d commit: %v", i, err)
		}
		if !vectortest.Equal(t, fmt.Sprintf("epoch %d authenticator", i), g.EpochAuthenticator(), ep.EpochAuthenticator) {
			t.FailNow()
		}
	}
}
