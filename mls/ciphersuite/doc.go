// Package ciphersuite implements the cryptographic primitives of the MLS
// cipher suites (hash, MAC, KDF with MLS labels, AEAD, HPKE and signatures)
// per [RFC 9420 §5].
//
// Every suite registered by RFC 9420 (1 to 7) is implemented. Suites 1, 2,
// 3, 5 and 7 use the Go standard library only (and
// golang.org/x/crypto/chacha20poly1305 for message protection under suite
// 3). Suites 4 and 6 (X448/Ed448) share the hash, HKDF and message
// protection code of the others, and use github.com/cloudflare/circl for
// HPKE with DHKEM(X448, HKDF-SHA512) and for Ed448 signatures, which the
// standard library does not provide. [Lookup] reports any other value with
// [ErrUnsupportedSuite].
//
// A [*CipherSuite] is immutable and safe for concurrent use. Key types
// ([Secret], [HPKEPrivateKey], [SignaturePrivateKey]) keep their bytes
// unexported, copy on the way in and out, compare in constant time, and
// print as a redacted placeholder under every fmt verb.
//
// [RFC 9420 §5]: https://www.rfc-editor.org/rfc/rfc9420.html#section-5
package ciphersuite
