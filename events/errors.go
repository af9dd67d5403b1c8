package events

import "errors"

// Sentinel errors returned (wrapped, with non-secret context such as the key
// id) by [Open] and [Seal]. Test for them with errors.Is. Cryptographic
// failures never say which check failed beyond the sentinel itself.
var (
	// ErrUnknownKey means the envelope names a key id that is not in the
	// keyring (the key was never added, or the key id bytes were altered).
	ErrUnknownKey = errors.New("events: unknown key id")

	// ErrWrongKey means the key id is in the keyring but the key held under
	// that id is not the one that sealed the envelope (the key-check value
	// does not match).
	ErrWrongKey = errors.New("events: wrong key for key id")

	// ErrTampered means authentication of the envelope failed: some byte of
	// the header, nonce or ciphertext was changed. It deliberately does not
	// say which.
	ErrTampered = errors.New("events: envelope authentication failed")

	// ErrMoved means the envelope was sealed for another stream, subject or
	// installation than the one it was read at.
	ErrMoved = errors.New("events: envelope sealed for another stream, subject or installation")

	// ErrUnknownVersion means the body is of a kind this code does not know,
	// or of a schema version newer than (or otherwise not among) the versions
	// it can read. The wrapping error names the kind and version.
	ErrUnknownVersion = errors.New("events: unknown event kind or schema version")

	// ErrMalformed means the bytes are not an envelope of ours (bad magic or
	// format version), are truncated, or carry an undecodable event.
	ErrMalformed = errors.New("events: malformed envelope or event")

	// ErrStateBase means a commit that records its state as a delta
	// (CommitApplied.StateOf) does not rebuild its recorded state from
	// the base it was given: the reader holds another state of the group
	// than the writer diffed against, or none.
	ErrStateBase = errors.New("events: the state delta does not apply to the state held")
)
