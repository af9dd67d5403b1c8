package projections

// The projector's machinery: Apply cuts records into batches, each one
// transaction that also moves the checkpoint; an applier checks each
// event's aggregate position and installation and dispatches it to the
// handler of its kind (apply_installation.go, apply_group.go,
// apply_message.go, apply_delivery.go). What a batch learns of the
// aggregates it touches is kept in memory and written once, in flush.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/bytedelta"
)

// Record is one event as read from the stream, with its stream sequence.
type Record struct {
	Seq   uint64
	Event events.Event
}

// Apply applies records in stream order. Records at or below the
// checkpoint are already applied and are no-ops. Up to Options.BatchSize
// records share one transaction, which also moves the checkpoint: a batch
// commits whole or not at all. The first record that cannot be applied
// stops Apply with an *ApplyError naming its stream sequence (wrapping
// ErrCannotApply for refused events); batches before it stay committed.
// A cancelled ctx rolls the current batch back and Apply returns an error
// that errors.Is ctx.Err() (earlier batches stay committed).
func (db *DB) Apply(ctx context.Context, recs []Record) error {
	if db.plaintext {
		return &FileError{Path: db.path, Op: "apply", Err: errors.New("an unencrypted database is a read-only migration source")}
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	for start := 0; start < len(recs); start += db.opts.BatchSize {
		end := min(start+db.opts.BatchSize, len(recs))
		if err := db.applyBatch(ctx, recs[start:end], nil); err != nil {
			return err
		}
	}
	return nil
}

// ApplyIf applies recs as Apply does, but in one transaction whatever
// their number, and commits it only if guard returns nil: guard is called
// once the records' effects are written, before the commit, with the
// checkpoint the transaction started from (what the read model held
// before recs). If it returns an error, nothing is applied and ApplyIf
// returns that error as it is. The guard may wait for work done
// meanwhile: the engine proves that the records it just appended are all
// the read model lacks (a request to the server) while SQLite writes
// them, instead of before.
func (db *DB) ApplyIf(ctx context.Context, recs []Record, guard func(from uint64) error) error {
	if db.plaintext {
		return &FileError{Path: db.path, Op: "apply", Err: errors.New("an unencrypted database is a read-only migration source")}
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	return db.applyBatch(ctx, recs, guard)
}

// prepareStmts prepares, on the writer and outside any transaction (the
// writer has one connection, which a transaction holds), the statements
// the last batch met for the first time.
func (db *DB) prepareStmts(ctx context.Context, queries []string) {
	if db.stmts == nil {
		db.stmts = map[string]*sql.Stmt{}
	}
	for _, q := range queries {
		if _, ok := db.stmts[q]; ok {
			continue
		}
		// A failure here is not an error: the next batch prepares the
		// statement in its transaction again.
		if s, err := db.w.PrepareContext(ctx, q); err == nil {
			db.stmts[q] = s
		}
	}
}

// applyBatch applies recs in one transaction; a non-nil guard must
// return nil for it to commit (ApplyIf).
func (db *DB) applyBatch(ctx context.Context, recs []Record, guard func(from uint64) error) error {
	// The transaction and its statements run under a context without
	// cancellation: the driver starts a goroutine per statement to watch a
	// cancellable one, which slowed replay by half. A transaction begun
	// under ctx would also be rolled back by database/sql the moment ctx
	// ends, under the applier's feet, and the next statement would fail
	// as if its event could not be applied. Cancellation is checked
	// between events instead, and before the commit; it rolls the batch
	// back and returns the context's error.
	nctx := context.WithoutCancel(ctx)
	if err := ctx.Err(); err != nil {
		return db.wrapErr("apply", err)
	}
	tx, err := db.w.BeginTx(nctx, nil)
	if err != nil {
		return db.wrapErr("apply", err)
	}
	a := newApplier(db, nctx, tx)
	defer func() {
		a.close()
		tx.Rollback() // after Commit, a no-op
		if len(a.unprepared) > 0 && reuseStmts() {
			db.prepareStmts(nctx, a.unprepared)
		}
	}()
	var cp uint64
	if err := tx.QueryRowContext(nctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&cp); err != nil {
		return db.wrapErr("apply", err)
	}
	last := cp
	for _, r := range recs {
		if r.Seq <= cp {
			continue // applied before: exactly once
		}
		if err := ctx.Err(); err != nil {
			return db.wrapErr("apply", err)
		}
		kind := ""
		if r.Event.Body != nil {
			kind = string(r.Event.Body.Kind())
		}
		if r.Seq <= last {
			return &ApplyError{Seq: r.Seq, Kind: kind, Op: "order", Err: cannot("stream sequence %d after %d: records out of order", r.Seq, last)}
		}
		if err := a.apply(r); err != nil {
			var ae *ApplyError
			if errors.As(err, &ae) {
				return err
			}
			if code := sqliteCode(err); code == sqlite3.ErrCorrupt || code == sqlite3.ErrNotADB {
				err = fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			return &ApplyError{Seq: r.Seq, Kind: kind, Op: "apply", Err: err}
		}
		last = r.Seq
	}
	if last == cp {
		if guard != nil {
			return guard(cp)
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return db.wrapErr("apply", err)
	}
	if err := a.flush(); err != nil {
		return &ApplyError{Seq: last, Op: "flush batch", Err: err}
	}
	if _, err := tx.ExecContext(nctx, `UPDATE checkpoint SET seq = ? WHERE id = 1`, last); err != nil {
		return db.wrapErr("apply", err)
	}
	if guard != nil {
		if err := guard(cp); err != nil {
			return err // rolled back by the deferred Rollback
		}
	}
	if err := tx.Commit(); err != nil {
		return db.wrapErr("apply", err)
	}
	db.publishStarts(a.starts)
	db.committed()
	return nil
}

// publishStarts records what a committed batch learnt of its groups'
// epoch starts (DB.starts); called with applyMu held.
func (db *DB) publishStarts(starts map[string]epochStart) {
	if db.starts == nil {
		db.starts = map[string]epochStart{}
	}
	for id, s := range starts {
		if s.known {
			db.starts[id] = s
		} else {
			delete(db.starts, id)
		}
	}
}

// Checkpoint returns the stream sequence of the last applied event (0 for
// an empty read model).
func (db *DB) Checkpoint(ctx context.Context) (uint64, error) {
	var cp uint64
	err := db.sql.QueryRowContext(ctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&cp)
	return cp, db.wrapErr("checkpoint", err)
}

// Rebase sets the checkpoint of a read model imported from a snapshot to
// seq, a sequence of another stream, where the same history continues
// (a re-seal carries a snapshot into a new stream, where its checkpoint
// event has another sequence). Nothing else changes: the content digest
// does not cover the checkpoint. The read model must hold an installation.
func (db *DB) Rebase(ctx context.Context, seq uint64) error {
	if seq == 0 {
		return &FileError{Path: db.path, Op: "rebase", Err: errors.New("checkpoint 0")}
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	res, err := db.w.ExecContext(ctx, `UPDATE checkpoint SET seq = ? WHERE id = 1 AND seq > 0`, seq)
	if err != nil {
		return db.wrapErr("rebase", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return &FileError{Path: db.path, Op: "rebase", Err: errors.New("the read model holds no history to rebase")}
	}
	return nil
}

// applier applies events inside one transaction, preparing each statement
// once per transaction. Hot per-event bookkeeping (aggregate positions, the
// installation id, message ordinals, groups' last message time) is kept in
// memory for the batch and written once before the checkpoint, in the same
// transaction; a failed batch discards it with the rollback.
type applier struct {
	db    *DB
	ctx   context.Context
	tx    *sql.Tx
	stmts map[string]*sql.Stmt // this transaction's handles
	// unprepared are the queries prepared for this transaction only; they
	// join db.stmts once the transaction is over.
	unprepared []string

	instLoaded bool
	inst       string // "" until installation.created
	// pos holds the aggregates' positions; every entry is written back
	// in flush (an aggregate is in the map only if the batch touched it).
	pos    map[events.Aggregate]uint64
	groups map[string]*batchGroup // group id -> what the batch knows
	queues map[queueID]*queueState
	// epochOrder lists the epochs the batch's commits created, in order:
	// flush inserts their rows (batchGroup.newEpochs).
	epochOrder []epochKey
	// starts are the batch's changes to DB.starts, published once it
	// commits.
	starts map[string]epochStart
}

func newApplier(db *DB, ctx context.Context, tx *sql.Tx) *applier {
	return &applier{db: db, ctx: ctx, tx: tx, stmts: map[string]*sql.Stmt{},
		pos: map[events.Aggregate]uint64{}, groups: map[string]*batchGroup{}, queues: map[queueID]*queueState{},
		starts: map[string]epochStart{}}
}

// flush writes the batch's in-memory bookkeeping.
func (a *applier) flush() error {
	for agg, pos := range a.pos {
		if _, err := a.exec(`INSERT INTO aggregate_positions(installation, agg_type, agg_id, position) VALUES (?, ?, ?, ?)
			ON CONFLICT(installation, agg_type, agg_id) DO UPDATE SET position = excluded.position`,
			string(agg.Installation), string(agg.Type), agg.ID, pos); err != nil {
			return err
		}
	}
	for id, q := range a.queues {
		if !q.dirty {
			continue
		}
		if _, err := a.exec(`UPDATE delivery_queues SET last_seq = ?, acked_seq = ? WHERE recipient = ? AND channel = ?`,
			q.LastSeq, q.AckedUpTo, id.recipient, id.channel); err != nil {
			return err
		}
	}
	for id, g := range a.groups {
		if err := a.flushGroup(id, g); err != nil {
			return err
		}
	}
	return nil
}

// flushGroup writes what the batch holds for one group: the epochs its
// commits created (in order), its newest row, the state a proposal left,
// its last message time. It is done once per batch, or before the
// group's membership changes (the rows belong to the old one).
func (a *applier) flushGroup(id string, g *batchGroup) error {
	kept := a.epochOrder[:0]
	for _, k := range a.epochOrder {
		if k.group != id {
			kept = append(kept, k)
			continue
		}
		e := g.newEpochs[k.epoch]
		var err error
		if a.db.schema >= 9 && e.output != nil { // an own commit's output
			o := e.output
			_, err = a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_sha256, commit_message, created_at, retired, committer, own_commit,
				recipients, welcome, welcome_recipients)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), e.commitSum(), e.commitKept(), e.createdAt, e.retired,
				nullBytes(e.committer), e.own, o.recipients, nullBytes(o.welcome), nullBytes(o.welcomeTo))
		} else if a.db.schema >= 8 { // of another member's commit, its hash only
			_, err = a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_sha256, commit_message, created_at, retired, committer, own_commit)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), e.commitSum(), e.commitKept(), e.createdAt, e.retired,
				nullBytes(e.committer), e.own)
		} else if a.db.schema >= 5 { // the state is the group's, or in epoch_states
			_, err = a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, created_at, retired, committer, own_commit)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), nullBytes(e.commit), e.createdAt, e.retired,
				nullBytes(e.committer), e.own)
		} else if a.db.schema >= 3 {
			_, err = a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, state, created_at, retired, committer, own_commit)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), nullBytes(e.commit), nullBytes(e.state), e.createdAt, e.retired,
				nullBytes(e.committer), e.own)
		} else {
			_, err = a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, state, created_at, retired)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), nullBytes(e.commit), nullBytes(e.state), e.createdAt, e.retired)
		}
		if err != nil {
			return err
		}
		if e.recordedOrdinal != 0 {
			if _, err := a.exec(`UPDATE epochs SET recorded_ordinal = ? WHERE group_id = ? AND epoch = ?`, e.recordedOrdinal, []byte(k.group), k.epoch); err != nil {
				return err
			}
		}
	}
	a.epochOrder = kept
	if err := a.flushPast(id, g); err != nil {
		return err
	}
	g.newEpochs = map[uint64]*epochRow{}
	if r := g.row; r != nil {
		var err error
		if a.db.schema >= 5 {
			_, err = a.exec(`UPDATE groups SET epoch = ?, state = ?, proposal_state = NULL, epoch_authenticator = ?, confirmed_transcript_hash = ?, updated_at = ?, state_ordinal = 0`+a.sentDeletedReset()+` WHERE group_id = ?`,
				r.epoch, r.state, nullBytes(r.auth), nullBytes(r.cth), r.updatedAt, []byte(id))
		} else if a.db.schema >= 3 {
			_, err = a.exec(`UPDATE groups SET epoch = ?, state = ?, epoch_authenticator = ?, confirmed_transcript_hash = ?, updated_at = ?, state_ordinal = 0 WHERE group_id = ?`,
				r.epoch, r.state, nullBytes(r.auth), nullBytes(r.cth), r.updatedAt, []byte(id))
		} else {
			_, err = a.exec(`UPDATE groups SET epoch = ?, state = ?, epoch_authenticator = ?, confirmed_transcript_hash = ?, updated_at = ? WHERE group_id = ?`,
				r.epoch, r.state, nullBytes(r.auth), nullBytes(r.cth), r.updatedAt, []byte(id))
		}
		if err != nil {
			return err
		}
		g.row = nil
	}
	if sn := g.snapshot; sn != nil {
		q, st := `UPDATE groups SET state = ?, state_ordinal = ? WHERE group_id = ?`, sn.state
		if a.db.schema >= 5 {
			q, st = `UPDATE groups SET proposal_state = ?, state_ordinal = ?`+a.sentDeletedReset()+` WHERE group_id = ?`, bytedelta.Diff(sn.base, sn.state)
		}
		if _, err := a.exec(q, st, sn.ordinal, []byte(id)); err != nil {
			return err
		}
		g.snapshot = nil
	}
	switch {
	case g.hasLastMsg && g.ordinalDirty: // one statement for a batch's messages
		t := g.lastMsg
		if _, err := a.exec(`UPDATE groups SET last_message_at = max(coalesce(last_message_at, ?), ?), last_ordinal = ? WHERE group_id = ?`, t, t, g.ordinal, []byte(id)); err != nil {
			return err
		}
	case g.hasLastMsg:
		t := g.lastMsg
		if _, err := a.exec(`UPDATE groups SET last_message_at = max(coalesce(last_message_at, ?), ?) WHERE group_id = ?`, t, t, []byte(id)); err != nil {
			return err
		}
	case g.ordinalDirty:
		if _, err := a.exec(`UPDATE groups SET last_ordinal = ? WHERE group_id = ?`, g.ordinal, []byte(id)); err != nil {
			return err
		}
	}
	g.hasLastMsg, g.ordinalDirty = false, false
	return nil
}

