package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"

	"github.com/epochlog/epochlog/events"
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
		if err := db.applyBatch(ctx, recs[start:end]); err != nil {
			return err
		}
	}
	return nil
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

func (db *DB) applyBatch(ctx context.Context, recs []Record) error {
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
	if err := tx.Commit(); err != nil {
		return db.wrapErr("apply", err)
	}
	return nil
}

// Checkpoint returns the stream sequence of the last applied event (0 for
// an empty read model).
func (db *DB) Checkpoint(ctx context.Context) (uint64, error) {
	var cp uint64
	err := db.sql.QueryRowContext(ctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&cp)
	return cp, db.wrapErr("checkpoint", err)
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
}

// batchGroup is one group as the batch sees it, loaded lazily: one map
// lookup per event instead of one per fact. Zero "known" flags mean the
// fact has not been read from the database yet.
type batchGroup struct {
	epochKnown bool
	epoch      uint64          // current epoch
	held       map[uint64]bool // epoch -> secrets held, as read or set

	ordinalKnown bool
	ordinal      int64 // highest message ordinal

	hasLastMsg bool
	lastMsg    int64 // latest message time (schema v2), written in flush

	proposalsKnown, hasProposals bool // whether staged proposals may exist

	// The commits of the batch: the group's newest row and the new
	// epochs' rows, written in flush. An epoch retired within the same
	// batch is then inserted without its state, so replay never writes
	// the large state blobs it would blank a few events later.
	row       *groupRow
	newEpochs map[uint64]*epochRow
}

// group returns the batch's view of a group (created empty on first use).
func (a *applier) group(id []byte) *batchGroup {
	if g, ok := a.groups[string(id)]; ok {
		return g
	}
	g := &batchGroup{held: map[uint64]bool{}, newEpochs: map[uint64]*epochRow{}}
	a.groups[string(id)] = g
	return g
}

type groupRow struct {
	epoch     uint64
	state     []byte
	auth, cth []byte
	updatedAt int64
}

type epochRow struct {
	auth, cth, commit, state []byte
	createdAt                int64
	retired                  bool
}

type queueID struct{ recipient, channel string }

// queueState is a delivery queue's row as the batch sees it; dirty rows
// are written back once, in flush.
type queueState struct {
	last, acked   uint64
	exists, dirty bool
}

// queue loads (once per batch) the state of a delivery queue.
func (a *applier) queue(recipient events.InstallationID, channel string) (*queueState, error) {
	id := queueID{string(recipient), channel}
	if q, ok := a.queues[id]; ok {
		return q, nil
	}
	q := &queueState{exists: true}
	err := a.query1(`SELECT last_seq, acked_seq FROM delivery_queues WHERE recipient = ? AND channel = ?`, []any{id.recipient, id.channel}, &q.last, &q.acked)
	if errors.Is(err, errNoRow) {
		q.exists = false
	} else if err != nil {
		return nil, err
	}
	a.queues[id] = q
	return q, nil
}

type epochKey struct {
	group string
	epoch uint64
}

