package engine

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// Defaults of InstallationOptions.
const (
	DefaultCiphersuite    = uint16(ciphersuite.MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519)
	DefaultUpdateInterval = 24 * time.Hour
	DefaultMaxAttempts    = 16
)

// InstallationOptions tune an Installation. The zero value (or nil) means
// defaults.
type InstallationOptions struct {
	// Ciphersuite of a new installation (default 3,
	// MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519). An existing
	// installation keeps the one it was created with.
	Ciphersuite uint16
	// MaxPastEpochs is maximum_past_epochs: how many past epochs keep their
	// secrets for late application messages (default 3; negative is
	// refused). It is this process's window: the epochs it retires are
	// recorded as events, and every read model of the installation (a
	// rebuild, another process) retires exactly those.
	MaxPastEpochs int
	// UpdateInterval is how old this member's last path update may get
	// before Send first commits a fresh one (default 24h). A member that
	// joined from a Welcome always updates before its first message;
	// so does one whose last update was recorded more than this in the
	// future (by a clock that ran ahead). Negative is refused.
	UpdateInterval time.Duration
	// MaxAttempts bounds the retries of an operation that loses races for
	// its group (default DefaultMaxAttempts, 16; negative is refused).
	// Three processes of one installation sending and committing on one
	// group as fast as they can lost 0.2 to 0.9 % of their operations
	// (ErrTooManyConflicts) at 8 attempts, none at 16
	// (BenchmarkContendedGroup).
	MaxAttempts int
	// OutcomeTimeout bounds how long an operation tries to decide an
	// append whose answer was lost (the server gone, a failover longer
	// than it), appending the same events again, before it fails with
	// ErrOutcomeUnknown (default DefaultOutcomeTimeout; a shorter
	// context deadline ends it sooner).
	OutcomeTimeout time.Duration
	// HandshakeWireFormat is how this installation sends its proposals
	// and commits (default DefaultHandshakeWireFormat, PrivateMessage; see
	// WireFormat for what a delivery service can see of each). A group
	// may override it (Installation.SetHandshakeWireFormat).
	HandshakeWireFormat WireFormat
	// SupportedExtensions and SupportedProposals are the extension and
	// proposal types, besides RFC 9420's defaults, that this
	// installation's leaves advertise as supported (the capabilities of
	// its key packages and of the groups it creates): a group can require
	// them, or carry such extensions, only if every member supports them.
	// A leaf keeps the capabilities it was made with: a change applies to
	// key packages published and groups created afterwards.
	SupportedExtensions []mls.ExtensionType
	SupportedProposals  []mls.ProposalType
	// CheckMember is the application's Authentication Service (RFC 9420
	// §5.3.1): it is called with each member a transition would put into
	// a group (added by a commit, own or received; every member of a
	// group joined from a Welcome or by external commit), its
	// installation id (the basic credential's identity) and signature
	// public key, and says whether that key is that installation's. To
	// refuse, it returns an error wrapping ErrMemberRefused: the
	// transition is refused for good, nothing recorded (Host.Deliver
	// acknowledges it). Any other error means it could not decide (its
	// directory unreachable): the transition fails, nothing recorded, and
	// is tried again (Host.Deliver stops at it). Nil: any key is taken.
	// Whatever it says, an identity that is not a valid installation id,
	// or that another leaf of the group already holds, is refused.
	CheckMember func(ctx context.Context, id events.InstallationID, signatureKey []byte) error
	// DB are the read model's options.
	DB projections.Options
	// Now is the clock (default time.Now); tests move it forward.
	Now func() time.Time
}