// flushPast writes, from schema v5, the state of each epoch a commit of
// the batch ended and that is still held: as a delta from the state of
// the epoch after it, also of the batch (an older held epoch starts from
// it, and epochs retire oldest first: retireEpochs sees to any other
// order).
func (a *applier) flushPast(id string, g *batchGroup) error {
	for _, e := range slices.Sorted(maps.Keys(g.past)) {
		var next []byte
		if row, ok := g.newEpochs[e+1]; ok && !row.retired {
			next = row.state
		}
		if next == nil {
			return fmt.Errorf("projections: group %x: the state of epoch %d, held, has no state of epoch %d to start from in the batch", []byte(id), e, e+1)
		}
		if _, err := a.exec(`INSERT INTO epoch_states(group_id, epoch, state_delta) VALUES (?, ?, ?)`,
			[]byte(id), e, bytedelta.Diff(next, g.past[e])); err != nil {
			return err
		}
	}
	clear(g.past)
	return nil
}

func (a *applier) close() {
	for _, s := range a.stmts {
		s.Close()
	}
}

func (a *applier) stmt(q string) (*sql.Stmt, error) {
	if s, ok := a.stmts[q]; ok {
		return s, nil
	}
	var s *sql.Stmt
	if shared, ok := a.db.stmts[q]; ok && reuseStmts() {
		s = a.tx.StmtContext(a.ctx, shared)
	} else {
		var err error
		if s, err = a.tx.PrepareContext(a.ctx, q); err != nil {
			return nil, err
		}
		a.unprepared = append(a.unprepared, q)
	}
	a.stmts[q] = s
	return s, nil
}