func newApplier(db *DB, ctx context.Context, tx *sql.Tx) *applier {
	return &applier{db: db, ctx: ctx, tx: tx, stmts: map[string]*sql.Stmt{},
		pos: map[events.Aggregate]uint64{}, groups: map[string]*batchGroup{}, queues: map[queueID]*queueState{}}
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
	for _, k := range a.epochOrder {
		e := a.groups[k.group].newEpochs[k.epoch]
		if _, err := a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, confirmed_transcript_hash, commit_message, state, created_at, retired)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, []byte(k.group), k.epoch, nullBytes(e.auth), nullBytes(e.cth), nullBytes(e.commit), nullBytes(e.state), e.createdAt, e.retired); err != nil {
			return err
		}
	}
	for id, q := range a.queues {
		if !q.dirty {
			continue
		}
		if _, err := a.exec(`UPDATE delivery_queues SET last_seq = ?, acked_seq = ? WHERE recipient = ? AND channel = ?`,
			q.last, q.acked, id.recipient, id.channel); err != nil {
			return err
		}
	}
	for id, g := range a.groups {
		if r := g.row; r != nil {
			if _, err := a.exec(`UPDATE groups SET epoch = ?, state = ?, epoch_authenticator = ?, confirmed_transcript_hash = ?, updated_at = ? WHERE group_id = ?`,
				r.epoch, r.state, nullBytes(r.auth), nullBytes(r.cth), r.updatedAt, []byte(id)); err != nil {
				return err
			}
		}
		if g.hasLastMsg {
			t := g.lastMsg
			if _, err := a.exec(`UPDATE groups SET last_message_at = max(coalesce(last_message_at, ?), ?) WHERE group_id = ?`, t, t, []byte(id)); err != nil {
				return err
			}
		}
	}
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
		events.KindKeyPackageGenerated:        applyKeyPackageGenerated,
		events.KindKeyPackagePublished:        applyKeyPackagePublished,
		events.KindKeyPackageConsumed:         applyKeyPackageConsumed,
		events.KindKeyPackageRotated:          applyKeyPackageRotated,
		events.KindGroupCreated:               applyGroupCreated,
		events.KindProposalStaged:             applyProposalStaged,
		events.KindCommitApplied:              applyCommitApplied,
		events.KindWelcomeProcessed:           applyWelcomeProcessed,
		events.KindMemberAdded:                applyMemberAdded,
		events.KindMemberRemoved:              applyMemberRemoved,
		events.KindEpochSecretsRetired:        applyEpochSecretsRetired,
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
	b, ok := ev.Body.(T)
	if !ok {
		if p, ok := any(ev.Body).(*T); ok && p != nil {
			return *p, nil
		}
		var zero T
		return zero, cannot("body of kind %s has type %T", ev.Body.Kind(), ev.Body)
	}
	return b, nil
}

func applyInstallationCreated(a *applier, ev events.Event) error {
	b, err := body[events.InstallationCreated](ev)
	if err != nil {
		return err
	}
	if b.Installation != ev.Aggregate.Installation {
		return cannot("installation %q created on the aggregate of %q", b.Installation, ev.Aggregate.Installation)
	}
	var n int
	if err := a.query1(`SELECT count(*) FROM installation`, nil, &n); err != nil {
		return err
	}
	if n != 0 {
		return cannot("installation already created")
	}
	_, err = a.exec(`INSERT INTO installation(id, installation_id, ciphersuite, signature_public_key, signature_private_key, credential, created_at)
		VALUES (1, ?, ?, ?, ?, ?, ?)`,
		string(b.Installation), int64(b.Ciphersuite), b.SignaturePublicKey, nullBytes(b.SignaturePrivateKey), b.Credential, nanos(ev.Time))
	if err == nil {
		a.inst, a.instLoaded = string(b.Installation), true
	}
	return err
}

func (a *applier) keyPackageState(ref []byte) (state string, lastResort bool, err error) {
	err = a.query1(`SELECT state, last_resort FROM key_packages WHERE ref = ?`, []any{ref}, &state, &lastResort)
	if errors.Is(err, errNoRow) {
		return "", false, cannot("unknown key package %x", ref)
	}
	return state, lastResort, err
}

func applyKeyPackageGenerated(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageGenerated](ev)
	if err != nil {
		return err
	}
	if len(b.Ref) == 0 {
		return cannot("key package without ref")
	}
	_, err = a.exec(`INSERT INTO key_packages(ref, ciphersuite, key_package, last_resort, state, init_private_key, encryption_private_key, generated_at)
		VALUES (?, ?, ?, ?, 'generated', ?, ?, ?)`,
		b.Ref, int64(b.Ciphersuite), b.KeyPackage, b.LastResort, nullBytes(b.InitPrivateKey), nullBytes(b.EncryptionPrivateKey), nanos(ev.Time))
	return err
}

func applyKeyPackagePublished(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackagePublished](ev)
	if err != nil {
		return err
	}
	state, _, err := a.keyPackageState(b.Ref)
	if err != nil {
		return err
	}
	if state != "generated" {
		return cannot("publish key package %x in state %s", b.Ref, state)
	}
	_, err = a.exec(`UPDATE key_packages SET state = 'published', published_at = ?, destination = ? WHERE ref = ?`,
		nanos(ev.Time), b.Destination, b.Ref)
	return err
}

