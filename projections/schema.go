package projections

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/epochlog/epochlog/internal/bytedelta"
	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"
)

// LatestSchema is the newest schema version this code knows. A database
// with a newer PRAGMA user_version is refused (ErrSchemaTooNew).
const LatestSchema = 12

// schemaV1 is the original schema. Times are unix nanoseconds (UTC) taken
// from event times, never from the wall clock, so two replays of one
// stream give identical rows. Columns marked "secret" hold key material or
// plaintext; they exist only inside the encrypted file.
var schemaV1 = []string{
	`CREATE TABLE epochlog_meta (
		name  TEXT PRIMARY KEY,
		value TEXT NOT NULL
	) WITHOUT ROWID`,
	`CREATE TABLE checkpoint (
		id  INTEGER PRIMARY KEY CHECK (id = 1),
		seq INTEGER NOT NULL
	)`,
	`CREATE TABLE aggregate_positions (
		installation TEXT NOT NULL,
		agg_type     TEXT NOT NULL,
		agg_id       TEXT NOT NULL,
		position     INTEGER NOT NULL,
		PRIMARY KEY (installation, agg_type, agg_id)
	) WITHOUT ROWID`,
	`CREATE TABLE installation (
		id                    INTEGER PRIMARY KEY CHECK (id = 1),
		installation_id       TEXT NOT NULL,
		ciphersuite           INTEGER NOT NULL,
		signature_public_key  BLOB NOT NULL,
		signature_private_key BLOB,
		credential            BLOB NOT NULL,
		created_at            INTEGER NOT NULL
	)`,
	`CREATE TABLE key_packages (
		ref                    BLOB PRIMARY KEY,
		ciphersuite            INTEGER NOT NULL,
		key_package            BLOB NOT NULL,
		last_resort            INTEGER NOT NULL,
		state                  TEXT NOT NULL CHECK (state IN ('generated','published','consumed','rotated')),
		init_private_key       BLOB,
		encryption_private_key BLOB,
		generated_at           INTEGER NOT NULL,
		published_at           INTEGER,
		destination            TEXT,
		consumed_at            INTEGER,
		consumed_group         BLOB,
		rotated_at             INTEGER,
		replaced_by            BLOB
	) WITHOUT ROWID`,
	`CREATE TABLE groups (
		group_id                  BLOB PRIMARY KEY,
		ciphersuite               INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		state                     BLOB NOT NULL,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		joined_via                TEXT NOT NULL CHECK (joined_via IN ('created','welcome')),
		created_at                INTEGER NOT NULL,
		updated_at                INTEGER NOT NULL
	) WITHOUT ROWID`,
	`CREATE TABLE members (
		group_id      BLOB NOT NULL REFERENCES groups(group_id),
		leaf          INTEGER NOT NULL,
		identity      BLOB NOT NULL,
		added_epoch   INTEGER NOT NULL,
		removed_epoch INTEGER,
		PRIMARY KEY (group_id, leaf)
	) WITHOUT ROWID`,
	`CREATE TABLE epochs (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		epoch                     INTEGER NOT NULL,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_message            BLOB,
		state                     BLOB,
		retired                   INTEGER NOT NULL DEFAULT 0,
		created_at                INTEGER NOT NULL,
		PRIMARY KEY (group_id, epoch)
	) WITHOUT ROWID`,
	`CREATE TABLE proposals (
		group_id      BLOB NOT NULL REFERENCES groups(group_id),
		proposal_ref  BLOB NOT NULL,
		epoch         INTEGER NOT NULL,
		proposal_type INTEGER NOT NULL,
		sender_leaf   INTEGER NOT NULL,
		proposal      BLOB NOT NULL,
		PRIMARY KEY (group_id, proposal_ref)
	) WITHOUT ROWID`,
	`CREATE TABLE messages (
		group_id           BLOB NOT NULL REFERENCES groups(group_id),
		ordinal            INTEGER NOT NULL,
		message_id         BLOB NOT NULL,
		epoch              INTEGER NOT NULL,
		sender_leaf        INTEGER NOT NULL,
		sender             TEXT NOT NULL,
		direction          TEXT NOT NULL CHECK (direction IN ('sent','received')),
		content            BLOB NOT NULL,
		authenticated_data BLOB NOT NULL,
		sent_at            INTEGER NOT NULL,
		PRIMARY KEY (group_id, ordinal),
		UNIQUE (group_id, message_id)
	) WITHOUT ROWID`,
	`CREATE TABLE delivery_queues (
		recipient TEXT NOT NULL,
		channel   TEXT NOT NULL,
		last_seq  INTEGER NOT NULL,
		acked_seq INTEGER NOT NULL,
		PRIMARY KEY (recipient, channel)
	) WITHOUT ROWID`,
	`CREATE TABLE deliveries (
		recipient       TEXT NOT NULL,
		channel         TEXT NOT NULL,
		seq             INTEGER NOT NULL,
		payload         BLOB,
		expires_at      INTEGER,
		idempotency_key TEXT UNIQUE,
		enqueued_at     INTEGER NOT NULL,
		state           TEXT NOT NULL CHECK (state IN ('pending','acked','expired')),
		PRIMARY KEY (recipient, channel, seq),
		FOREIGN KEY (recipient, channel) REFERENCES delivery_queues(recipient, channel)
	) WITHOUT ROWID`,
}

// migrateV2 is the one real schema change: groups learn when their last
// message was sent (conversation lists sort by it), with an index for that
// sort. The backfill computes it from messages, so an in-place migration
// gives the same content as a fresh v2 build.
var migrateV2 = []string{
	`ALTER TABLE groups ADD COLUMN last_message_at INTEGER`,
	`UPDATE groups SET last_message_at =
		(SELECT max(sent_at) FROM messages m WHERE m.group_id = groups.group_id)`,
	`CREATE INDEX groups_by_activity ON groups(last_message_at DESC, group_id)`,
}

