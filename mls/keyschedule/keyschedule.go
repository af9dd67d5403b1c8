package keyschedule

import (
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// Secret is the secret type used throughout the package.
type Secret = ciphersuite.Secret

func orZero(cs *ciphersuite.CipherSuite, s Secret) []byte {
	if s.IsZero() {
		return make([]byte, cs.Nh())
	}
	return s.Bytes()
}

// EpochSecrets holds every secret the key schedule derives for one epoch.
// It is an immutable value; build it with [Derive] or [FromJoinerSecret].
type EpochSecrets struct {
	cs *ciphersuite.CipherSuite

	// JoinerSecret is the secret a Welcome carries to new members.
	JoinerSecret Secret
	// WelcomeSecret derives the key and nonce that encrypt the GroupInfo in
	// a Welcome.
	WelcomeSecret Secret
	// EpochSecret is the root of the epoch's derived secrets.
	EpochSecret Secret

	SenderDataSecret   Secret // "sender data": keys for PrivateMessage sender data
	EncryptionSecret   Secret // "encryption": the root of the secret tree
	ExporterSecret     Secret // "exporter": base of MLS-Exporter
	ExternalSecret     Secret // "external": seed of the external HPKE key pair
	ConfirmationKey    Secret // "confirm": confirmation tag MAC key
	MembershipKey      Secret // "membership": PublicMessage membership tag MAC key
	ResumptionPSK      Secret // "resumption": resumption PSK of this epoch
	EpochAuthenticator Secret // "authentication": value members compare out of band
	// InitSecret is the init_secret handed to the next epoch.
	InitSecret Secret
}

// Suite returns the cipher suite the secrets were derived with.
func (e EpochSecrets) Suite() *ciphersuite.CipherSuite { return e.cs }

// JoinerSecret computes joiner_secret = ExpandWithLabel(Extract(init_secret,
// commit_secret), "joiner", GroupContext, Nh). groupContext is the encoded
// GroupContext of the new epoch. A zero commitSecret stands for the all-zero
// vector (a commit without a path).
func JoinerSecret(cs *ciphersuite.CipherSuite, initSecret, commitSecret Secret, groupContext []byte) (Secret, error) {
	if initSecret.Len() != cs.Nh() {
		return Secret{}, fmt.Errorf("mls/keyschedule: init_secret is %d bytes, %s needs %d", initSecret.Len(), cs.ID(), cs.Nh())
	}
	prk := cs.Extract(initSecret.Bytes(), orZero(cs, commitSecret))
	j, err := cs.ExpandWithLabel(prk, "joiner", groupContext, cs.Nh())
	if err != nil {
		return Secret{}, fmt.Errorf("mls/keyschedule: joiner secret: %w", err)
	}
	return ciphersuite.NewSecret(j), nil
}

// memberSecret is Extract(joiner_secret, psk_secret), the intermediate value
// from which both welcome_secret and epoch_secret are derived.
func memberSecret(cs *ciphersuite.CipherSuite, joinerSecret, pskSecret Secret) []byte {
	return cs.Extract(joinerSecret.Bytes(), orZero(cs, pskSecret))
}

// WelcomeSecret computes welcome_secret from joiner_secret and psk_secret (a
// zero pskSecret stands for the all-zero vector). A joiner needs it before it
// knows the GroupContext.
func WelcomeSecret(cs *ciphersuite.CipherSuite, joinerSecret, pskSecret Secret) (Secret, error) {
	w, err := cs.DeriveSecret(memberSecret(cs, joinerSecret, pskSecret), "welcome")
	if err != nil {
		return Secret{}, fmt.Errorf("mls/keyschedule: welcome secret: %w", err)
	}
	return ciphersuite.NewSecret(w), nil
}

// WelcomeKeyNonce derives the AEAD key and nonce that protect the GroupInfo
// of a Welcome (RFC 9420 §12.4.3.1).
func WelcomeKeyNonce(cs *ciphersuite.CipherSuite, welcomeSecret Secret) (key, nonce Secret, err error) {
	k, err := cs.ExpandWithLabel(welcomeSecret.Bytes(), "key", nil, cs.Nk())
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("mls/keyschedule: welcome key: %w", err)
	}
	n, err := cs.ExpandWithLabel(welcomeSecret.Bytes(), "nonce", nil, cs.Nn())
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("mls/keyschedule: welcome nonce: %w", err)
	}
	return ciphersuite.NewSecret(k), ciphersuite.NewSecret(n), nil
}

