// Package lease decides which process may write an installation's read
// model: exclusive, expiring leases on installations, held in a JetStream
// key-value bucket next to the event stream, and share groups that spread
// a stream's installations over their live members and move a lost
// member's installations to the others.
//
// A lease is one key of the bucket, named after the installation's
// pseudonym (never its id), whose value names the holder. [Bucket.Acquire]
// creates the key only if nobody holds it (a compare-and-set on the key's
// revision, decided by the bucket's stream leader), so at most one holder
// exists at a time. The holder renews it every TTL/3 by another
// compare-and-set on the revision it last wrote; the bucket's TTL (its
// max age) deletes a key nobody renewed, so a lost holder's lease becomes
// free TTL after its last renewal at the latest. A holder counts its lease
// valid for 3/4 of the TTL after sending its last successful renewal, and
// [Lease.Check] says so without a round trip: the holder stops writing
// before the server can hand the lease to anyone else.
//
// A [Member] of a share group holds leases on behalf of a process:
// [Member.Run] keeps a member key alive in the same bucket, watches the
// bucket, and takes the installations that rendezvous hashing over the
// live members gives it, hands over those it gives another member, and
// runs a serve function for each installation it holds, cancelled when
// the lease is lost or handed over. Members that know an installation
// take it when its owner leaves it free for a TTL, so an installation
// some live member knows is never left unserved.
//
// The choice of this design over partitioned subjects or consumer groups,
// and the takeover bound, are in docs/architecture.md ("Sharing a stream's
// installations"); running several followers is in docs/operations.md.
//
// # Caveats
//
//   - Leases assume clocks that run at the same rate: a holder measures its
//     lease on its own clock, the server expires it on its own. On Linux
//     the holder's clock is CLOCK_BOOTTIME, which counts a system suspend
//     as the server's TTL does, so a holder suspended past its lease finds
//     it lost on resuming; elsewhere it is Go's monotonic clock, which may
//     stop while the system sleeps, and such a holder's Check passes after
//     resuming until its next renewal (TTL/3 at most) finds it over.
//     A server clock stepped forward by more than TTL/4 can free a lease
//     while its holder still uses it. A read model's own checkpoint is the
//     last guard: an event applied at a position its read model already
//     holds is refused, so two writers of one file cannot apply an event
//     twice, whatever the clocks do.
//   - A check passes, then the holder commits: a holder that pauses for more
//     than TTL/4 between [Lease.Check] and its commit (a stopped process, a
//     stalled disk) commits after its lease ended. Keep commits short
//     against the TTL.
//   - Deleting the bucket voids every lease in it at once, but each holder
//     counts its own valid until its next renewal (TTL/3) finds the bucket
//     gone or created again, and never renews into another bucket. Delete
//     a lease bucket only while no holder runs.
//   - Every held lease is one write to the bucket every TTL/3: 10 000
//     installations at the default TTL of 15 s are 2 000 writes a second.
//     Raise the TTL for large groups.
package lease