// migrateV3 is what installations in real groups need: groups know their
// memberships (an installation removed from a group may be added back,
// or rejoin; group_memberships lists each, past_members and past_epochs
// keep the members and epochs of the ones that ended, without their
// secrets), the wire format of their own handshakes, and the state
// snapshot a cached proposal left (state_ordinal: the messages sent
// before it are in it); proposals say who made them and by which
// message; epochs say who committed; messages say in which membership;
// external PSKs are kept until retired. groups is rebuilt (its CHECK on
// joined_via gains 'external'), with foreign keys off for the step (see
// migrate). Every backfill computes what a fresh v3 build of the same
// events holds, so an in-place migration gives the same content.
var migrateV3 = []string{
	`CREATE TABLE groups_v3 (
		group_id                  BLOB PRIMARY KEY,
		ciphersuite               INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		state                     BLOB NOT NULL,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		joined_via                TEXT NOT NULL CHECK (joined_via IN ('created','welcome','external')),
		created_at                INTEGER NOT NULL,
		updated_at                INTEGER NOT NULL,
		last_message_at           INTEGER,
		membership                INTEGER NOT NULL DEFAULT 1,
		handshake_wire_format     INTEGER NOT NULL DEFAULT 0 CHECK (handshake_wire_format IN (0, 1, 2)),
		state_ordinal             INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID`,
	`INSERT INTO groups_v3(group_id, ciphersuite, epoch, state, epoch_authenticator, confirmed_transcript_hash, joined_via, created_at, updated_at, last_message_at)
		SELECT group_id, ciphersuite, epoch, state, epoch_authenticator, confirmed_transcript_hash, joined_via, created_at, updated_at, last_message_at FROM groups`,
	`DROP TABLE groups`,
	`ALTER TABLE groups_v3 RENAME TO groups`,
	`CREATE INDEX groups_by_activity ON groups(last_message_at DESC, group_id)`,
	`CREATE TABLE group_memberships (
		group_id     BLOB NOT NULL REFERENCES groups(group_id),
		membership   INTEGER NOT NULL,
		joined_via   TEXT NOT NULL CHECK (joined_via IN ('created','welcome','external')),
		joined_epoch INTEGER NOT NULL,
		joined_at    INTEGER NOT NULL,
		left_epoch   INTEGER,
		left_how     TEXT CHECK (left_how IN ('removed','left','abandoned')),
		PRIMARY KEY (group_id, membership)
	) WITHOUT ROWID`,
	`INSERT INTO group_memberships(group_id, membership, joined_via, joined_epoch, joined_at, left_epoch, left_how)
		SELECT g.group_id, 1, g.joined_via,
			(SELECT min(e.epoch) FROM epochs e WHERE e.group_id = g.group_id),
			g.created_at, x.removed, CASE WHEN x.removed IS NULL THEN NULL ELSE 'removed' END
		FROM groups g LEFT JOIN (
			SELECT m.group_id AS group_id, max(m.removed_epoch) AS removed FROM members m, installation i
			WHERE m.identity = CAST(i.installation_id AS BLOB) AND m.removed_epoch IS NOT NULL GROUP BY m.group_id
		) x ON x.group_id = g.group_id`,
	`CREATE TABLE past_members (
		group_id      BLOB NOT NULL REFERENCES groups(group_id),
		membership    INTEGER NOT NULL,
		leaf          INTEGER NOT NULL,
		identity      BLOB NOT NULL,
		added_epoch   INTEGER NOT NULL,
		removed_epoch INTEGER,
		PRIMARY KEY (group_id, membership, leaf)
	) WITHOUT ROWID`,
	`CREATE TABLE past_epochs (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		membership                INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_message            BLOB,
		committer                 BLOB,
		own_commit                INTEGER,
		created_at                INTEGER NOT NULL,
		PRIMARY KEY (group_id, membership, epoch)
	) WITHOUT ROWID`,
	`ALTER TABLE epochs ADD COLUMN committer BLOB`,
	`ALTER TABLE epochs ADD COLUMN own_commit INTEGER`,
	`ALTER TABLE messages ADD COLUMN membership INTEGER NOT NULL DEFAULT 1`,
	`ALTER TABLE proposals ADD COLUMN sender BLOB`,
	`ALTER TABLE proposals ADD COLUMN own INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE proposals ADD COLUMN message_id BLOB`,
	`CREATE TABLE external_psks (
		psk_id        BLOB PRIMARY KEY,
		secret        BLOB,
		registered_at INTEGER NOT NULL,
		retired_at    INTEGER
	) WITHOUT ROWID`,
}

// migrateV4 changes no content: it rebuilds the tables whose rows carry a
// group's state or a commit (groups, epochs, past_epochs: hundreds of KiB
// each in a group of a thousand members) as ordinary rowid tables, with
// the same columns and the same primary keys, and the large columns last.
// In a WITHOUT ROWID table the whole row lives in the primary key's
// b-tree, and a key lookup that passes a row whose record overflows reads
// all of it (its overflow pages, each decrypted) to compare keys; so did
// reading any column stored after a large one. Now a lookup walks a small
// index, and a row's small columns come from its first page. The
// digest (columns by name, rows by primary key) is unchanged.
var migrateV4 = []string{
	`CREATE TABLE groups_v4 (
		group_id                  BLOB NOT NULL PRIMARY KEY,
		ciphersuite               INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		joined_via                TEXT NOT NULL CHECK (joined_via IN ('created','welcome','external')),
		created_at                INTEGER NOT NULL,
		updated_at                INTEGER NOT NULL,
		last_message_at           INTEGER,
		membership                INTEGER NOT NULL DEFAULT 1,
		handshake_wire_format     INTEGER NOT NULL DEFAULT 0 CHECK (handshake_wire_format IN (0, 1, 2)),
		state_ordinal             INTEGER NOT NULL DEFAULT 0,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		state                     BLOB NOT NULL
	)`,
	`INSERT INTO groups_v4(group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, membership,
			handshake_wire_format, state_ordinal, epoch_authenticator, confirmed_transcript_hash, state)
		SELECT group_id, ciphersuite, epoch, joined_via, created_at, updated_at, last_message_at, membership,
			handshake_wire_format, state_ordinal, epoch_authenticator, confirmed_transcript_hash, state FROM groups`,
	`DROP TABLE groups`,
	`ALTER TABLE groups_v4 RENAME TO groups`,
	`CREATE INDEX groups_by_activity ON groups(last_message_at DESC, group_id)`,
	`CREATE TABLE epochs_v4 (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		epoch                     INTEGER NOT NULL,
		retired                   INTEGER NOT NULL DEFAULT 0,
		created_at                INTEGER NOT NULL,
		own_commit                INTEGER,
		committer                 BLOB,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_message            BLOB,
		state                     BLOB,
		PRIMARY KEY (group_id, epoch)
	)`,
	`INSERT INTO epochs_v4(group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_message, state)
		SELECT group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_message, state FROM epochs`,
	`DROP TABLE epochs`,
	`ALTER TABLE epochs_v4 RENAME TO epochs`,
	`CREATE TABLE past_epochs_v4 (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		membership                INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		created_at                INTEGER NOT NULL,
		own_commit                INTEGER,
		committer                 BLOB,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_message            BLOB,
		PRIMARY KEY (group_id, membership, epoch)
	)`,
	`INSERT INTO past_epochs_v4(group_id, membership, epoch, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_message)
		SELECT group_id, membership, epoch, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_message FROM past_epochs`,
	`DROP TABLE past_epochs`,
	`ALTER TABLE past_epochs_v4 RENAME TO past_epochs`,
}

