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
// A writer that publishes envelopes to JetStream seals them with
// [MessageIDs.Seal] instead, which also returns the event's message id for
// the Nats-Msg-Id header: "<position>-<token>", the token a keyed digest of
// the event as the caller gave it (not of the envelope, whose nonce is
// fresh on every seal). Sealing the same event again, as a retried append
// does, gives the same id, so the server drops a repeated publish and the
// writer can recognise its events on the stream; [MessageIDPosition] reads
// the position back from an id.
//
// # Caveats
//
//   - Pseudonyms ([Keyring.Pseudonym]) are keyed by the key with the lowest
//     [KeyID] in the ring. That key must stay in every ring, and no key with a
//     lower id may be added later, or every pseudonym (and so every subject
//     built from one) changes.
//   - Message ids are keyed by the pseudonym key (read once, by
//     [NewMessageIDs]) and digest a fixed msgpack form of the event. A
//     change of either changes every id, and an append retried across the
//     change is no longer recognised as written. A zero [Event.Time]
//     digests as Unix 0, the same as a time set to the Unix epoch.
//   - Secret-bearing body fields have type [Secret], whose printed and JSON
//     forms are redacted, wherever the Secret is held. [Secret.Bytes] and
//     [MarshalJSONReveal] expose the bytes; call them only where the caller
//     intends to use or show them.
//   - The envelope hides kind, version and body from the bus operator, but
//     not the envelope's size, its key id, its timing, or the subject it is
//     published on.
//   - Open refuses a body schema version newer than the code knows
//     ([ErrUnknownVersion]); deploy readers before writers when a kind's
//     version is bumped.
package events