func (o *InstallationOptions) withDefaults() (InstallationOptions, error) {
	var r InstallationOptions
	if o != nil {
		r = *o
	}
	if r.MaxPastEpochs < 0 {
		return r, fmt.Errorf("engine: installation options: MaxPastEpochs %d: must be 0 (the default, %d) or more", r.MaxPastEpochs, mls.DefaultMaxPastEpochs)
	}
	if r.Ciphersuite == 0 {
		r.Ciphersuite = DefaultCiphersuite
	}
	if r.MaxPastEpochs == 0 {
		r.MaxPastEpochs = mls.DefaultMaxPastEpochs
	}
	if r.UpdateInterval < 0 {
		return r, fmt.Errorf("engine: installation options: UpdateInterval %v: must be 0 (the default, %v) or more", r.UpdateInterval, DefaultUpdateInterval)
	}
	if r.UpdateInterval == 0 {
		r.UpdateInterval = DefaultUpdateInterval
	}
	if r.MaxAttempts < 0 {
		// A loop of no attempts failed every commit with
		// ErrTooManyConflicts, and a Welcome's with none at all.
		return r, fmt.Errorf("engine: installation options: MaxAttempts %d: must be 0 (the default, %d) or more", r.MaxAttempts, DefaultMaxAttempts)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.OutcomeTimeout < 0 {
		return r, fmt.Errorf("engine: installation options: OutcomeTimeout %v: must be 0 (the default, %v) or more", r.OutcomeTimeout, DefaultOutcomeTimeout)
	}
	if r.OutcomeTimeout == 0 {
		r.OutcomeTimeout = DefaultOutcomeTimeout
	}
	if !r.HandshakeWireFormat.valid() {
		return r, fmt.Errorf("engine: installation options: HandshakeWireFormat %d is none of default, public_message, private_message", uint16(r.HandshakeWireFormat))
	}
	if r.HandshakeWireFormat == WireFormatDefault {
		r.HandshakeWireFormat = DefaultHandshakeWireFormat
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r, nil
}

// Installation is one app on one device acting through the engine: its MLS
// identity (signature key and basic credential whose identity is the
// installation id), the event log its transitions are recorded in (sealed
// with the log's keyring), and its SQLCipher read model. Every operation
// appends its transition, one event, with optimistic concurrency on the
// aggregate, then projects it; its result (the messages to deliver) is
// returned only once the events are durable. It is safe for concurrent use;
// operations are serialized.
type Installation struct {
	log   *eventlog.Log
	id    events.InstallationID
	db    *projections.DB
	cs    *ciphersuite.CipherSuite
	sig   *ciphersuite.SignaturePrivateKey
	cred  mls.Credential
	opts  InstallationOptions
	mu    sync.Mutex
	group map[string]*groupState // by string(group id); a cache of the read model
	// wireFormat caches each group's own handshake wire format (see
	// groupWireFormat), refreshed whenever loadGroup loads the group.
	wireFormat map[string]WireFormat
	// psks caches the held external PSKs (nil: to be read; see heldPSKs),
	// guarded by pskMu: project, which refreshes it, also runs without mu
	// (CatchUp).
	pskMu sync.Mutex
	psks  *[]mls.ExternalPSK
	lock  *projections.WriterLock // held from open to Close: the one writer of db
	// closed: Close ran (the read model no longer counts as open). Set
	// under mu; read without it by CatchUp.
	closed atomic.Bool
	// appliedTo is a checkpoint a Host saw its read model reach (0: none
	// seen): a lower bound of the read model's checkpoint, which only
	// grows, so a Host reads from there and misses nothing (it spares a
	// query per installation and batch). It lives and dies with the
	// Installation, so a Pool's evictions leave nothing behind.
	appliedTo atomic.Uint64
}

// openReadModel takes the read model's writer lock (projections.Lock) and
// opens it: an Installation is its database's one writer, so a second
// process of the installation on the same file, or a rebuild or follower
// of it, fails at once with projections.ErrLocked naming the holder.
// The Log's Metrics count it open (read_models_open) until closeReadModel.
//
// With opts.NoMigrate the file is opened at the schema it has, once.
// Otherwise an older schema is migrated only once the file is known to be id's
// (op, "open" or "create", names the call in ErrWrongReadModel): the file
// is opened as it is first (projections.Options.NoMigrate), and one of
// another schema opened again to migrate it, so another installation's
// older file is refused untouched rather than migrated, then refused.
//
// A file that migrated in place would lose the own commit or message
// outputs it applied without keeping them (projections.ErrOutputsNotKept:
// a file below schema 9, 10 or 11, as rebuild --schema or an older build left
// it) is migrated by replay instead (migrateByReplay), then opened.
func openReadModel(ctx context.Context, l *eventlog.Log, id events.InstallationID, dbPath string, key projections.Key, opts *projections.Options, op string) (*projections.DB, *projections.WriterLock, error) {
	if dir := filepath.Dir(dbPath); dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, nil, fmt.Errorf("engine: read model directory: %w", err)
			}
		}
	}
	lk, err := projections.Lock(dbPath)
	if err != nil {
		return nil, nil, err
	}
	asIs := *opts
	asIs.NoMigrate = true
	db, err := projections.Open(dbPath, key, &asIs)
	if err == nil && !opts.NoMigrate && db.SchemaVersion() != cmp.Or(opts.SchemaVersion, projections.LatestSchema) {
		// Without ctx's end: a local read of one row, and an ended ctx
		// is reported by the migration by replay with the file's reason.
		if _, _, err := ownIdentity(context.WithoutCancel(ctx), db, id, op); err != nil {
			db.Close()
			lk.Unlock()
			return nil, nil, err
		}
		// Migrated in place, refused (a newer schema) or ErrOutputsNotKept.
		db.Close()
		db, err = projections.Open(dbPath, key, opts)
	}
	if errors.Is(err, projections.ErrOutputsNotKept) {
		// Under the lock taken above, throughout: no other process of
		// the installation opens the file half migrated, nor migrates it
		// again.
		if err := migrateByReplay(ctx, l, id, dbPath, key, opts, lk, err); err != nil {
			lk.Unlock()
			return nil, nil, err
		}
		db, err = projections.Open(dbPath, key, opts)
	}
	if err != nil {
		lk.Unlock()
		return nil, nil, err
	}
	l.Metrics().ReadModelOpened()
	return db, lk, nil
}