// migrateV5 stores a group's state once. Until v4 each commit wrote the
// new state whole twice (groups.state, and the new epoch's row) and later
// rewrote the row to blank it when the epoch retired: at a thousand
// members about 160 encrypted pages per commit. From v5:
//
//   - groups.state is the state the group's current epoch started with,
//     and groups.proposal_state (new) the state the latest cached
//     proposal left, as a delta from it (internal/bytedelta), or NULL;
//   - epochs loses its state column;
//   - epoch_states (new) holds the state each held past epoch started
//     with, as a delta from the state of the next epoch that has one
//     (the next held past epoch, or the current one): a commit adds the
//     delta of the epoch it ends (a few KiB), a retirement deletes the
//     oldest, which nothing depends on.
//
// The deltas are part of the content (the digest covers them), and Diff
// is deterministic, so a rebuild, whatever its batches, writes the same
// bytes as the live read model. migrateV5Backfill turns a v4 file's
// states into that form between migrateV5Pre and migrateV5Post.
var (
	migrateV5Pre = []string{
		`CREATE TABLE epoch_states (
			group_id    BLOB NOT NULL REFERENCES groups(group_id),
			epoch       INTEGER NOT NULL,
			state_delta BLOB NOT NULL,
			PRIMARY KEY (group_id, epoch)
		)`,
		`ALTER TABLE groups ADD COLUMN proposal_state BLOB`,
	}
	// The SQLite of go-sqlcipher (3.33) has no DROP COLUMN: epochs is
	// made again without state, as migrateV4 made it.
	migrateV5Post = []string{
		`CREATE TABLE epochs_v5 (
			group_id                  BLOB NOT NULL REFERENCES groups(group_id),
			epoch                     INTEGER NOT NULL,
			retired                   INTEGER NOT NULL DEFAULT 0,
			created_at                INTEGER NOT NULL,
			own_commit                INTEGER,
			committer                 BLOB,
			epoch_authenticator       BLOB,
			confirmed_transcript_hash BLOB,
			commit_message            BLOB,
			PRIMARY KEY (group_id, epoch)
		)`,
		`INSERT INTO epochs_v5(group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
				confirmed_transcript_hash, commit_message)
			SELECT group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
				confirmed_transcript_hash, commit_message FROM epochs`,
		`DROP TABLE epochs`,
		`ALTER TABLE epochs_v5 RENAME TO epochs`,
	}
)

// migrateV6 changes no content: it indexes each group's held epochs
// (not retired) and the epochs this installation's commits started.
// Every commit asks for the oldest held epoch (the engine, to decide
// which to retire; the projection, to keep epoch_states' chain of
// deltas), and a group's load for the newest own commit (when the member
// last updated its path); without the indexes SQLite read the group's
// epoch rows one by one, retired ones included: a group's commits cost
// more the longer its history (6.7 ms of a processed commit in a group of
// 1,000 members past 1,000 epochs). Held epochs are a handful (the engine
// keeps MaxPastEpochs); the last index holds only epochs recorded
// without their committer (before schema 3), whose commit says it.
var migrateV6 = []string{
	`CREATE INDEX epochs_held ON epochs(group_id, epoch) WHERE retired = 0`,
	`CREATE INDEX epochs_own ON epochs(group_id, epoch) WHERE own_commit = 1`,
	`CREATE INDEX epochs_committer_unknown ON epochs(group_id, epoch) WHERE own_commit IS NULL AND commit_message IS NOT NULL`,
}