// Derive runs the key schedule for a new epoch from the previous epoch's
// init_secret (or a fresh random one for a new group), the commit_secret,
// the psk_secret and the encoded GroupContext of the new epoch. Zero
// commitSecret or pskSecret values stand for the all-zero vector.
func Derive(cs *ciphersuite.CipherSuite, initSecret, commitSecret, pskSecret Secret, groupContext []byte) (EpochSecrets, error) {
	j, err := JoinerSecret(cs, initSecret, commitSecret, groupContext)
	if err != nil {
		return EpochSecrets{}, err
	}
	return FromJoinerSecret(cs, j, pskSecret, groupContext)
}

// FromJoinerSecret runs the key schedule from joiner_secret onwards, as a
// member joining through a Welcome does.
func FromJoinerSecret(cs *ciphersuite.CipherSuite, joinerSecret, pskSecret Secret, groupContext []byte) (EpochSecrets, error) {
	if joinerSecret.Len() != cs.Nh() {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: joiner_secret is %d bytes, %s needs %d", joinerSecret.Len(), cs.ID(), cs.Nh())
	}
	if !pskSecret.IsZero() && pskSecret.Len() != cs.Nh() {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: psk_secret is %d bytes, %s needs %d", pskSecret.Len(), cs.ID(), cs.Nh())
	}
	member := memberSecret(cs, joinerSecret, pskSecret)
	welcome, err := cs.DeriveSecret(member, "welcome")
	if err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: welcome secret: %w", err)
	}
	epoch, err := cs.ExpandWithLabel(member, "epoch", groupContext, cs.Nh())
	if err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secret: %w", err)
	}
	e := EpochSecrets{
		cs:            cs,
		JoinerSecret:  joinerSecret,
		WelcomeSecret: ciphersuite.NewSecret(welcome),
		EpochSecret:   ciphersuite.NewSecret(epoch),
	}
	for _, d := range []struct {
		label string
		dst   *Secret
	}{
		{"sender data", &e.SenderDataSecret},
		{"encryption", &e.EncryptionSecret},
		{"exporter", &e.ExporterSecret},
		{"external", &e.ExternalSecret},
		{"confirm", &e.ConfirmationKey},
		{"membership", &e.MembershipKey},
		{"resumption", &e.ResumptionPSK},
		{"authentication", &e.EpochAuthenticator},
		{"init", &e.InitSecret},
	} {
		s, err := cs.DeriveSecret(epoch, d.label)
		if err != nil {
			return EpochSecrets{}, fmt.Errorf("mls/keyschedule: %s secret: %w", d.label, err)
		}
		*d.dst = ciphersuite.NewSecret(s)
	}
	return e, nil
}

// Export is MLS-Exporter(label, context, length) = ExpandWithLabel(
// DeriveSecret(exporter_secret, label), "exported", Hash(context), length).
func (e EpochSecrets) Export(label string, context []byte, length int) ([]byte, error) {
	if e.cs == nil {
		return nil, fmt.Errorf("mls/keyschedule: Export on zero EpochSecrets")
	}
	base, err := e.cs.DeriveSecret(e.ExporterSecret.Bytes(), label)
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: exporter %q: %w", label, err)
	}
	out, err := e.cs.ExpandWithLabel(base, "exported", e.cs.Hash(context), length)
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: exporter %q: %w", label, err)
	}
	return out, nil
}

// ExternalKeyPair derives the group's external HPKE key pair from
// external_secret (KEM.DeriveKeyPair); its public key goes into GroupInfo.
func (e EpochSecrets) ExternalKeyPair() (*ciphersuite.HPKEPrivateKey, error) {
	if e.cs == nil {
		return nil, fmt.Errorf("mls/keyschedule: ExternalKeyPair on zero EpochSecrets")
	}
	k, err := e.cs.DeriveKeyPair(e.ExternalSecret.Bytes())
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: external key pair: %w", err)
	}
	return k, nil
}

// ConfirmationTag returns MAC(confirmation_key, confirmed_transcript_hash).
func (e EpochSecrets) ConfirmationTag(confirmedTranscriptHash []byte) ([]byte, error) {
	if e.cs == nil {
		return nil, fmt.Errorf("mls/keyschedule: ConfirmationTag on zero EpochSecrets")
	}
	return e.cs.MAC(e.ConfirmationKey.Bytes(), confirmedTranscriptHash), nil
}
