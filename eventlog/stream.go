package eventlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is the stream this configuration wants.
func (c Config) streamConfig() jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if c.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "epochlog encrypted event log",
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		// A full stream refuses appends instead of dropping history.
		Discard:    jetstream.DiscardNew,
		MaxAge:     max(c.MaxAge, 0),
		MaxBytes:   orUnlimited(c.MaxBytes),
		MaxMsgs:    -1,
		Storage:    storage,
		Replicas:   max(c.Replicas, 1),
		Duplicates: cmp.Or(c.DuplicateWindow, DefaultDuplicateWindow),
		// Multi-event transitions are atomic batches. Servers before 2.12
		// ignore the field; ensureStream reads back what the server kept.
		AllowAtomicPublish: true,
	}
}

// orUnlimited maps both "no limit" values of Config.MaxBytes (0 and
// Unbounded) to JetStream's -1.
func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// metaKeyringCheck is the stream metadata key holding the keyring check: a
// pseudonym of a fixed label under the keyring's pseudonym key. It reveals
// nothing about the keys (it is one more HMAC output, like every subject
// token) and lets Open refuse a keyring that would find none of the
// stream's events, instead of silently reading nothing.
const metaKeyringCheck = "epochlog_keyring_check"

// ensureStream creates the stream if it is missing, otherwise checks that it
// can hold the log and updates the settings cfg sets (replicas, duplicate
// window, limits; atomic publish on and direct get off, which the Log
// needs; the rest of the stream is left alone). It reports whether the
// server kept AllowAtomicPublish.
func ensureStream(ctx context.Context, l *Log, js jetstream.JetStream, cfg Config, keyCheck string) (jetstream.Stream, bool, error) {
	want := cfg.streamConfig()
	want.Metadata = map[string]string{metaKeyringCheck: keyCheck}
	if cfg.resealOf != "" {
		want.Metadata[metaResealOf] = cfg.resealOf
	}
	// Asked again while unanswered (askAgain): a lookup the stream's
	// dead leader, or the meta group's, left without an answer is not
	// the last word within the request timeout.
	lookup := func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, want.Name) }
	s, err := askAgain(ctx, l, lookup)
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.ReadOnly {
		return nil, false, fmt.Errorf("%w: stream %s (read-only: nothing is created; check --stream and the server or store)", ErrNoStream, want.Name)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.NoCreate {
		return nil, false, fmt.Errorf("%w: stream %s (nothing is created: check --stream, and the server or store: a stream whose files are there but damaged is not loaded)", ErrNoStream, want.Name)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = createStream(ctx, js, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another process created it between our lookup and create.
			s, err = askAgain(ctx, l, lookup)
		} else if err != nil {
			return nil, false, fmt.Errorf("eventlog: create stream %s: %w", want.Name, err)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("eventlog: look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if err := compatible(have, want); err != nil {
		return nil, false, err
	}
	if got, ok := have.Metadata[metaKeyringCheck]; ok && got != keyCheck {
		return nil, false, fmt.Errorf("%w: stream %s was created under a keyring with another oldest root key (check the keys file or %s)",
			ErrKeyringMismatch, want.Name, "EPOCHLOG_ROOT_KEYS")
	}
	if cfg.ReadOnly {
		// Reads need nothing changed; appends are refused anyway.
		return s, have.AllowAtomicPublish, nil
	}
	upd := have
	if _, ok := have.Metadata[metaKeyringCheck]; !ok {
		// A stream from before the check: adopt this keyring's token.
		upd.Metadata = maps.Clone(have.Metadata)
		if upd.Metadata == nil {
			upd.Metadata = map[string]string{}
		}
		upd.Metadata[metaKeyringCheck] = keyCheck
	}
	if cfg.resealOf != "" && have.Metadata[metaResealOf] == "" {
		// A re-seal target created by an older OpenBeside: record it now.
		upd.Metadata = maps.Clone(upd.Metadata)
		if upd.Metadata == nil {
			upd.Metadata = map[string]string{}
		}
		upd.Metadata[metaResealOf] = cfg.resealOf
	}
	// Only what the Config sets explicitly changes an existing stream.
	if cfg.DuplicateWindow != 0 {
		upd.Duplicates = want.Duplicates
	}
	if cfg.MaxAge != 0 {
		upd.MaxAge = want.MaxAge
	}
	if cfg.MaxBytes != 0 {
		upd.MaxBytes = want.MaxBytes
	}
	if cfg.Replicas != 0 {
		upd.Replicas = want.Replicas
	}
	if err := discardsOld(upd); err != nil {
		// The limit this Config sets would make the stream drop events.
		return nil, false, err
	}
	upd.AllowAtomicPublish = true
	// Direct gets are answered by any replica, which may lag the leader:
	// Append's tail lookups would then see a stale tail (a spurious
	// ErrConflict) and catch-up reads could miss an event just appended.
	// The Log needs its reads from the leader, so it switches them off.
	upd.AllowDirect = false
	if upd.Metadata[metaKeyringCheck] != have.Metadata[metaKeyringCheck] || upd.Metadata[metaResealOf] != have.Metadata[metaResealOf] || upd.Duplicates != have.Duplicates || upd.MaxAge != have.MaxAge || upd.MaxBytes != have.MaxBytes ||
		upd.Replicas != have.Replicas || upd.AllowAtomicPublish != have.AllowAtomicPublish || upd.AllowDirect != have.AllowDirect {
		s, err = js.UpdateStream(ctx, upd)
		if err != nil {
			return nil, false, fmt.Errorf("eventlog: update stream %s (duplicates %v, max age %v, max bytes %d, replicas %d, atomic publish on, direct get off): %w",
				want.Name, upd.Duplicates, upd.MaxAge, upd.MaxBytes, upd.Replicas, err)
		}
	}
	return s, s.CachedInfo().Config.AllowAtomicPublish, nil
}

// compatible checks what cannot be changed without an operator's decision.
func compatible(have, want jetstream.StreamConfig) error {
	bad := func(what string, h, w any) error {
		return fmt.Errorf("%w: stream %s has %s %v, want %v", ErrIncompatibleStream, have.Name, what, h, w)
	}
	if !slices.Contains(have.Subjects, want.Subjects[0]) {
		return bad("subjects", have.Subjects, want.Subjects)
	}
	if have.Storage != want.Storage {
		return bad("storage", have.Storage, want.Storage)
	}
	if have.Retention != jetstream.LimitsPolicy {
		return bad("retention", have.Retention, want.Retention)
	}
	if have.Mirror != nil {
		return bad("mirror", have.Mirror.Name, "none")
	}
	if have.Sealed {
		return bad("sealed", true, false)
	}
	if have.NoAck {
		return bad("no-ack", true, false)
	}
	// What follows would lose or hide acknowledged events: each aggregate
	// (a group) has many events on its subject, a transform stores them
	// under subjects no read of the log asks for, and sources mix in
	// messages the log did not append.
	if have.MaxMsgsPerSubject > 0 {
		return fmt.Errorf("%w: stream %s has max messages per subject %d: it would keep only the last %[3]d events of each aggregate, dropping the rest (set it to unlimited: nats stream edit %[2]s --max-msgs-per-subject=-1)",
			ErrIncompatibleStream, have.Name, have.MaxMsgsPerSubject)
	}
	if t := have.SubjectTransform; t != nil && t.Destination != "" {
		return fmt.Errorf("%w: stream %s has a subject transform (%s to %s): appends would be acknowledged but stored under subjects no read asks for",
			ErrIncompatibleStream, have.Name, t.Source, t.Destination)
	}
	if len(have.Sources) > 0 {
		return bad("sources", len(have.Sources), "none")
	}
	return discardsOld(have)
}

// discardsOld refuses a stream that drops its oldest events when full:
// discard policy old with a message or byte limit. The log wants a full
// stream to refuse appends instead (discard new), as it creates it;
// `nats stream add` defaults to discard old.
func discardsOld(c jetstream.StreamConfig) error {
	if c.Discard != jetstream.DiscardOld || (c.MaxMsgs <= 0 && c.MaxBytes <= 0) {
		return nil
	}
	return fmt.Errorf("%w: stream %s has discard policy old with a limit (max messages %d, max bytes %d): when full it would drop the oldest events instead of refusing appends (set discard new: nats stream edit %[2]s --discard=new)",
		ErrIncompatibleStream, c.Name, c.MaxMsgs, c.MaxBytes)
}

// noPeersRetry is the pause between attempts to create a stream while the
// cluster has too few peers for it.
const noPeersRetry = 200 * time.Millisecond

// createStream creates the stream, trying again while the cluster reports
// too few peers for its replicas: a node that is starting, restarting or
// slow to answer its heartbeats under load is offline to the meta leader
// for a moment. ctx bounds the wait (Open's RequestTimeout); past it the
// last error is returned, saying so.
func createStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	for {
		s, err := js.CreateStream(ctx, want)
		var ae *jetstream.APIError
		if err == nil || !errors.As(err, &ae) || ae.ErrorCode != codeNoPeers {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%d replicas wanted; the cluster had too few peers online until the request timeout)", err, want.Replicas)
		case <-time.After(noPeersRetry):
		}
	}
}