// exec runs a write; constraint violations mean the event contradicts the
// model, so they become ErrCannotApply.
func (a *applier) exec(q string, args ...any) (sql.Result, error) {
	s, err := a.stmt(q)
	if err != nil {
		return nil, err
	}
	res, err := s.ExecContext(a.ctx, args...)
	if sqliteCode(err) == sqlite3.ErrConstraint {
		return nil, cannot("%v", err)
	}
	return res, err
}

// query runs a read of several rows.
func (a *applier) query(q string, args ...any) (*sql.Rows, error) {
	s, err := a.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(a.ctx, args...)
}

// query1 scans one row; a missing row is errNoRow.
func (a *applier) query1(q string, args []any, dest ...any) error {
	s, err := a.stmt(q)
	if err != nil {
		return err
	}
	err = s.QueryRowContext(a.ctx, args...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return errNoRow
	}
	return err
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func (a *applier) apply(r Record) error {
	ev := r.Event
	if ev.Body == nil {
		return &ApplyError{Seq: r.Seq, Op: "decode", Err: cannot("event without body")}
	}
	kind := string(ev.Body.Kind())
	fail := func(op string, err error) error {
		return &ApplyError{Seq: r.Seq, Kind: kind, Op: op, Err: err}
	}
	if err := ev.Aggregate.Validate(); err != nil {
		return fail("aggregate", fmt.Errorf("%w: %v", ErrCannotApply, err))
	}
	if err := a.checkPosition(ev); err != nil {
		return fail("position", err)
	}
	if err := a.checkInstallation(ev); err != nil {
		return fail("installation", err)
	}
	h, ok := handlers[ev.Body.Kind()]
	if !ok {
		return fail("dispatch", cannot("unknown event kind %q", kind))
	}
	if err := h(a, ev); err != nil {
		return fail(kind, err)
	}
	return nil
}

// checkPosition refuses gaps and reordering within an aggregate: position
// must be exactly one more than the last applied one.
func (a *applier) checkPosition(ev events.Event) error {
	agg := ev.Aggregate
	pos, ok := a.pos[agg]
	if !ok {
		err := a.query1(`SELECT position FROM aggregate_positions WHERE installation = ? AND agg_type = ? AND agg_id = ?`,
			[]any{string(agg.Installation), string(agg.Type), agg.ID}, &pos)
		if err != nil && !errors.Is(err, errNoRow) {
			return err
		}
	}
	if ev.Position != pos+1 {
		return cannot("aggregate %s/%s/%q at position %d, event has position %d", agg.Installation, agg.Type, agg.ID, pos, ev.Position)
	}
	a.pos[agg] = ev.Position
	return nil
}

// checkInstallation keeps one installation per read model.
func (a *applier) checkInstallation(ev events.Event) error {
	if !a.instLoaded {
		err := a.query1(`SELECT installation_id FROM installation WHERE id = 1`, nil, &a.inst)
		if err != nil && !errors.Is(err, errNoRow) {
			return err
		}
		a.instLoaded = true
	}
	if a.inst != "" && string(ev.Aggregate.Installation) != a.inst {
		return cannot("event of installation %q in the read model of %q", ev.Aggregate.Installation, a.inst)
	}
	return nil
}

type handler func(a *applier, ev events.Event) error

var handlers map[events.Kind]handler

func init() {
	handlers = map[events.Kind]handler{
		events.KindInstallationCreated:        applyInstallationCreated,
		events.KindExternalPSKRegistered:      applyExternalPSKRegistered,
		events.KindExternalPSKRetired:         applyExternalPSKRetired,
		events.KindKeyPackageGenerated:        applyKeyPackageGenerated,
		events.KindKeyPackagePublished:        applyKeyPackagePublished,
		events.KindKeyPackageConsumed:         applyKeyPackageConsumed,
		events.KindKeyPackageRotated:          applyKeyPackageRotated,
		events.KindGroupCreated:               applyGroupCreated,
		events.KindProposalStaged:             applyProposalStaged,
		events.KindCommitApplied:              applyCommitApplied,
		events.KindWelcomeProcessed:           applyWelcomeProcessed,
		events.KindExternalJoined:             applyExternalJoined,
		events.KindMemberAdded:                applyMemberAdded,
		events.KindMemberRemoved:              applyMemberRemoved,
		events.KindEpochSecretsRetired:        applyEpochSecretsRetired,
		events.KindHandshakeFormatSet:         applyHandshakeFormatSet,
		events.KindStateRecorded:              applyStateRecorded,
		events.KindApplicationMessageSent:     applyMessageSent,
		events.KindApplicationMessageReceived: applyMessageReceived,
		events.KindDeliveryEnqueued:           applyDeliveryEnqueued,
		events.KindDeliveryAcknowledged:       applyDeliveryAcknowledged,
		events.KindDeliveryExpired:            applyDeliveryExpired,
	}
}

// body asserts the body type; a mismatch means the catalogue and the
// handler table disagree, which must stop the projector too.
func body[T events.Body](ev events.Event) (T, error) {
	b, ok := events.BodyAs[T](ev)
	if !ok {
		return b, cannot("body of kind %s has type %T", ev.Body.Kind(), ev.Body)
	}
	return b, nil
}

// sentDeletedReset is what an UPDATE that records a group's state (and
// its state_ordinal) adds from schema 11: the own messages retention
// deleted since the state before are behind this one.
func (a *applier) sentDeletedReset() string {
	if a.db.schema >= 11 {
		return ", sent_deleted = 0"
	}
	return ""
}
