// Package events defines epochlog's versioned event catalogue, its msgpack
// encoding, and the sealed envelope (XChaCha20-Poly1305 under per-installation
// keys derived from a rotating keyring) in which every event travels; it does
// no I/O.
//
// An [Event] is sealed with [Seal] into an envelope bound to a [Binding]
// (stream and subject) and to the installation that owns it, and read back
// with [Open], which verifies, decrypts, decodes and upcasts the body to the
// current schema version. The byte layout, key derivation and catalogue are
// documented in docs/events.md.
//
// # Caveats
//
//   - Pseudonyms ([Keyring.Pseudonym]) are keyed by the key with the lowest
//     [KeyID] in the ring. That key must stay in every ring, and no key with a
//     lower id may be added later, or every pseudonym (and so every subject
//     built from one) changes.
//   - Secret-bearing body fields have type [Secret], whose printed and JSON
//     forms are redacted. Converting a Secret to []byte, or calling
//     [MarshalJSONReveal], exposes the bytes; do that only where the caller
//     intends to show them.
//   - The envelope hides kind, version and body from the bus operator, but
//     not the envelope's size, its key id, its timing, or the subject it is
//     published on.
//   - Open refuses a body schema version newer than the code knows
//     ([ErrUnknownVersion]); deploy readers before writers when a kind's
//     version is bumped.
package events
