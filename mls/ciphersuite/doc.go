// Package ciphersuite implements the cryptographic primitives of the MLS
// cipher suites (hash, MAC, KDF with MLS labels, AEAD, HPKE and signatures)
// per [RFC 9420 §5].
//
// Suites 1, 2, 3, 5 and 7 are implemented with the Go standard library (and
// golang.org/x/crypto/chacha20poly1305 for message protection under suite 3);
// suites 4 and 6 (X448/Ed448) are not, and [Lookup] reports them with
// [ErrUnsupportedSuite].
//
// A [*CipherSuite] is immutable and safe for concurrent use. Key types
// ([Secret], [HPKEPrivateKey], [SignaturePrivateKey]) keep their bytes
// unexported, copy on the way in and out, compare in constant time, and
// print as a redacted placeholder under every fmt verb.
//
// [RFC 9420 §5]: https://www.rfc-editor.org/rfc/rfc9420.html#section-5
package ciphersuite