// migrateV7 changes no content: it rebuilds, as migrateV4 did groups,
// epochs and past_epochs, the WITHOUT ROWID tables whose rows carry an
// object of unbounded size (an application message's content, a
// delivery's payload, a cached proposal, a key package) as rowid tables,
// with the same columns, primary keys and unique constraints, and the
// large columns last. A WITHOUT ROWID table is a b-tree of whole rows, and
// SQLite compares keys on whole records: an insert or a lookup that
// passes a row whose record overflows its page reads all of it (each
// overflow page decrypted and authenticated) to compare the keys. A
// rebuild of a history of 64 KiB messages read about eight pages for each
// page it wrote, and ran at a third of the speed it does now. The
// digest (columns by name, rows by primary key) is unchanged.
var migrateV7 = []string{
	`CREATE TABLE messages_v7 (
		group_id           BLOB NOT NULL REFERENCES groups(group_id),
		ordinal            INTEGER NOT NULL,
		message_id         BLOB NOT NULL,
		epoch              INTEGER NOT NULL,
		sender_leaf        INTEGER NOT NULL,
		sender             TEXT NOT NULL,
		direction          TEXT NOT NULL CHECK (direction IN ('sent','received')),
		sent_at            INTEGER NOT NULL,
		membership         INTEGER NOT NULL DEFAULT 1,
		authenticated_data BLOB NOT NULL,
		content            BLOB NOT NULL,
		PRIMARY KEY (group_id, ordinal),
		UNIQUE (group_id, message_id)
	)`,
	`INSERT INTO messages_v7(group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, sent_at, membership,
			authenticated_data, content)
		SELECT group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, sent_at, membership,
			authenticated_data, content FROM messages`,
	`DROP TABLE messages`,
	`ALTER TABLE messages_v7 RENAME TO messages`,
	`CREATE TABLE deliveries_v7 (
		recipient       TEXT NOT NULL,
		channel         TEXT NOT NULL,
		seq             INTEGER NOT NULL,
		expires_at      INTEGER,
		idempotency_key TEXT UNIQUE,
		enqueued_at     INTEGER NOT NULL,
		state           TEXT NOT NULL CHECK (state IN ('pending','acked','expired')),
		payload         BLOB,
		PRIMARY KEY (recipient, channel, seq),
		FOREIGN KEY (recipient, channel) REFERENCES delivery_queues(recipient, channel)
	)`,
	`INSERT INTO deliveries_v7(recipient, channel, seq, expires_at, idempotency_key, enqueued_at, state, payload)
		SELECT recipient, channel, seq, expires_at, idempotency_key, enqueued_at, state, payload FROM deliveries`,
	`DROP TABLE deliveries`,
	`ALTER TABLE deliveries_v7 RENAME TO deliveries`,
	`CREATE TABLE proposals_v7 (
		group_id      BLOB NOT NULL REFERENCES groups(group_id),
		proposal_ref  BLOB NOT NULL,
		epoch         INTEGER NOT NULL,
		proposal_type INTEGER NOT NULL,
		sender_leaf   INTEGER NOT NULL,
		own           INTEGER NOT NULL DEFAULT 0,
		sender        BLOB,
		message_id    BLOB,
		proposal      BLOB NOT NULL,
		PRIMARY KEY (group_id, proposal_ref)
	)`,
	`INSERT INTO proposals_v7(group_id, proposal_ref, epoch, proposal_type, sender_leaf, own, sender, message_id, proposal)
		SELECT group_id, proposal_ref, epoch, proposal_type, sender_leaf, own, sender, message_id, proposal FROM proposals`,
	`DROP TABLE proposals`,
	`ALTER TABLE proposals_v7 RENAME TO proposals`,
	`CREATE TABLE key_packages_v7 (
		ref                    BLOB PRIMARY KEY,
		ciphersuite            INTEGER NOT NULL,
		last_resort            INTEGER NOT NULL,
		state                  TEXT NOT NULL CHECK (state IN ('generated','published','consumed','rotated')),
		generated_at           INTEGER NOT NULL,
		published_at           INTEGER,
		destination            TEXT,
		consumed_at            INTEGER,
		consumed_group         BLOB,
		rotated_at             INTEGER,
		replaced_by            BLOB,
		init_private_key       BLOB,
		encryption_private_key BLOB,
		key_package            BLOB NOT NULL
	)`,
	`INSERT INTO key_packages_v7(ref, ciphersuite, last_resort, state, generated_at, published_at, destination, consumed_at,
			consumed_group, rotated_at, replaced_by, init_private_key, encryption_private_key, key_package)
		SELECT ref, ciphersuite, last_resort, state, generated_at, published_at, destination, consumed_at,
			consumed_group, rotated_at, replaced_by, init_private_key, encryption_private_key, key_package FROM key_packages`,
	`DROP TABLE key_packages`,
	`ALTER TABLE key_packages_v7 RENAME TO key_packages`,
}

// migrateV8Pre, migrateV8Backfill and migrateV8Post keep the commit that
// started an epoch whole only where a query reads it, this
// installation's own commits (NewestOwnCommit hands them back for
// resending) and those recorded before schema 3 without their committer
// (whose bytes say who sent them); of another member's commit they keep
// its SHA-256 (commit_sha256), which is all a redelivery check
// (CommitStartedEpoch) needs. Every processed commit wrote its whole
// message, 82 KiB in a group of 1,000 whose parents are blank, 805 KiB at
// 10,000, into every member's read model, and it stayed there for the
// group's history; the event keeps it. The tables are rebuilt so that
// the message stays the last column (v4, v7), the hash before it.
var migrateV8Pre = []string{
	`ALTER TABLE epochs ADD COLUMN commit_sha256 BLOB`,
	`ALTER TABLE past_epochs ADD COLUMN commit_sha256 BLOB`,
}

var migrateV8Post = []string{
	`CREATE TABLE epochs_v8 (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		epoch                     INTEGER NOT NULL,
		retired                   INTEGER NOT NULL DEFAULT 0,
		created_at                INTEGER NOT NULL,
		own_commit                INTEGER,
		committer                 BLOB,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_sha256             BLOB,
		commit_message            BLOB,
		PRIMARY KEY (group_id, epoch)
	)`,
	`INSERT INTO epochs_v8(group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_sha256, commit_message)
		SELECT group_id, epoch, retired, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_sha256, CASE WHEN own_commit = 0 THEN NULL ELSE commit_message END FROM epochs`,
	`DROP TABLE epochs`,
	`ALTER TABLE epochs_v8 RENAME TO epochs`,
	`CREATE INDEX epochs_held ON epochs(group_id, epoch) WHERE retired = 0`,
	`CREATE INDEX epochs_own ON epochs(group_id, epoch) WHERE own_commit = 1`,
	`CREATE INDEX epochs_committer_unknown ON epochs(group_id, epoch) WHERE own_commit IS NULL AND commit_message IS NOT NULL`,
	`CREATE TABLE past_epochs_v8 (
		group_id                  BLOB NOT NULL REFERENCES groups(group_id),
		membership                INTEGER NOT NULL,
		epoch                     INTEGER NOT NULL,
		created_at                INTEGER NOT NULL,
		own_commit                INTEGER,
		committer                 BLOB,
		epoch_authenticator       BLOB,
		confirmed_transcript_hash BLOB,
		commit_sha256             BLOB,
		commit_message            BLOB,
		PRIMARY KEY (group_id, membership, epoch)
	)`,
	`INSERT INTO past_epochs_v8(group_id, membership, epoch, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_sha256, commit_message)
		SELECT group_id, membership, epoch, created_at, own_commit, committer, epoch_authenticator,
			confirmed_transcript_hash, commit_sha256, CASE WHEN own_commit = 0 THEN NULL ELSE commit_message END FROM past_epochs`,
	`DROP TABLE past_epochs`,
	`ALTER TABLE past_epochs_v8 RENAME TO past_epochs`,
}

