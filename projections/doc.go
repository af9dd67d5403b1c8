// Package projections keeps one installation's read model: the SQLCipher 4
// database projected from its events.
//
// It owns everything about that file: keys and hardening, the schema and
// its migrations, applying events, the queries services ask, verification,
// and rebuilding beside the live database. The file format, the schema
// and the rules are documented in docs/read-model.md.
//
// # Opening
//
// [Open] opens or creates a read model with a [Key] ([RawKey],
// [PassphraseKey], or [NoKey] for reading an unencrypted database being
// migrated) and [Options] (nil for defaults); an older schema is migrated
// in place to [Options.SchemaVersion]. [OpenExisting] opens an existing
// file as it is, never migrating or creating it, for tools that read,
// verify or follow. [MigrateInPlace] upgrades a file's schema without the
// event stream.
//
// # Applying events
//
// [DB.Apply] applies [Record] values (an event with its stream sequence) in
// stream order, in batches that commit with the checkpoint
// ([DB.Checkpoint]): every event is applied exactly once, and an event the
// model refuses stops the projector with an [*ApplyError] naming its
// sequence. One handler per event kind checks it against the model: the
// rules of delivery queues are [events.QueueState]'s, shared with the
// delivery service.
//
// # Queries
//
// Methods of [DB], by aggregate: the installation ([DB.Installation]),
// its key packages ([DB.AvailableKeyPackages], [DB.HeldKeyPackage],
// [DB.KeyPackageState], [DB.GroupJoinedWith]) and external PSKs
// ([DB.ExternalPSKs]), groups ([DB.Groups], [DB.Group], [DB.GroupState],
// [DB.Members], [DB.IsMember], [DB.MemberRemovedAt], [DB.Epochs],
// [DB.NewestCommit], [DB.NewestOwnCommit], [DB.CommitStartedEpoch],
// [DB.EpochRetired], [DB.OwnCommitOutputs]), their memberships ([DB.Memberships],
// [DB.PastMembers], [DB.PastEpochs]) and pending proposals
// ([DB.PendingProposals], [DB.HasProposalMessage]), messages
// ([DB.Messages], [DB.MessagesSentInEpoch], [DB.SentSinceState],
// [DB.HasMessage], [DB.OwnMessageOutputs]), delivery queues ([DB.PendingDeliveries]), and every
// aggregate's position ([DB.Position]). A lookup of one row returns found =
// false when there is none; secrets come as [events.Secret], redacted when
// printed.
//
// # Verifying
//
// [DB.Digest] is a logical fingerprint of the content, independent of the
// key and the page layout; [Compare] and [CompareDB] name the first
// difference; a [Snapshot] reads the digest and the checkpoint in one
// transaction while the projector writes. [DB.IntegrityCheck] checks every
// page.
//
// # Rebuilding
//
// A rebuild builds a fresh database beside the live one ([BuildAside]),
// then replaces it atomically and durably ([Swap]); [RemoveAside] and
// [RemoveLeftovers] clear what an abandoned or interrupted rebuild left.
// [DB.ExportTo] copies a database under another key with SQLCipher's own
// export, the fast path for rekeying.
//
// # Errors
//
// Failures about a file are a [*FileError] (path, operation, hint); the
// conditions callers branch on are sentinels: [ErrWrongKey], [ErrCorrupt],
// [ErrNotOurs], [ErrSchemaTooNew], [ErrCannotApply], [ErrLocked],
// [ErrMigrationWait], [ErrOrdinalBehind].
//
// # Writers, heads and damage
//
// [Lock] takes a read model's writer lock (a flock on "<db>.lock"): every
// writer holds it, a second one gets [ErrLocked] naming the holder. [Head]
// says how far a read model got (installation, checkpoint, each aggregate's
// position), which replay compares so it never swaps in less.
// [CheckFile] checks a file's every page HMAC, b-tree and index, naming the
// damaged pages and tables.
//
// # Caveats
//
// A read model is disposable: the event stream is the source of truth, and
// every table here can be rebuilt by replaying it (see docs/read-model.md).
// Applying events is single-writer per database (enforced by the writers
// taking [Lock]); concurrent readers are fine (WAL). Keys are never printed, logged or put into errors, but the
// raw key lives in process memory for the lifetime of a DB, because every
// new pooled connection must present it to SQLCipher. Only one rebuild,
// verification or migration may run on a read model at a time:
// RemoveLeftovers would delete another's database under construction.
package projections