func applyKeyPackageConsumed(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageConsumed](ev)
	if err != nil {
		return err
	}
	state, lastResort, err := a.keyPackageState(b.Ref)
	if err != nil {
		return err
	}
	if lastResort != b.LastResort {
		return cannot("key package %x: last_resort %v recorded, %v in consume", b.Ref, lastResort, b.LastResort)
	}
	switch {
	case state == "generated" || state == "published":
	case state == "consumed" && lastResort: // last-resort packages may be used again until rotated
	default:
		return cannot("consume key package %x in state %s", b.Ref, state)
	}
	if lastResort {
		_, err = a.exec(`UPDATE key_packages SET state = 'consumed', consumed_at = ?, consumed_group = ? WHERE ref = ?`,
			nanos(ev.Time), nullBytes(b.GroupID), b.Ref)
		return err
	}
	// A one-time key package's private keys go with its use (forward secrecy).
	_, err = a.exec(`UPDATE key_packages SET state = 'consumed', consumed_at = ?, consumed_group = ?,
		init_private_key = NULL, encryption_private_key = NULL WHERE ref = ?`,
		nanos(ev.Time), nullBytes(b.GroupID), b.Ref)
	return err
}

func applyKeyPackageRotated(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageRotated](ev)
	if err != nil {
		return err
	}
	state, _, err := a.keyPackageState(b.Ref)
	if err != nil {
		return err
	}
	if state == "rotated" {
		return cannot("key package %x rotated twice", b.Ref)
	}
	if _, err := a.exec(`UPDATE key_packages SET state = 'rotated', rotated_at = ?, replaced_by = ? WHERE ref = ?`,
		nanos(ev.Time), nullBytes(b.ReplacedBy), b.Ref); err != nil {
		return err
	}
	// At most two HPKE key pairs: the current package and the one just
	// rotated out (a Welcome in flight may still use it). Every package
	// rotated earlier loses its private keys now.
	_, err = a.exec(`UPDATE key_packages SET init_private_key = NULL, encryption_private_key = NULL
		WHERE state = 'rotated' AND ref <> ? AND (init_private_key IS NOT NULL OR encryption_private_key IS NOT NULL)`, b.Ref)
	return err
}

func (a *applier) groupEpoch(id []byte) (uint64, error) {
	return a.loadEpoch(id, a.group(id))
}

func (a *applier) loadEpoch(id []byte, g *batchGroup) (uint64, error) {
	if g.epochKnown {
		return g.epoch, nil
	}
	err := a.query1(`SELECT epoch FROM groups WHERE group_id = ?`, []any{id}, &g.epoch)
	if errors.Is(err, errNoRow) {
		return 0, cannot("unknown group %x", id)
	}
	g.epochKnown = err == nil
	return g.epoch, err
}

// epochHeld reports whether the group's epoch exists with its secrets.
func (a *applier) epochHeld(id []byte, g *batchGroup, epoch uint64) (bool, error) {
	if e, ok := g.newEpochs[epoch]; ok {
		return !e.retired, nil
	}
	if h, ok := g.held[epoch]; ok {
		return h, nil
	}
	var retired bool
	err := a.query1(`SELECT retired FROM epochs WHERE group_id = ? AND epoch = ?`, []any{id, epoch}, &retired)
	if errors.Is(err, errNoRow) {
		g.held[epoch] = false
		return false, nil
	}
	if err != nil {
		return false, err
	}
	g.held[epoch] = !retired
	return !retired, nil
}