// migrateV9 keeps the output of an own commit with its epoch (the
// commit message is kept already, v8): whom it is for (recipients), its
// Welcome and the members that is for (welcome_recipients), so that a
// process restarted after a crash that lost the output hands it out
// again (the engine's Installation.OwnCommits); a join by external
// commit keeps its recipients. Only commits whose event says its output
// is recorded (group.commit_applied v5 on, group.external_joined v3 on)
// have them: a fresh build of the same events leaves the rows of older
// events empty, as this step does.
var migrateV9 = []string{
	`ALTER TABLE epochs ADD COLUMN recipients BLOB`,
	`ALTER TABLE epochs ADD COLUMN welcome BLOB`,
	`ALTER TABLE epochs ADD COLUMN welcome_recipients BLOB`,
}

// migrateV10 keeps the output of an own application message: the message
// as encrypted (messages.message) and whom the own messages of an epoch
// are for (message_recipients: the epoch's members other than this
// installation, by leaf, packed as encodeIdentities packs them; once per
// epoch in which it sent one, not per message), so that a process
// restarted after a crash that lost the output hands it out again (the
// engine's Installation.OwnMessages). Only messages whose
// application.message_sent (v2 on) records the message have them: a
// fresh build of the same events leaves the rows of older events empty,
// as this step does.
var migrateV10 = []string{
	`ALTER TABLE messages ADD COLUMN message BLOB`,
	`CREATE TABLE message_recipients (
		group_id   BLOB NOT NULL REFERENCES groups(group_id),
		epoch      INTEGER NOT NULL,
		recipients BLOB NOT NULL,
		PRIMARY KEY (group_id, epoch)
	) WITHOUT ROWID`,
	// The own messages with an output only: OwnMessageOutputs reads no
	// received message's row (nor its content) to find them.
	`CREATE INDEX messages_own_output ON messages(group_id, ordinal) WHERE message IS NOT NULL`,
}

// migrateV11 keeps the generation of the sender's ratchet a received
// application message used (messages.generation), from
// application.message_received v2 on: a member reloading a group's saved
// state marks the messages it received since (MessagesReceivedSinceState),
// so that its ratchets are where they were. NULL for sent messages and
// for received ones whose event does not record it, as a fresh build of
// the same events leaves them. The partial index finds a group's received
// messages of its held epochs without reading the rest of its history.
// groups.sent_deleted counts the own messages since the state that
// retention deleted (DeleteMessagesBefore): a reloaded sender still moves
// its ratchet past them (SentSinceState).
var migrateV11 = []string{
	`ALTER TABLE messages ADD COLUMN generation INTEGER`,
	`ALTER TABLE groups ADD COLUMN sent_deleted INTEGER NOT NULL DEFAULT 0`,
	`CREATE INDEX messages_received_generation ON messages(group_id, epoch, ordinal) WHERE generation IS NOT NULL`,
}

// migrateV12 keeps a group's highest message ordinal handed out
// (groups.last_ordinal), which the next message's ordinal follows and
// retention (DeleteMessagesBefore) never lowers: until schema 12 the next
// ordinal followed the highest row left, so a group whose newest
// messages retention deleted handed their ordinals (the paging cursor)
// out again. The step sets it from the rows, as a fresh build of the
// same events has it where retention deleted none; an ordinal retention
// deleted above the highest row left before the migration cannot be
// known here (docs/read-model.md, v12).
//
// It also keeps, in each epoch's row, the state ordinal of the latest
// state recorded in the epoch (epochs.recorded_ordinal:
// group.state_recorded, which retention records before it deletes
// messages a reload needs; 0 when none): a received message of an epoch
// the group holds is needed by a reload until a state recorded in its
// epoch or a later one covers it (markedSinceRecordedState), and a
// commit no longer makes the group forget that, as its reset of
// state_ordinal to 0 did (a snapshot check that replayed a commit before
// the deletion kept rows the live read model had deleted behind the
// recorded state: retention failed every time it ran again). The step
// leaves 0, which a fresh build of history without group.state_recorded
// has too (docs/read-model.md, v12).
var migrateV12 = []string{
	`ALTER TABLE groups ADD COLUMN last_ordinal INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE epochs ADD COLUMN recorded_ordinal INTEGER NOT NULL DEFAULT 0`,
	`UPDATE groups SET last_ordinal = (SELECT max(m.ordinal) FROM messages m WHERE m.group_id = groups.group_id)
		WHERE EXISTS (SELECT 1 FROM messages m WHERE m.group_id = groups.group_id)`,
}

