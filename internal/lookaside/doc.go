// Package lookaside gives every SQLCipher connection of the process a
// larger lookaside pool than SQLite's default, before SQLite starts.
//
// Lookaside is SQLite's per-connection pool for small, short-lived
// allocations (parsed statements, records, cursors). An allocation the
// pool cannot take goes to the process's allocator, and with SQLCipher's
// memory security on (cipher_memory_security, this build's default) each
// of those is locked with mlock, and zeroed and unlocked with munlock
// when freed: two system calls. SQLite's default pool (48 KB: 30 slots
// of 1,200 bytes and 93 of 128) runs out in the projector's
// transactions, which then spent most of their time in those calls;
// DefaultSlots × SlotSize is the smallest pool measured to stop that (applying
// events 2.2 to 2.6 times faster with memory security on, no change with
// it off: docs/read-model.md, "Lookaside"). The price is memory: each
// connection allocates its pool when it opens, 240 KB instead of 48 KB.
//
// SQLite takes this setting only before it is initialised, so it is made
// when the package is initialised: package pagecipher, which initialises
// SQLite in its own init, imports this one to come after it. [Configured]
// reports whether it took effect.
package lookaside
