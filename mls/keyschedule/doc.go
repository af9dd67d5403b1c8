// Package keyschedule derives the per-epoch secrets of an MLS group (key
// schedule, pre-shared keys, exporter) and the per-sender message keys of
// the secret tree, per [RFC 9420 §8 and §9].
//
// # Mutability
//
// [EpochSecrets] is an immutable value: deriving the next epoch returns a
// new value and leaves the old one untouched. [SecretTree] is mutable on
// purpose: RFC 9420 §9.2 requires consumed keys to be deleted, so taking a
// key changes the tree. It is not safe for concurrent use; callers that need
// to keep the state before a message was processed take a [SecretTree.Clone]
// first. [SecretTree.MarshalBinary] saves only the tree's current state
// (unsplit node secrets, current ratchet secrets, kept skipped keys), never
// a consumed secret, and [EpochSecrets.MarshalBinary] leaves out the
// secrets the message keys derive from. All secrets are [ciphersuite.Secret] values, which never print
// their bytes.
//
// # Caveats
//
// Deletion is best effort: the tree clears the byte slices it owns when a
// secret is consumed, but copies handed out earlier (a [KeyNonce], a
// [SecretTree.Clone]) and copies the Go runtime made are out of its reach.
// Skipped keys kept for out-of-order messages are bounded per ratchet by
// MaxForwardRatchets; the oldest are discarded first.
//
// [RFC 9420 §8 and §9]: https://www.rfc-editor.org/rfc/rfc9420.html#section-8
package keyschedule