// migrateV8Backfill records the SHA-256 of every commit message the
// epochs and past epochs hold (SQLite has no SHA-256 of its own), before
// migrateV8Post drops the messages of other members' commits.
func migrateV8Backfill(ctx context.Context, tx *sql.Tx) error {
	for _, table := range []string{"epochs", "past_epochs"} {
		rows, err := tx.QueryContext(ctx, `SELECT rowid, commit_message FROM `+table+` WHERE commit_message IS NOT NULL`)
		if err != nil {
			return err
		}
		sums := map[int64][]byte{}
		for rows.Next() {
			var rowid int64
			var msg []byte
			if err := rows.Scan(&rowid, &msg); err != nil {
				rows.Close()
				return err
			}
			sums[rowid] = commitSHA256(msg)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for rowid, sum := range sums {
			if _, err := tx.ExecContext(ctx, `UPDATE `+table+` SET commit_sha256 = ? WHERE rowid = ?`, sum, rowid); err != nil {
				return err
			}
		}
	}
	return nil
}

// commitSHA256 is what schema 8 keeps of a commit message: its SHA-256.
func commitSHA256(msg []byte) []byte {
	sum := sha256.Sum256(msg)
	return sum[:]
}

// migrateV5Backfill moves a v4 file's states into the v5 form, group by
// group: the current epoch's state into groups.state (with a proposal's
// state, which v4 kept there, as proposal_state), and every held past
// epoch's into epoch_states.
func migrateV5Backfill(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT group_id FROM groups ORDER BY group_id`)
	if err != nil {
		return err
	}
	var ids [][]byte
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := migrateV5Group(ctx, tx, id); err != nil {
			return fmt.Errorf("group %x: %w", id, err)
		}
	}
	return nil
}

func migrateV5Group(ctx context.Context, tx *sql.Tx, id []byte) error {
	var cur uint64
	var latest []byte
	if err := tx.QueryRowContext(ctx, `SELECT epoch, state FROM groups WHERE group_id = ?`, id).Scan(&cur, &latest); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT epoch, state FROM epochs WHERE group_id = ? AND epoch <= ? AND state IS NOT NULL ORDER BY epoch DESC`, id, cur)
	if err != nil {
		return err
	}
	type held struct {
		epoch uint64
		state []byte
	}
	var hs []held
	for rows.Next() {
		var h held
		if err := rows.Scan(&h.epoch, &h.state); err != nil {
			rows.Close()
			return err
		}
		hs = append(hs, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(hs) == 0 || hs[0].epoch != cur {
		// No state of the current epoch: a v4 file keeps none for an
		// ended membership's group only if it was damaged; groups.state
		// stays as it is, with no proposal's state, and past epochs
		// without a current state to start from keep none.
		return nil
	}
	start := hs[0].state
	if !bytes.Equal(start, latest) {
		if _, err := tx.ExecContext(ctx, `UPDATE groups SET state = ?, proposal_state = ? WHERE group_id = ?`,
			start, bytedelta.Diff(start, latest), id); err != nil {
			return err
		}
	}
	next := start
	for _, h := range hs[1:] {
		if _, err := tx.ExecContext(ctx, `INSERT INTO epoch_states(group_id, epoch, state_delta) VALUES (?, ?, ?)`,
			id, h.epoch, bytedelta.Diff(next, h.state)); err != nil {
			return err
		}
		next = h.state
	}
	return nil
}

// init validates or creates the schema on a fresh handle.
func (db *DB) init(ctx context.Context, raw []byte) error {
	conn, err := db.w.Conn(ctx)
	if err != nil {
		return db.classify(err, raw)
	}
	defer conn.Close()
	var appID, userVersion, tables, metaTables int
	row := conn.QueryRowContext(ctx, `SELECT (SELECT application_id FROM pragma_application_id),
		(SELECT user_version FROM pragma_user_version),
		(SELECT count(*) FROM sqlite_master),
		(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'epochlog_meta')`)
	if err := row.Scan(&appID, &userVersion, &tables, &metaTables); err != nil {
		return db.classify(err, raw)
	}
	if tables == 0 && appID == 0 && userVersion == 0 {
		if db.plaintext {
			return fmt.Errorf("%w: empty database", ErrNotOurs)
		}
		if err := db.create(ctx, conn, db.opts.SchemaVersion); err != nil {
			return err
		}
		db.schema = db.opts.SchemaVersion
		return nil
	}
	if appID != applicationID {
		return fmt.Errorf("%w: application_id %#x", ErrNotOurs, appID)
	}
	// Only a missing or foreign marker means another file: a marker that
	// cannot be read is damage (ErrCorrupt), which a rebuild may replace,
	// where it must leave a foreign file alone.
	if metaTables == 0 {
		return fmt.Errorf("%w: missing schema marker (no epochlog_meta table)", ErrNotOurs)
	}
	var marker string
	err = conn.QueryRowContext(ctx, `SELECT value FROM epochlog_meta WHERE name = 'format'`).Scan(&marker)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: missing schema marker", ErrNotOurs)
	case err != nil:
		return fmt.Errorf("read schema marker: %w", db.classify(err, raw))
	case marker != formatMarker:
		return fmt.Errorf("%w: foreign schema marker", ErrNotOurs)
	}
	if userVersion > LatestSchema {
		return fmt.Errorf("%w: file has schema %d, this code knows up to %d", ErrSchemaTooNew, userVersion, LatestSchema)
	}
	if userVersion > db.opts.SchemaVersion && !db.opts.NoMigrate {
		return fmt.Errorf("%w: file has schema %d, %d was requested (downgrade refused)", ErrSchemaTooNew, userVersion, db.opts.SchemaVersion)
	}
	if userVersion < 1 {
		return fmt.Errorf("%w: schema version %d", ErrNotOurs, userVersion)
	}
	db.schema = userVersion
	if userVersion < db.opts.SchemaVersion && !db.opts.NoMigrate {
		if db.plaintext {
			// A migration source is read-only; it is read at its version.
			return nil
		}
		if !db.opts.MigrateWithoutOutputs {
			// Not migrated here where that loses its outputs silently
			// (ErrOutputsNotKept: the engine's open migrates by replay).
			if err := outputsKept(ctx, conn, userVersion, db.opts.SchemaVersion); err != nil {
				if !errors.Is(err, ErrOutputsNotKept) {
					err = db.classify(err, raw)
				}
				return fmt.Errorf("migrating in place to schema %d: %w", db.opts.SchemaVersion, err)
			}
		}
		if err := db.migrate(ctx, conn, db.opts.SchemaVersion); err != nil {
			return err
		}
	}
	if db.opts.CheckIntegrity {
		if err := db.integrity(ctx, conn); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) create(ctx context.Context, conn *sql.Conn, version int) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var stmts []string
	if version == LatestSchema && schemaLatestVersion == LatestSchema && !db.opts.createByMigrations {
		// The latest schema in one pass: the migrations rebuild and
		// rename tables, and every rename makes SQLite parse the whole
		// schema again.
		stmts = append(stmts, schemaLatest...)
	} else {
		stmts = migrationStatements(version)
	}
	stmts = append(stmts,
		fmt.Sprintf("PRAGMA application_id = %d", applicationID),
		fmt.Sprintf("PRAGMA user_version = %d", version),
		`INSERT INTO epochlog_meta(name, value) VALUES ('format', '`+formatMarker+`')`,
		`INSERT INTO checkpoint(id, seq) VALUES (1, 0)`,
	)
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create schema v%d: %w", version, err)
		}
	}
	return tx.Commit()
}

