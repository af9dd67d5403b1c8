// Package treemath computes node relationships in the array representation
// of MLS left-balanced binary trees per [RFC 9420 Appendix C].
//
// Leaves are at even node indices (leaf i is node 2i) and parents at odd
// ones. An RFC 9420 ratchet tree is always full, so every leaf count n given
// to this package must be a power of two (see [ValidLeafCount]); functions
// that have no answer for a node (a leaf's children, the root's parent, a node
// outside the tree) return ok=false instead of panicking.
//
// [RFC 9420 Appendix C]: https://www.rfc-editor.org/rfc/rfc9420.html#appendix-C
package treemath
