// Package engine is what a Go service links to run MLS (RFC 9420) clients
// on epochlog: installations whose every state transition is a sealed
// event on the log, projected into the installation's own SQLCipher read
// model, and the delivery queues that carry their messages.
//
// A service opens the log once ([eventlog.Open], on an embedded JetStream
// server under a data directory by default), then acts for its
// installations:
//
//	log, err := eventlog.Open(ctx, eventlog.DefaultConfig(dir), keys)
//	alice, err := engine.CreateInstallation(ctx, log, "alice-phone", dbPath, dbKey, nil)
//	kp, err := bob.PublishKeyPackage(ctx, "directory", true)
//	g, err := alice.CreateGroup(ctx, nil)
//	co, err := alice.AddMembers(ctx, g.GroupID, kp.KeyPackage)
//
// [CreateInstallation] records a new installation (identity and signing
// key) and [OpenInstallation] opens an existing one from its read model,
// catching up with events appended since. An [Installation] runs the MLS
// operations: [Installation.CreateGroup], [Installation.AddMembers],
// [Installation.RemoveMembers], [Installation.Update] and
// [Installation.Send] return what to deliver ([CommitOutput],
// [SendOutput]); [Installation.Receive] takes what was delivered (a
// Welcome, a proposal, a commit or an application message, handshakes as
// PublicMessage or PrivateMessage) and returns [Received]. Proposals are
// cached for commits by reference: [Installation.ProposeAdd],
// [Installation.ProposeRemove], [Installation.ProposeUpdate] and
// [Installation.Leave] return a [ProposalOutput], and every own commit
// ([Installation.CommitProposals] among them) carries the proposals cached
// in its epoch. [Installation.GroupInfo] publishes a GroupInfo others
// join from by external commit; [Installation.JoinExternal] joins by one,
// and [Installation.Resync] rejoins a group whose state was lost or
// forked. Own handshakes are sent as PrivateMessage unless
// InstallationOptions.HandshakeWireFormat or
// [Installation.SetHandshakeWireFormat] say PublicMessage.
// Each operation decides its transition from the installation's current
// state, appends its events as one atomic, idempotent append at the
// group's expected position, and projects them before it returns: the
// events are durable before the output is. A second writer of the same
// group (another process of the installation) loses the race cleanly: the
// operation catches up and decides again, so history never forks.
//
// [Deliveries] are per (recipient, channel) queues on the same log:
// [Deliveries.FanOut] queues a commit, Welcome or message for its
// recipients, [Deliveries.Fetch] returns what is pending after the last
// acknowledgement, [Deliveries.Acknowledge] moves that mark.
//
// The read model ([Installation.DB], package projections) is disposable:
// package replay rebuilds, rekeys, migrates and verifies it from the log.
//
// # Caveats
//
//   - One process per installation at a time is the intended use; a second
//     one is safe (it loses races and catches up) but does the work twice,
//     and the two may fan out a sender's commits out of order: give the
//     receiving Host a HostOptions.HoldNotYet (docs/engine.md, "Host").
//   - An operation whose events are durable but whose read model could not
//     be updated succeeds: its output's ProjectionErr says so, and
//     [Installation.CatchUp] (or the next operation) repairs the lag.
//   - An operation whose append went unanswered retries it with the same
//     events for as long as its context and its outcome timeout
//     ([InstallationOptions].OutcomeTimeout, 60 s by default) allow; give
//     operations a context that outlasts a server failover, or see
//     [ErrOutcomeUnknown].
//   - A process that dies between recording an own commit and queuing its
//     output would strand the group: on a restart (or a group's first use
//     in a process), fan out again what [Installation.OwnCommits] hands
//     back, in epoch order, with the idempotency keys of the live path, so
//     that what was queued before is not queued twice (docs/engine.md,
//     "After a crash"). Likewise an own application message: fan out
//     again the newest that [Installation.OwnMessages] hands back
//     (msg-%x of its MessageID), each epoch's after the own commit that
//     started it.
//   - GroupInfos and KeyPackages given to Receive are refused with
//     [ErrUnsupportedMessage] (proposals of external senders and new
//     members are received, see [Received].NonMember); a proposal that
//     arrives after a commit of its epoch is [ErrStaleProposal]
//     (docs/engine.md).
package engine