// migrateByReplay brings the read model at dbPath to opts.SchemaVersion
// by replay (replay.Rebuild, as replayer migrate does): a fresh build of
// id's events, which record the outputs the file did not keep (notKept
// says which), checked against the file (another installation's is
// refused, one holding more than the stream too) and swapped in, under
// the writer lock lk the open holds (RebuildOptions.Lock): migrated in
// place, the file would lose them silently. A failure leaves the file as
// it was, and names both.
func migrateByReplay(ctx context.Context, l *eventlog.Log, id events.InstallationID, dbPath string, key projections.Key, opts *projections.Options, lk *projections.WriterLock, notKept error) error {
	l.Logger().Warn("engine: the read model did not keep own outputs a migration in place would lose; migrating it by replay", "installation", string(id), "path", dbPath, "reason", notKept)
	res, err := replay.Rebuild(ctx, l, id, dbPath, key, &replay.RebuildOptions{Options: replay.Options{DB: *opts}, SchemaVersion: opts.SchemaVersion, Lock: lk})
	if errors.Is(err, replay.ErrWrongInstallation) {
		// What an open of another installation's file says (ownIdentity).
		return fmt.Errorf("engine: installation %s: read model %s: %w: %w", id, dbPath, ErrWrongReadModel, err)
	}
	if err != nil {
		return fmt.Errorf("engine: installation %s: %w; migrating read model %s by replay instead failed (nothing changed unless it says it swapped): %w", id, notKept, dbPath, err)
	}
	l.Logger().Info("engine: read model migrated by replay", "installation", string(id), "path", dbPath,
		"previous_schema", res.PreviousSchema, "schema", res.Schema, "seq", res.Checkpoint, "from_snapshot", res.FromSnapshot)
	return nil
}

