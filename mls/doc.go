// Package mls implements the Messaging Layer Security protocol [RFC 9420]:
// wire structures, the ratchet tree with TreeKEM, framing, key packages,
// value-typed groups (every operation returns a new [Group]) and Welcome
// processing. docs/mls.md describes scope, errors and limits.
//
// # Caveats
//
// Decoding is strict: every Unmarshal rejects trailing bytes, non-minimal
// length headers and unknown enum values. All seven cipher suites of RFC
// 9420 (1 to 7, X448/Ed448 included) are supported. A [RatchetTree] is a
// value: operations that change it return a new tree and leave the receiver
// untouched; the LeafNode and ParentNode values it holds must not be
// modified once placed in a tree.
//
// [RFC 9420]: https://www.rfc-editor.org/rfc/rfc9420.html
package mls
