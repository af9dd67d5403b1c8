// Package replay turns an installation's events on the log into its
// SQLCipher read model: the one operation behind rebuild, rekey, migrate,
// verify and follow.
//
// [Rebuild] replays an installation's events into a fresh database beside
// the live one, verifies it, and swaps it in atomically (fsync, rename,
// fsync the directory): interrupted at any moment, the live database is
// the old one intact or the new one complete. [Rekey] and [Migrate] are
// rebuilds under a new key or into the latest schema (an unencrypted
// database included). [Verify] replays into a scratch database and
// compares it with the live one table by table, naming the first
// difference ([DriftError]); [VerifyMLS] re-derives the installation's MLS
// transitions from the recorded messages and checks them against what was
// recorded ([ErrMLSMismatch]). [CatchUp] applies the events after a read
// model's checkpoint; [Project] keeps many read models current as events
// arrive.
//
// Every event is applied exactly once: its effects and the read model's
// checkpoint commit in one SQLite transaction. A record that fails to
// open, sits out of order or cannot be applied stops the replay with an
// error naming its stream sequence (an *eventlog.RecordError); nothing is
// skipped.
//
// # Caveats
//
//   - Rebuild trusts the stream: it swaps in what the installation's events
//     give, whatever the live database held.
//   - A replay must be the read model's only writer while it runs.
package replay