// newFiles lists the files an open of the read model at dbPath would
// create: the database, its SQLite sidecars and its salt sidecar, those
// of them that do not exist yet (none when the database exists and is
// not empty). The writer's lock file is not among them: another opener
// may hold it open. empty reports a database that exists as an empty
// file (a name reserved beforehand): the open writes it, so it is
// emptied again rather than removed.
func newFiles(dbPath, salt string) (created []string, empty bool) {
	st, err := os.Stat(dbPath)
	if err == nil && st.Size() > 0 || err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	for _, f := range []string{dbPath, dbPath + "-wal", dbPath + "-shm", dbPath + "-journal", salt} {
		if _, err := os.Lstat(f); errors.Is(err, fs.ErrNotExist) {
			created = append(created, f)
		}
	}
	return created, err == nil
}

// discardReadModel closes a read model and removes the files its open
// created (newFiles), or empties the database if it was an empty file
// before, holding its lock until that is done.
func discardReadModel(l *eventlog.Log, db *projections.DB, lk *projections.WriterLock, id events.InstallationID, created []string, empty bool) {
	err := db.Close()
	l.Metrics().ReadModelClosed()
	for _, f := range created {
		if rerr := os.Remove(f); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if empty {
		err = errors.Join(err, os.Truncate(db.Path(), 0))
	}
	if err = errors.Join(err, lk.Unlock()); err != nil {
		l.Logger().Warn("engine: removing a read model this call created failed", "installation", string(id), "path", db.Path(), "err", err)
	}
}

// ownIdentity reads the installation a read model holds (found false: none
// yet) and refuses another installation's with ErrWrongReadModel; op
// ("open", "create") names the call in the error.
func ownIdentity(ctx context.Context, db *projections.DB, id events.InstallationID, op string) (projections.Installation, bool, error) {
	ident, found, err := db.Installation(ctx)
	if err != nil {
		return ident, false, fmt.Errorf("engine: %s installation %s: read identity: %w", op, id, err)
	}
	if found && ident.ID != id {
		return ident, false, fmt.Errorf("engine: %s installation %s: read model %s belongs to installation %q: %w", op, id, db.Path(), ident.ID, ErrWrongReadModel)
	}
	return ident, found, nil
}

// closeReadModel closes the database, then lets go of its lock.
func closeReadModel(l *eventlog.Log, db *projections.DB, lk *projections.WriterLock) error {
	err := db.Close()
	l.Metrics().ReadModelClosed()
	return errors.Join(err, lk.Unlock())
}

// CreateInstallation creates installation id: it draws a signature key,
// appends installation.created and opens (creating) the read model at
// dbPath under key. An id that already exists is ErrInstallationExists;
// a read model file this call created is then removed again, as after
// any other error that recorded nothing. Another installation's read
// model is ErrWrongReadModel, recording nothing. Once installation.created
// is durable the call succeeds, even if the read model could not apply
// it yet (its context ended, say): the next operation, or CatchUp, does.
// ErrOutcomeUnknown means it may or may not be recorded: the read model
// is kept under key, so call CreateInstallation again with the same key
// and, on ErrInstallationExists, OpenInstallation.
func CreateInstallation(ctx context.Context, l *eventlog.Log, id events.InstallationID, dbPath string, key projections.Key, opts *InstallationOptions) (*Installation, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(o.Ciphersuite))
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: %w", id, err)
	}
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: signature key: %w", id, err)
	}
	cred := mls.NewBasicCredential([]byte(id))
	// Lock and open the read model before anything is recorded, so a
	// database held by another writer records nothing.
	created, empty := newFiles(dbPath, cmp.Or(o.DB.SaltPath, projections.SaltPath(dbPath)))
	db, lk, err := openReadModel(ctx, l, id, dbPath, key, &o.DB, "create")
	if err != nil {
		return nil, err
	}
	// Another installation's read model (a path mixed up) is refused
	// before the append: the installation would be recorded, and then
	// fail to project into it, behind an error.
	if _, _, err := ownIdentity(ctx, db, id, "create"); err != nil {
		// Nothing recorded: a file this call created, left under key,
		// would refuse a create again under another key (ErrWrongKey).
		discardReadModel(l, db, lk, id, created, empty)
		return nil, err
	}
	ev := events.Event{
		Aggregate: events.Aggregate{Installation: id, Type: events.AggInstallation},
		Time:      o.Now().UTC(),
		Body: events.InstallationCreated{
			Installation:        id,
			Ciphersuite:         o.Ciphersuite,
			SignaturePublicKey:  sig.PublicKey(),
			SignaturePrivateKey: events.NewSecret(sig.Bytes()),
			Credential:          encodeBasicCredential([]byte(id)),
		},
	}
	if _, err := decideAppend(ctx, l, 0, []events.Event{ev}, o.OutcomeTimeout); err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			closeReadModel(l, db, lk) // perhaps created: OpenInstallation takes it up
		} else {
			// Nothing recorded: a file left under this key would refuse
			// the OpenInstallation of an existing id under its own key.
			discardReadModel(l, db, lk, id, created, empty)
		}
		if errors.Is(err, eventlog.ErrConflict) {
			return nil, fmt.Errorf("engine: create installation %s: %w", id, ErrInstallationExists)
		}
		return nil, fmt.Errorf("engine: create installation %s: %w", id, err)
	}
	if createdHook != nil {
		createdHook()
	}
	in := &Installation{log: l, id: id, db: db, cs: cs, sig: sig, cred: cred, opts: o, group: map[string]*groupState{}, wireFormat: map[string]WireFormat{}, lock: lk}
	if err := in.project(ctx); err != nil {
		// Created all the same (installation.created is durable): an
		// error here hid that, and a create again under another key
		// found this file (ErrWrongKey). The next operation, or
		// CatchUp, brings the read model up to date.
		l.Logger().Warn("engine: installation created, the read model lags", "installation", string(id), "stream", l.Stream(), "path", dbPath, "err", err)
	}
	l.Logger().Debug("engine: installation created", "installation", string(id), "stream", l.Stream(), "path", dbPath, "ciphersuite", o.Ciphersuite)
	return in, nil
}

