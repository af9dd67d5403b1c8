// Package projections keeps one installation's read model in a SQLCipher 4
// database: opening and hardening it, its schema and migrations, applying
// events with their checkpoint in one transaction, the queries services
// need, a logical digest for verification, and rebuild-aside-and-swap.
//
// # Caveats
//
// A read model is disposable: the event stream is the source of truth, and
// every table here can be rebuilt by replaying it (see docs/read-model.md).
// Applying events is single-writer per database; concurrent readers are
// fine (WAL). Keys are never printed, logged or put into errors, but the
// raw key lives in process memory for the lifetime of a DB, because every
// new pooled connection must present it to SQLCipher.
package projections
