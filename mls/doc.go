// Package mls implements the Messaging Layer Security protocol [RFC 9420]
// for one client: its state in a group, and the messages that move that
// state from epoch to epoch. It holds the wire structures, the ratchet
// tree with TreeKEM, framing, key packages, proposals, commits and Welcome
// processing; the cipher suites, key schedule and encoding are in
// [ciphersuite], [keyschedule] and [codec]. docs/mls.md describes scope,
// errors and limits.
//
// # State transitions
//
// A [Group] is one client's state of a group in one epoch, and it is a
// value. Every operation that changes it returns a new state together with
// the messages to send or what was received, and leaves the state it was
// called on untouched; the caller carries on with the returned state.
// This is what lets each transition be recorded as an event and replayed.
// [Group.MarshalBinary] and [UnmarshalState] save and load a state,
// secrets included.
//
// # Entry points
//
//   - [NewKeyPackage] makes the [KeyPackage] a client publishes so that it
//     can be added, and the [KeyPackageSecrets] it keeps to join.
//   - [NewGroup] creates a group in epoch 0; [Join] enters one from a
//     Welcome.
//   - [Group.Commit] with [CommitOptions] adds and removes members,
//     injects PSKs, changes the group context extensions or refreshes
//     keys, and commits those proposals cached in the epoch that fit
//     together. Its [CommitResult] holds the commit for the members and
//     the Welcome for the added ones. [Group.ProposeAdd],
//     [Group.ProposeRemove] and [Group.ProposeUpdate] propose a change for
//     another member to commit.
//   - [Group.Process] handles a message from another member: a proposal is
//     cached, a commit moves to the next epoch, an application message is
//     decrypted. [Group.ProcessCommit] and [Group.OpenApplication] accept
//     only commits and application messages respectively.
//   - [Group.SealApplication] encrypts application data for the members.
//
// Errors a caller may branch on wrap a sentinel such as [ErrWrongEpoch]
// or [ErrTampered]; test them with errors.Is.
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