// createdHook, when set (by tests only), runs in CreateInstallation once
// installation.created is durable, before the read model applies it. A
// test that sets it must not call t.Parallel.
var createdHook func()

// OpenInstallation opens an existing installation: it opens the read model
// at dbPath (creating it empty if it is missing) and resumes it from its
// checkpoint by catching up with the log, then loads the identity from it.
// An id with no installation.created event is ErrNoInstallation; a read
// model file this call created is then removed again, so a
// CreateInstallation with another key can follow.
func OpenInstallation(ctx context.Context, l *eventlog.Log, id events.InstallationID, dbPath string, key projections.Key, opts *InstallationOptions) (*Installation, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	salt := cmp.Or(o.DB.SaltPath, projections.SaltPath(dbPath))
	created, empty := newFiles(dbPath, salt)
	db, lk, err := openReadModel(ctx, l, id, dbPath, key, &o.DB, "open")
	if err != nil {
		return nil, err
	}
	in := &Installation{log: l, id: id, db: db, opts: o, group: map[string]*groupState{}, wireFormat: map[string]WireFormat{}, lock: lk}
	// failed closes the read model after an error. One this call created
	// that holds nothing of the installation yet (its context ended
	// before the catch-up applied installation.created, say) is removed,
	// as when the installation does not exist: left under key, the
	// CreateInstallation that follows an open that found nothing was
	// ErrWrongKey under another key for good, the next open not having
	// created the file.
	failed := func(err error) (*Installation, error) {
		if len(created) > 0 || empty {
			if _, found, ierr := ownIdentity(context.WithoutCancel(ctx), db, id, "open"); ierr == nil && !found {
				discardReadModel(l, db, lk, id, created, empty)
				return nil, err
			}
		}
		closeReadModel(l, db, lk)
		return nil, err
	}
	// Another installation's read model (a path mixed up) is refused
	// before its checkpoint becomes id's floor in the shared Log, which
	// would fail id's appends in this process with ErrMissingEvent.
	if _, _, err := ownIdentity(ctx, db, id, "open"); err != nil {
		return failed(err)
	}
	// The stream must still hold what the read model applied: the first
	// append checks it where it asks for the installation's head (no
	// round trip here; eventlog.Log.ExpectThrough).
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		return failed(err)
	}
	l.ExpectThrough(id, cp)
	opened := cp
	if cp, err = in.projectFrom(ctx, cp); err != nil {
		return failed(err)
	}
	if cp == opened && cp > 0 {
		// Nothing new may be an erase that purged the events after cp
		// (the catch-up's read does not ask): refused here rather than
		// at the first append, so that nothing is served from the read
		// model of an erased installation.
		if err := l.CheckNotErased(ctx, id); err != nil {
			return failed(fmt.Errorf("engine: open %s: %w", id, err))
		}
	}
	ident, found, err := ownIdentity(ctx, db, id, "open")
	if err != nil {
		return failed(err)
	}
	if !found {
		// A read model this open created is removed: left behind under
		// key, it would refuse the CreateInstallation that usually
		// follows ("open, else create") with another key.
		discardReadModel(l, db, lk, id, created, empty)
		return nil, fmt.Errorf("engine: open installation %s (read model %s): %w", id, dbPath, ErrNoInstallation)
	}
	if in.cs, err = ciphersuite.Lookup(ciphersuite.Suite(ident.Ciphersuite)); err != nil {
		closeReadModel(l, db, lk)
		return nil, fmt.Errorf("engine: open installation %s: %w", id, err)
	}
	if in.sig, err = in.cs.ParseSignaturePrivateKey(ident.SignaturePrivateKey.Bytes()); err != nil {
		closeReadModel(l, db, lk)
		return nil, fmt.Errorf("engine: open installation %s: signature key: %w", id, err)
	}
	in.cred = mls.NewBasicCredential([]byte(id))
	in.opts.Ciphersuite = ident.Ciphersuite
	// A read model ahead of the stream (events the stream lost) is not
	// looked for here: asking the stream for the installation's last
	// event is a wildcard lookup, which made a cold open in BenchmarkWorld
	// about 3 ms slower than 11 (one paired run; runs vary by a quarter).
	// The first append to an aggregate whose events were lost fails with
	// eventlog.ErrMissingEvent; replayer status, verify and follow check
	// the whole read model.
	l.Logger().Debug("engine: installation opened", "installation", string(id), "stream", l.Stream(), "path", dbPath, "seq", cp)
	return in, nil
}