// migrationStatements returns the statements that create schema version
// from schemaV1 and the migrations up to it.
func migrationStatements(version int) []string {
	stmts := append([]string{}, schemaV1...)
	if version >= 2 {
		stmts = append(stmts, migrateV2...)
	}
	if version >= 3 {
		stmts = append(stmts, migrateV3...)
	}
	if version >= 4 {
		stmts = append(stmts, migrateV4...)
	}
	if version >= 5 {
		stmts = append(stmts, migrateV5Pre...)
		stmts = append(stmts, migrateV5Post...)
	}
	if version >= 6 {
		stmts = append(stmts, migrateV6...)
	}
	if version >= 7 {
		stmts = append(stmts, migrateV7...)
	}
	if version >= 8 {
		stmts = append(stmts, migrateV8Pre...)
		stmts = append(stmts, migrateV8Post...)
	}
	if version >= 9 {
		stmts = append(stmts, migrateV9...)
	}
	if version >= 10 {
		stmts = append(stmts, migrateV10...)
	}
	if version >= 11 {
		stmts = append(stmts, migrateV11...)
	}
	if version >= 12 {
		stmts = append(stmts, migrateV12...)
	}
	return stmts
}

// migrate upgrades the schema in place, one version per transaction, with
// user_version updated in the same transaction as the change. A step that
// rebuilds a table other tables reference (v3 and v4 rebuild groups) runs
// with foreign keys off, as SQLite's procedure for such changes says (the
// pragma is a no-op inside a transaction, so it is set on the connection
// around it), then checks every foreign key before it commits.
func (db *DB) migrate(ctx context.Context, conn *sql.Conn, to int) error {
	for v := db.schema + 1; v <= to; v++ {
		var stmts, after []string
		var backfill func(context.Context, *sql.Tx) error
		rebuild := false
		switch v {
		case 2:
			stmts = migrateV2
		case 3:
			stmts, rebuild = migrateV3, true
		case 4:
			stmts, rebuild = migrateV4, true
		case 5:
			stmts, backfill, after, rebuild = migrateV5Pre, migrateV5Backfill, migrateV5Post, true
		case 6:
			stmts = migrateV6
		case 7:
			stmts, rebuild = migrateV7, true
		case 8:
			stmts, backfill, after, rebuild = migrateV8Pre, migrateV8Backfill, migrateV8Post, true
		case 9:
			stmts = migrateV9
		case 10:
			stmts = migrateV10
		case 11:
			stmts = migrateV11
		case 12:
			stmts = migrateV12
		default:
			return fmt.Errorf("no migration to schema %d", v)
		}
		if err := db.migrateStep(ctx, conn, v, stmts, backfill, after, rebuild); err != nil {
			return err
		}
		db.schema = v
	}
	return nil
}

// migrateStep runs one version step in one transaction: stmts, then
// backfill (when not nil: what SQL cannot compute), then after.
func (db *DB) migrateStep(ctx context.Context, conn *sql.Conn, v int, stmts []string, backfill func(context.Context, *sql.Tx) error, after []string, rebuild bool) (err error) {
	if rebuild {
		if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
			return db.wrapErr("migrate", err)
		}
		defer func() {
			if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); ferr != nil && err == nil {
				err = db.wrapErr("migrate", ferr)
			}
		}()
	}
	tx, err := db.beginWriting(ctx, conn, v)
	if err != nil {
		return err
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT user_version FROM pragma_user_version`).Scan(&current); err != nil {
		tx.Rollback()
		return db.wrapErr("migrate", err)
	}
	if current >= v {
		return tx.Rollback()
	}
	run := func(stmts []string) error {
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				tx.Rollback()
				return &FileError{Path: db.path, Op: "migrate", Err: fmt.Errorf("to schema %d: %w", v, err)}
			}
		}
		return nil
	}
	if err := run(stmts); err != nil {
		return err
	}
	if backfill != nil {
		if err := backfill(ctx, tx); err != nil {
			tx.Rollback()
			return &FileError{Path: db.path, Op: "migrate", Err: fmt.Errorf("to schema %d: %w", v, err)}
		}
	}
	if err := run(after); err != nil {
		return err
	}
	if rebuild {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_foreign_key_check`).Scan(&n); err != nil {
			tx.Rollback()
			return db.wrapErr("migrate", err)
		}
		if n > 0 {
			tx.Rollback()
			return &FileError{Path: db.path, Op: "migrate", Err: fmt.Errorf("to schema %d: %w: %d rows break a foreign key", v, ErrCorrupt, n), Hint: hintFor(ErrCorrupt)}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		tx.Rollback()
		return db.wrapErr("migrate", err)
	}
	if err := tx.Commit(); err != nil {
		return db.wrapErr("migrate", err)
	}
	return nil
}