func (a *applier) newGroup(id []byte, suite uint16, epoch uint64, state []byte, auth []byte, via string, t time.Time) error {
	if len(id) == 0 {
		return cannot("group without id")
	}
	var n int
	if err := a.query1(`SELECT count(*) FROM groups WHERE group_id = ?`, []any{id}, &n); err != nil {
		return err
	}
	if n != 0 {
		return cannot("group %x exists", id)
	}
	if _, err := a.exec(`INSERT INTO groups(group_id, ciphersuite, epoch, state, epoch_authenticator, joined_via, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, int64(suite), epoch, state, nullBytes(auth), via, nanos(t), nanos(t)); err != nil {
		return err
	}
	_, err := a.exec(`INSERT INTO epochs(group_id, epoch, epoch_authenticator, state, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, epoch, nullBytes(auth), state, nanos(t))
	if err == nil {
		g := a.group(id)
		g.epoch, g.epochKnown = epoch, true
		g.held[epoch] = true
	}
	return err
}

func applyGroupCreated(a *applier, ev events.Event) error {
	b, err := body[events.GroupCreated](ev)
	if err != nil {
		return err
	}
	return a.newGroup(b.GroupID, b.Ciphersuite, b.Epoch, b.State, nil, "created", ev.Time)
}

func applyWelcomeProcessed(a *applier, ev events.Event) error {
	b, err := body[events.WelcomeProcessed](ev)
	if err != nil {
		return err
	}
	var suite uint16
	if len(b.KeyPackageRef) > 0 {
		if err := a.query1(`SELECT ciphersuite FROM key_packages WHERE ref = ?`, []any{b.KeyPackageRef}, &suite); err != nil {
			if errors.Is(err, errNoRow) {
				return cannot("welcome for unknown key package %x", b.KeyPackageRef)
			}
			return err
		}
	} else {
		if err := a.query1(`SELECT ciphersuite FROM installation WHERE id = 1`, nil, &suite); err != nil && !errors.Is(err, errNoRow) {
			return err
		}
	}
	return a.newGroup(b.GroupID, suite, b.Epoch, b.State, b.EpochAuthenticator, "welcome", ev.Time)
}

func applyProposalStaged(a *applier, ev events.Event) error {
	b, err := body[events.ProposalStaged](ev)
	if err != nil {
		return err
	}
	epoch, err := a.groupEpoch(b.GroupID)
	if err != nil {
		return err
	}
	if b.Epoch != epoch {
		return cannot("proposal for epoch %d, group %x is at %d", b.Epoch, b.GroupID, epoch)
	}
	_, err = a.exec(`INSERT INTO proposals(group_id, proposal_ref, epoch, proposal_type, sender_leaf, proposal) VALUES (?, ?, ?, ?, ?, ?)`,
		b.GroupID, b.ProposalRef, b.Epoch, int64(b.ProposalType), int64(b.SenderLeaf), b.Proposal)
	if err == nil {
		g := a.group(b.GroupID)
		g.proposalsKnown, g.hasProposals = true, true
	}
	return err
}

func applyCommitApplied(a *applier, ev events.Event) error {
	b, err := body[events.CommitApplied](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	epoch, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	if b.Epoch != epoch+1 {
		return cannot("commit to epoch %d, group %x is at epoch %d", b.Epoch, b.GroupID, epoch)
	}
	t := nanos(ev.Time)
	g.row = &groupRow{epoch: b.Epoch, state: []byte(b.State),
		auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, updatedAt: t}
	g.newEpochs[b.Epoch] = &epochRow{auth: b.EpochAuthenticator, cth: b.ConfirmedTranscriptHash, commit: b.Commit,
		state: []byte(b.State), createdAt: t}
	a.epochOrder = append(a.epochOrder, epochKey{string(b.GroupID), b.Epoch})
	g.epoch = b.Epoch
	g.held[b.Epoch] = true
	// Proposals belong to the epoch they were sent in.
	if !g.proposalsKnown || g.hasProposals {
		if _, err := a.exec(`DELETE FROM proposals WHERE group_id = ? AND epoch < ?`, b.GroupID, b.Epoch); err != nil {
			return err
		}
		g.proposalsKnown, g.hasProposals = true, false
	}
	for _, m := range b.Removed {
		if err := a.removeMember(b.GroupID, b.Epoch, m.Leaf, m.Identity); err != nil {
			return err
		}
	}
	for _, m := range b.Added {
		if err := a.addMember(b.GroupID, b.Epoch, m.Leaf, m.Identity); err != nil {
			return err
		}
	}
	return nil
}

// addMember is idempotent for the same member at the same leaf, because a
// commit's summary and the member.added event describe the same change.
func (a *applier) addMember(group []byte, epoch uint64, leaf uint32, identity []byte) error {
	var cur []byte
	var removed sql.NullInt64
	err := a.query1(`SELECT identity, removed_epoch FROM members WHERE group_id = ? AND leaf = ?`, []any{group, int64(leaf)}, &cur, &removed)
	switch {
	case errors.Is(err, errNoRow):
		_, err = a.exec(`INSERT INTO members(group_id, leaf, identity, added_epoch) VALUES (?, ?, ?, ?)`, group, int64(leaf), identity, epoch)
		return err
	case err != nil:
		return err
	case !removed.Valid && string(cur) == string(identity):
		return nil
	case !removed.Valid:
		return cannot("add member at leaf %d of group %x: leaf is occupied by another member", leaf, group)
	}
	// A removed member's leaf is reused.
	_, err = a.exec(`UPDATE members SET identity = ?, added_epoch = ?, removed_epoch = NULL WHERE group_id = ? AND leaf = ?`, identity, epoch, group, int64(leaf))
	return err
}

func (a *applier) removeMember(group []byte, epoch uint64, leaf uint32, identity []byte) error {
	var cur []byte
	var removed sql.NullInt64
	err := a.query1(`SELECT identity, removed_epoch FROM members WHERE group_id = ? AND leaf = ?`, []any{group, int64(leaf)}, &cur, &removed)
	if errors.Is(err, errNoRow) {
		return cannot("remove leaf %d of group %x: no such member", leaf, group)
	}
	if err != nil {
		return err
	}
	if len(identity) > 0 && string(cur) != string(identity) {
		return cannot("remove leaf %d of group %x: identity does not match", leaf, group)
	}
	if removed.Valid {
		if uint64(removed.Int64) == epoch {
			return nil
		}
		return cannot("remove leaf %d of group %x: already removed in epoch %d", leaf, group, removed.Int64)
	}
	_, err = a.exec(`UPDATE members SET removed_epoch = ? WHERE group_id = ? AND leaf = ?`, epoch, group, int64(leaf))
	return err
}

// epochReached refuses an event of a group's future epoch; what names the
// event in the error.
func (a *applier) epochReached(group []byte, epoch uint64, what string) error {
	cur, err := a.groupEpoch(group)
	if err != nil {
		return err
	}
	if epoch > cur {
		return cannot("%s in epoch %d, group %x is at epoch %d", what, epoch, group, cur)
	}
	return nil
}

func applyMemberAdded(a *applier, ev events.Event) error {
	b, err := body[events.MemberAdded](ev)
	if err != nil {
		return err
	}
	if err := a.epochReached(b.GroupID, b.Epoch, "member added"); err != nil {
		return err
	}
	return a.addMember(b.GroupID, b.Epoch, b.Leaf, b.Identity)
}

func applyMemberRemoved(a *applier, ev events.Event) error {
	b, err := body[events.MemberRemoved](ev)
	if err != nil {
		return err
	}
	if err := a.epochReached(b.GroupID, b.Epoch, "member removed"); err != nil {
		return err
	}
	return a.removeMember(b.GroupID, b.Epoch, b.Leaf, b.Identity)
}

func applyEpochSecretsRetired(a *applier, ev events.Event) error {
	b, err := body[events.EpochSecretsRetired](ev)
	if err != nil {
		return err
	}
	g := a.group(b.GroupID)
	cur, err := a.loadEpoch(b.GroupID, g)
	if err != nil {
		return err
	}
	for _, e := range b.Epochs {
		if e >= cur {
			return cannot("retire epoch %d of group %x: the group is at epoch %d", e, b.GroupID, cur)
		}
		if row, ok := g.newEpochs[e]; ok {
			row.retired, row.state = true, nil
			continue
		}
		res, err := a.exec(`UPDATE epochs SET state = NULL, retired = 1 WHERE group_id = ? AND epoch = ?`, b.GroupID, e)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return cannot("retire epoch %d of group %x: no such epoch", e, b.GroupID)
		}
	}
	// Exactly the listed epochs, no window of the read model's own: the
	// window (maximum_past_epochs) is the writer's, and it is recorded by
	// what the writer lists, so that a rebuild, or another process with
	// other options, projects the same rows and accepts the same late
	// messages as the live read model did.
	for _, e := range b.Epochs {
		g.held[e] = false
	}
	return nil
}

func (a *applier) message(ev events.Event, dir string, group []byte, epoch uint64, leaf uint32, sender events.InstallationID, id []byte, content []byte, ad []byte) error {
	g := a.group(group)
	cur, err := a.loadEpoch(group, g)
	if err != nil {
		return err
	}
	if epoch > cur {
		return cannot("message in epoch %d, group %x is at epoch %d", epoch, group, cur)
	}
	held, err := a.epochHeld(group, g, epoch)
	if err != nil {
		return err
	}
	if !held {
		return cannot("message in epoch %d of group %x whose secrets are not held", epoch, group)
	}
	if len(id) == 0 {
		return cannot("message without id")
	}
	if !g.ordinalKnown {
		if err := a.query1(`SELECT coalesce(max(ordinal), 0) FROM messages WHERE group_id = ?`, []any{group}, &g.ordinal); err != nil {
			return err
		}
		g.ordinalKnown = true
	}
	ord := g.ordinal
	if ad == nil {
		ad = []byte{}
	}
	if content == nil {
		content = []byte{}
	}
	t := nanos(ev.Time)
	if _, err := a.exec(`INSERT INTO messages(group_id, ordinal, message_id, epoch, sender_leaf, sender, direction, content, authenticated_data, sent_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, group, ord+1, id, epoch, int64(leaf), string(sender), dir, content, ad, t); err != nil {
		return err
	}
	g.ordinal = ord + 1
	if a.db.schema >= 2 && (!g.hasLastMsg || t > g.lastMsg) {
		g.hasLastMsg, g.lastMsg = true, t
	}
	return nil
}

func applyMessageSent(a *applier, ev events.Event) error {
	b, err := body[events.ApplicationMessageSent](ev)
	if err != nil {
		return err
	}
	return a.message(ev, "sent", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content, b.AuthenticatedData)
}

func applyMessageReceived(a *applier, ev events.Event) error {
	b, err := body[events.ApplicationMessageReceived](ev)
	if err != nil {
		return err
	}
	return a.message(ev, "received", b.GroupID, b.Epoch, b.SenderLeaf, b.Sender, b.MessageID, b.Content, b.AuthenticatedData)
}

func applyDeliveryEnqueued(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryEnqueued](ev)
	if err != nil {
		return err
	}
	q, err := a.queue(b.Recipient, b.Channel)
	if err != nil {
		return err
	}
	if !q.exists {
		// The row must exist before its deliveries reference it.
		if _, err := a.exec(`INSERT INTO delivery_queues(recipient, channel, last_seq, acked_seq) VALUES (?, ?, 0, 0)`, string(b.Recipient), b.Channel); err != nil {
			return err
		}
		q.exists = true
	}
	if b.Sequence != q.last+1 {
		return cannot("enqueue sequence %d on %s/%s after %d (sequences are contiguous)", b.Sequence, b.Recipient, b.Channel, q.last)
	}
	var idem any
	if b.IdempotencyKey != "" {
		idem = b.IdempotencyKey
	}
	var exp any
	if !b.ExpiresAt.IsZero() {
		exp = b.ExpiresAt.UnixNano()
	}
	payload := b.Payload
	if payload == nil {
		payload = []byte{}
	}
	if _, err := a.exec(`INSERT INTO deliveries(recipient, channel, seq, payload, expires_at, idempotency_key, enqueued_at, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')`, string(b.Recipient), b.Channel, b.Sequence, payload, exp, idem, nanos(ev.Time)); err != nil {
		return err
	}
	q.last, q.dirty = b.Sequence, true
	return nil
}

func applyDeliveryAcknowledged(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryAcknowledged](ev)
	if err != nil {
		return err
	}
	q, err := a.queue(b.Recipient, b.Channel)
	if err != nil {
		return err
	}
	if !q.exists {
		return cannot("ack on %s/%s: nothing was ever enqueued", b.Recipient, b.Channel)
	}
	last, acked := q.last, q.acked
	if b.UpTo > last {
		return cannot("ack up to %d on %s/%s: only %d enqueued", b.UpTo, b.Recipient, b.Channel, last)
	}
	if b.UpTo <= acked {
		return nil // acks are cumulative; an older one changes nothing
	}
	// Payloads are dropped once acknowledged; the row keeps the
	// idempotency key and the state.
	if _, err := a.exec(`UPDATE deliveries SET state = 'acked', payload = NULL
		WHERE recipient = ? AND channel = ? AND seq > ? AND seq <= ? AND state = 'pending'`, string(b.Recipient), b.Channel, acked, b.UpTo); err != nil {
		return err
	}
	q.acked, q.dirty = b.UpTo, true
	return nil
}

func applyDeliveryExpired(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryExpired](ev)
	if err != nil {
		return err
	}
	var state string
	err = a.query1(`SELECT state FROM deliveries WHERE recipient = ? AND channel = ? AND seq = ?`, []any{string(b.Recipient), b.Channel, b.Sequence}, &state)
	if errors.Is(err, errNoRow) {
		return cannot("expire sequence %d on %s/%s: never enqueued", b.Sequence, b.Recipient, b.Channel)
	}
	if err != nil {
		return err
	}
	if state != "pending" {
		return cannot("expire sequence %d on %s/%s: already %s", b.Sequence, b.Recipient, b.Channel, state)
	}
	_, err = a.exec(`UPDATE deliveries SET state = 'expired', payload = NULL WHERE recipient = ? AND channel = ? AND seq = ?`,
		string(b.Recipient), b.Channel, b.Sequence)
	return err
}