// ID returns the installation id.
func (in *Installation) ID() events.InstallationID { return in.id }

// DB returns the read model (for queries; the Installation is its only
// writer).
func (in *Installation) DB() *projections.DB { return in.db }

// SignaturePublicKey returns the installation's signature public key.
func (in *Installation) SignaturePublicKey() []byte { return in.sig.PublicKey() }

// Close closes the read model. The Log stays open (it is shared). An
// operation called afterwards fails with ErrClosed, recording nothing;
// Close again does nothing more.
func (in *Installation) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.group = map[string]*groupState{}
	in.wireFormat = map[string]WireFormat{}
	in.pskMu.Lock()
	in.psks = nil
	in.pskMu.Unlock()
	if in.closed.Load() {
		return errors.Join(in.db.Close(), in.lock.Unlock())
	}
	in.closed.Store(true)
	in.log.Metrics().ProjectorGone(string(in.id))
	in.log.Logger().Debug("engine: installation closed", "installation", string(in.id), "stream", in.log.Stream())
	return closeReadModel(in.log, in.db, in.lock)
}

// errIfClosed is ErrClosed, naming the installation, once Close ran: an
// operation must not append for an installation whose read model is
// closed (CreateGroup and PublishKeyPackage append before reading it).
func (in *Installation) errIfClosed() error {
	if in.closed.Load() {
		return fmt.Errorf("engine: installation %s: %w", in.id, ErrClosed)
	}
	return nil
}