// beginWriting begins migration step v's transaction holding the write
// lock. Another process may open the same file and migrate it meanwhile (a
// rolling upgrade): holding the lock before the step reads the version,
// it reads the one the other writer left, and a step done already is
// skipped, where it would fail (a column added twice) or be done twice.
// The writer's BEGIN is IMMEDIATE, which takes the lock; the delete of
// nothing takes it on a connection whose BEGIN does not. It waits out the
// other writer for up to Options.MigrationWait, in attempts of
// BusyTimeout (SQLite's own wait), checking ctx between them.
func (db *DB) beginWriting(ctx context.Context, conn *sql.Conn, v int) (*sql.Tx, error) {
	start := time.Now()
	for {
		tx, err := conn.BeginTx(ctx, nil)
		if err == nil {
			if _, err = tx.ExecContext(ctx, `DELETE FROM epochlog_meta WHERE 0`); err == nil {
				return tx, nil
			}
			tx.Rollback()
		}
		if sqliteCode(err) != sqlite3.ErrBusy {
			return nil, db.wrapErr("migrate", err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, &FileError{Path: db.path, Op: "migrate", Err: fmt.Errorf("to schema %d: waiting for another connection's write lock: %w", v, cerr)}
		}
		if waited := time.Since(start); waited >= db.opts.MigrationWait {
			return nil, &FileError{Path: db.path, Op: "migrate",
				Err:  fmt.Errorf("to schema %d: %w: another connection held the write lock for %v (%v)", v, ErrMigrationWait, waited.Round(time.Millisecond), err),
				Hint: "another process is migrating or writing this file; open it again when it is done, or raise projections.Options.MigrationWait"}
		}
	}
}

// MigrateInPlace upgrades the read model at path to opts.SchemaVersion
// (default LatestSchema) with the in-place migrations, one transaction per
// version step, checks its integrity (IntegrityCheck) and returns the
// schema versions before and after; a database at the target already is
// only checked. It needs no event stream: replaying into a fresh database
// is the general path, which also works from an unencrypted database.
//
// A missing or empty file is a *FileError wrapping fs.ErrNotExist; an
// unencrypted database (NoKey) is refused, being only a replay source; a
// schema newer than the target is ErrSchemaTooNew. opts.NoMigrate and
// opts.CheckIntegrity are ignored. Each step commits with its version, so
// when a step fails the file is at a version between from and the target,
// never half-way through a step, and to says which.
func MigrateInPlace(ctx context.Context, path string, key Key, opts *Options) (from, to int, err error) {
	if key.IsPlaintext() {
		return 0, 0, &FileError{Path: path, Op: "migrate", Err: errors.New("an unencrypted database is only a replay source"), Hint: "migrate by replay with a new key"}
	}
	if err := mustExist(path, "migrate"); err != nil {
		return 0, 0, err
	}
	lk, err := Lock(path) // the one writer while it migrates
	if err != nil {
		return 0, 0, err
	}
	defer lk.Unlock()
	var o Options
	if opts != nil {
		o = *opts
	}
	o.NoMigrate, o.CheckIntegrity = true, false
	db, err := Open(path, key, &o)
	if err != nil {
		return 0, 0, err
	}
	from = db.SchemaVersion()
	fail := func(to int, err error) (int, int, error) {
		db.Close()
		return from, to, err
	}
	target := db.opts.SchemaVersion
	if from > target {
		return fail(from, &FileError{Path: path, Op: "migrate", Err: fmt.Errorf("%w: file has schema %d, %d was requested (downgrade refused)", ErrSchemaTooNew, from, target), Hint: hintFor(ErrSchemaTooNew)})
	}
	if from < target {
		if err := db.OutputsKept(ctx, target); err != nil {
			return fail(from, &FileError{Path: path, Op: "migrate", Err: err, Hint: hintFor(err)})
		}
	}
	if from < target {
		conn, err := db.w.Conn(ctx)
		if err != nil {
			return fail(from, db.wrapErr("migrate", err))
		}
		err = db.migrate(ctx, conn, target)
		conn.Close()
		if err != nil {
			return fail(db.SchemaVersion(), err)
		}
	}
	to = db.SchemaVersion()
	if err := db.IntegrityCheck(ctx); err != nil {
		return fail(to, err)
	}
	return from, to, db.Close()
}

// OutputsKept says whether the read model kept every recorded output that
// a file of schema would keep: the output of own commits whose event
// records one (schema 9 on), of own application messages whose event
// records the message (schema 10 on), and the generation of received
// messages whose event records it (schema 11 on). It is an ErrOutputsNotKept naming
// the first it did not keep (a file older than that schema that applied
// such events), else nil. Migrated to schema, such a file lacks what a
// fresh build of the same events has.
func (db *DB) OutputsKept(ctx context.Context, schema int) error {
	err := outputsKept(ctx, db.sql, db.schema, schema)
	if err != nil && !errors.Is(err, ErrOutputsNotKept) {
		return db.wrapErr("read meta", err)
	}
	return err
}

// outputsKept is DB.OutputsKept of a file at schema from, read through q.
func outputsKept(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, from, schema int) error {
	for _, c := range []struct {
		since int
		meta  string
		what  string
	}{{9, outputsNotKeptMeta, "own commits"}, {10, messageOutputsNotKeptMeta, "own messages"}, {11, generationsNotKeptMeta, "received messages' generations"}} {
		if schema < c.since || from >= c.since {
			continue
		}
		var first string
		err := q.QueryRowContext(ctx, `SELECT value FROM epochlog_meta WHERE name = ?`, c.meta).Scan(&first)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return err
		}
		return fmt.Errorf("%w: schema %d applied the recorded output of %s from %s on", ErrOutputsNotKept, from, c.what, first)
	}
	return nil
}

// IntegrityCheck verifies every page's HMAC (PRAGMA cipher_integrity_check)
// and the b-tree structure (PRAGMA quick_check), and from schema 12 that
// no group's last_ordinal is below its highest stored message ordinal
// (an *OrdinalError, ErrOrdinalBehind). Damage is ErrCorrupt.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return db.wrapErr("integrity check", err)
	}
	defer conn.Close()
	return db.integrity(ctx, conn)
}

func (db *DB) integrity(ctx context.Context, conn *sql.Conn) error {
	corrupt := func(what string) error {
		return &FileError{Path: db.path, Op: "integrity check", Err: fmt.Errorf("%w: %s", ErrCorrupt, what), Hint: hintFor(ErrCorrupt)}
	}
	if !db.plaintext {
		rows, err := conn.QueryContext(ctx, "PRAGMA cipher_integrity_check")
		if err != nil {
			return db.wrapErr("integrity check", err)
		}
		var problems []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return db.wrapErr("integrity check", err)
			}
			problems = append(problems, s)
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return db.wrapErr("integrity check", err)
		}
		rows.Close()
		if len(problems) > 0 {
			return corrupt(strings.Join(problems, "; "))
		}
	}
	var res string
	if err := conn.QueryRowContext(ctx, "PRAGMA quick_check(1)").Scan(&res); err != nil {
		return db.wrapErr("integrity check", err)
	}
	if res != "ok" {
		return corrupt(res)
	}
	oe, err := db.ordinalsBehind(ctx, conn)
	if err != nil {
		return db.wrapErr("integrity check", err)
	}
	if oe != nil {
		return &FileError{Path: db.path, Op: "integrity check", Err: oe, Hint: hintFor(ErrCorrupt)}
	}
	return nil
}

var errNoRow = errors.New("no such row")