// CatchUp applies the installation's events appended since the read
// model's checkpoint (by this process or any other, deliveries included).
func (in *Installation) CatchUp(ctx context.Context) error {
	err := in.project(ctx)
	if err != nil && !errors.Is(err, ErrClosed) && in.closed.Load() {
		// Closed under it (CatchUp does not hold the operation lock):
		// the read model's own error says less.
		return fmt.Errorf("engine: installation %s: %w (%v)", in.id, ErrClosed, err)
	}
	return err
}

// catchUpAll applies a long backlog with one consumer (Log.CatchUp) and
// returns the checkpoint reached.
func (in *Installation) catchUpAll(ctx context.Context) (uint64, error) {
	_, cp, err := replay.CatchUp(ctx, in.log, in.id, in.db, &replay.Options{DB: in.opts.DB})
	in.pskMu.Lock()
	in.psks = nil // perhaps changed: read again when needed
	in.pskMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("engine: installation %s: catch up read model: %w", in.id, err)
	}
	return cp, nil
}

// position returns the position of an aggregate's last event as the read
// model knows it (0: none).
func (in *Installation) position(ctx context.Context, t events.AggregateType, id string) (uint64, error) {
	if err := in.errIfClosed(); err != nil {
		return 0, err
	}
	pos, err := in.db.Position(ctx, events.Aggregate{Installation: in.id, Type: t, ID: id})
	if err != nil {
		return 0, fmt.Errorf("engine: installation %s: position of %s %s: %w", in.id, t, id, err)
	}
	return pos, nil
}

// appendAndProject records the transition of agg whose event has body b,
// at expected, and brings the read model up to date with it (every
// transition is one event, one append). On eventlog.ErrConflict nothing
// was written; on errNotProjected everything was; on ErrOutcomeUnknown
// either may be true.
func (in *Installation) appendAndProject(ctx context.Context, agg events.Aggregate, expected uint64, b events.Body) error {
	if _, _, err := in.appendDecided(ctx, agg, expected, b); err != nil {
		return err
	}
	if err := in.project(ctx); err != nil {
		return fmt.Errorf("%w: %w", errNotProjected, err)
	}
	return nil
}

// appendDecided appends the event of agg with body b at expected, timed
// now, and does not return before the outcome is known, unless ctx ends
// or OutcomeTimeout passes first (ErrOutcomeUnknown). A lost answer (a
// timeout, a reconnect) leaves the event perhaps stored: the operation's
// output (a commit, a Welcome) must then not be dropped while its event
// is durable, nor returned while it is not. So the same event (same
// message id: it keeps its time) is appended again until the server
// answers; Append finds it if the first attempt landed. It returns the
// event as appended and its result.
func (in *Installation) appendDecided(ctx context.Context, agg events.Aggregate, expected uint64, b events.Body) ([]events.Event, []eventlog.Appended, error) {
	if err := in.errIfClosed(); err != nil {
		return nil, nil, err
	}
	evs := []events.Event{{Aggregate: agg, Time: in.opts.Now().UTC(), Body: b}}
	res, err := decideAppend(ctx, in.log, expected, evs, in.opts.OutcomeTimeout)
	if err != nil {
		return nil, nil, markUndecided(expected, evs, err)
	}
	if len(res) > 0 {
		in.log.Logger().Debug("engine: recorded", append(aggAttrs(in.log, evs), "seq", res[len(res)-1].Seq, "duplicate", res[0].Duplicate)...)
	}
	return evs, res, nil
}

// undecidedAppend marks an append that ended with ErrOutcomeUnknown with
// its events, as sent (their message ids), and the position they were to
// follow, for an *OutcomeUnknownError to carry to Installation.Decide.
type undecidedAppend struct {
	err      error
	expected uint64
	evs      []events.Event
}

func (u *undecidedAppend) Error() string { return u.err.Error() }
func (u *undecidedAppend) Unwrap() error { return u.err }

// markUndecided wraps an append's ErrOutcomeUnknown with its events.
func markUndecided(expected uint64, evs []events.Event, err error) error {
	if !errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	return &undecidedAppend{err: err, expected: expected, evs: evs}
}

// outcomeUnknown makes err, an operation's error, an *OutcomeUnknownError
// carrying the operation's output (set) and its undecided append, if err
// is an append's ErrOutcomeUnknown; it returns err as it is otherwise.
func outcomeUnknown(err error, set func(*OutcomeUnknownError)) error {
	var u *undecidedAppend
	if !errors.As(err, &u) {
		return err
	}
	e := &OutcomeUnknownError{Err: err, expected: u.expected, evs: u.evs}
	set(e)
	return e
}

// encodeBasicCredential is the TLS encoding of a basic Credential
// (RFC 9420 §5.3): credential_type, then identity<V> with a QUIC-style
// variable-length size.
func encodeBasicCredential(identity []byte) []byte {
	out := []byte{0, byte(mls.CredentialTypeBasic)}
	n := len(identity)
	switch {
	case n < 1<<6:
		out = append(out, byte(n))
	case n < 1<<14:
		out = append(out, byte(0x40|n>>8), byte(n))
	default:
		out = append(out, byte(0x80|n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, identity...)
}

func groupKey(id []byte) string { return hex.EncodeToString(id) }

// messageID identifies an application message by its ciphertext, so the
// sender's and every receiver's records agree and a redelivery is
// recognized.
func messageID(wire []byte) []byte {
	h := sha256.Sum256(wire)
	return h[:16]
}

// Decide settles an operation that failed with an *OutcomeUnknownError:
// it appends the operation's events again, as they were sent. The stream
// stores an append once and orders this one after the lost one (sent
// earlier on the same connection), so the answer is final: recorded (it
// had landed, or lands now), or not recorded because the group moved on
// meanwhile (another event holds its position: the lost append never
// lands). A read could not tell: the server answers reads beside its
// ingest, and a publish in flight may land after a read that missed it.
// Then the read model catches up. Recorded: deliver u.Commit (its Commit
// to its Recipients, its Welcome to Added) or u.Send as the operation
// would have returned them. Not recorded: never deliver them; make the
// operation again if it is still wanted. An error (the server still not
// answering: ErrOutcomeUnknown again) decides nothing: call Decide again.
func (in *Installation) Decide(ctx context.Context, u *OutcomeUnknownError) (recorded bool, err error) {
	if u == nil || len(u.evs) == 0 {
		// nil: an errors.As that found no *OutcomeUnknownError (an
		// ErrOutcomeUnknown of Receive, or of Deliveries, carries none).
		return false, fmt.Errorf("engine: installation %s: decide: the error carries no append", in.id)
	}
	if owner := u.evs[0].Aggregate.Installation; owner != in.id {
		// Appended here, its events would be decided against this
		// installation's Log, and caught up into the wrong read model.
		return false, fmt.Errorf("engine: installation %s: decide: the operation is installation %s's", in.id, owner)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.errIfClosed(); err != nil {
		return false, err
	}
	_, err = decideAppend(ctx, in.log, u.expected, u.evs, in.opts.OutcomeTimeout)
	switch {
	case err == nil:
		recorded = true
	case errors.Is(err, eventlog.ErrConflict):
	default:
		return false, fmt.Errorf("engine: installation %s: decide the append of %s %q after position %d: %w",
			in.id, u.evs[0].Aggregate.Type, u.evs[0].Aggregate.ID, u.expected, err)
	}
	// Group states cached since the operation are stale if it landed
	// now; they reload from the read model.
	clear(in.group)
	if err := in.project(ctx); err != nil {
		// Decided all the same; the next operation or CatchUp brings
		// the read model up to date.
		in.log.Logger().Warn("engine: decided, the read model lags", "installation", string(in.id), "recorded", recorded, "err", err)
	}
	return recorded, nil
}
