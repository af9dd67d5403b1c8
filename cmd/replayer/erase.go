package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// eraseConfirm asks the operator to type the installation id, and reports
// whether they did. It is a variable for tests.
var eraseConfirm = func(env *cliEnv, inst string) bool {
	fmt.Fprintf(env.stderr, "replayer: erase installation %s for good (its data keys are shredded, its events purged)? type its id to confirm: ", inst)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == inst
}

// stdinIsTerminal reports whether standard input is a character device
// other than /dev/null, as main's stderrIsTerminal does: someone who may
// answer the confirmation. It is a variable for tests.
var stdinIsTerminal = func() bool {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	// /dev/null is a character device too, but nobody can answer there:
	// it is refused like a pipe (exit 2), not asked and read as "no".
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

func runErase(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "erase", "--installation ID [--yes] [--db PATH] [flags]",
		"Erases an installation for good: writes a sealed tombstone (it existed and was\n"+
			"erased), shreds its data keys from the key bucket, then purges its events from\n"+
			"the stream, in that order. Interrupted, running it again finishes the erase.\n"+
			"Rebuilds of it then fail with \"erased\"; other installations are not touched.\n"+
			"With --db it also deletes the installation's read model, after opening it with\n"+
			"its key (--db-key-file, ...) to check whose it is, and its own key file\n"+
			"(<db without .db>.key, holding that key; a key file other read models may use\n"+
			"is kept, and named). Without --yes it asks\n"+
			"you to type the installation id, and refuses when stdin is not a terminal.")
	var conn connFlags
	conn.register(fs, "") // no default: an erase names its store
	var keys keyFlags
	keys.register(fs)
	inst := fs.String("installation", "", "installation id to erase (required)")
	yes := fs.Bool("yes", false, "erase without asking (needed when stdin is not a terminal)")
	db := fs.String("db", "", "the installation's read model, deleted too (opened with its key first, to check it is this installation's)")
	dbKey := newDBKeyFlags(fs, "")
	by := fs.String("by", "", "who asks, recorded in the tombstone (default: $USER, else the user running the command)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	id := events.InstallationID(*inst)
	if *inst == "" {
		return usageError{"--installation is required"}
	}
	if err := id.Validate(); err != nil {
		return usageError{fmt.Sprintf("--installation: %v", err)}
	}
	if !*yes {
		if !stdinIsTerminal() {
			return usageError{fmt.Sprintf("erase of installation %s needs --yes when stdin is not a terminal: it cannot be undone", id)}
		}
		if !eraseConfirm(env, *inst) {
			return fmt.Errorf("erase of installation %s not confirmed; nothing was changed", id)
		}
	}
	var key projections.Key
	existed := false
	if *db != "" {
		_, err := os.Lstat(*db)
		existed = err == nil
		if key, err = dbKey.key(env); err != nil {
			// Run again after it finished, the read model and its key
			// file are gone: the key is needed only to check a read
			// model that is there.
			if existed || !errors.Is(err, os.ErrNotExist) {
				return err
			}
			key = projections.Key{}
		}
	} else if dbKey.onCommandLine() {
		return usageError{"a read-model key is for --db: give the read model too"}
	}
	who := *by
	if who == "" {
		who = env.getenv("USER")
	}
	if who == "" {
		// A service manager, cron or a container often sets no $USER,
		// and the tombstone would name nobody.
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	cfg.NoCreate = true                      // a mistyped --stream or --data is refused, not created
	log, err := openEventLog(ctx, cfg, ring) // writable: erase writes and purges
	if err != nil {
		return err
	}
	defer log.Close()
	warnIfNotActive(ctx, env, log)
	opts := &engine.EraseOptions{By: who, ReadModel: *db, ReadModelKey: key}
	if *db != "" && dbKey.passFile == "" {
		// Proven, durably, before the read model goes: a run killed
		// after it went, before its key file did, can tell its key
		// file from one that may open another read model.
		opts.BeforeRemove = func() error { return writeEraseMarker(*db, id, keyFileCandidate(*db, dbKey.keyFile)) }
	}
	res, err := engine.Erase(ctx, log, id, opts)
	if err != nil {
		return err
	}
	var kf keyFileOutcome
	if *db != "" {
		proven := func(path string) bool { return provenByMarker(*db, id, path) }
		if kf = removeOwnKeyFile(*db, key, dbKey.keyFile, dbKey.passFile, proven); kf.err == nil {
			removeEraseMarker(*db)
		}
	}
	if *asJSON {
		out := map[string]any{"command": "erase", "installation": *inst,
			"erased_at": res.Tombstone.ErasedAt.Format(time.RFC3339Nano), "by": res.Tombstone.By, "tombstone_seq": res.TombstoneSeq,
			"resumed": res.Resumed, "keys_purged": res.KeysPurged, "events_purged": res.EventsPurged, "snapshots_purged": res.SnapshotsPurged,
			"db_removed": existed}
		if len(res.Removed) > 0 {
			rm := make([]map[string]any, len(res.Removed))
			for i, r := range res.Removed {
				rm[i] = map[string]any{"seq": r.Seq, "why": r.Why}
			}
			out["tombstone_subject_removed"] = rm
		}
		if kf.removed != "" {
			out["key_file_removed"] = kf.removed
		}
		if kf.kept != "" {
			out["key_file_kept"], out["key_file_kept_why"] = kf.kept, kf.why
		}
		if err := json.NewEncoder(env.stdout).Encode(out); err != nil {
			return err
		}
		return kf.err
	}
	verb := "erased"
	if res.Resumed {
		verb = "finished erasing"
	}
	fmt.Fprintf(env.stdout, "%s installation %s (tombstone at seq %d, erased at %s): %d data keys shredded, %d events purged\n",
		verb, id, res.TombstoneSeq, res.Tombstone.ErasedAt.Format(time.RFC3339), res.KeysPurged, res.EventsPurged)
	for _, r := range res.Removed {
		fmt.Fprintf(env.stdout, "removed the message at seq %d from the tombstone subject: %s\n", r.Seq, r.Why)
	}
	switch {
	case existed:
		fmt.Fprintf(env.stdout, "removed read model %s\n", *db)
	case *db != "":
		fmt.Fprintf(env.stdout, "no read model at %s: nothing removed there\n", *db)
	}
	if kf.removed != "" {
		fmt.Fprintf(env.stdout, "removed its key file %s\n", kf.removed)
	}
	if kf.kept != "" {
		fmt.Fprintf(env.stdout, "kept key file %s: %s\n", kf.kept, kf.why)
	}
	return kf.err
}

// keyFileOutcome is what erase did with the erased read model's key
// file: the path it removed, or the one it kept and why; err when the
// removal failed.
type keyFileOutcome struct {
	removed, kept, why string
	err                error
}

// removeOwnKeyFile removes the key file of the erased read model at db,
// if it has one of its own: <db without .db>.key beside it (what follow
// and status --db-keys-beside and demo use), a regular file holding key,
// the key erase opened the read model with, and no other name in its
// directory for the same file (a hard or symbolic link another read
// model's key may be). Any other file stays: one named by --db-key-file
// under another name may be the key of other read models too (a shared
// key), and is reported kept. A key to an erased read model opens
// nothing any more, but it is a secret left for nobody.
//
// It is removed only when proven the key of the read model this erase
// deleted: an erase that found the read model and opened it with the key
// from that very file recorded so (writeEraseMarker) before deleting it.
// A key file beside a --db that was not there (a first run on a read
// model deleted by hand, a mistyped path) may open another read model:
// it is kept, saying why, not removed on a guess.
func removeOwnKeyFile(db string, key projections.Key, named, passFile string, proven func(string) bool) keyFileOutcome {
	if passFile != "" {
		// No passphrase file is a read model's own by name; the salt that
		// made the key from it went with the read model.
		return keyFileOutcome{kept: passFile, why: "a passphrase file is never removed: other read models may use it; delete it once none does"}
	}
	own := strings.TrimSuffix(db, ".db") + ".key"
	if !strings.HasSuffix(db, ".db") {
		own = "" // no name of its own to tell its key by
	}
	sharedWhy := "its name is not the read model's own (" + own + "), so other read models may use it; delete it once none does"
	if own == "" {
		sharedWhy = "the read model's name does not end in .db, so no key file is its own by name; delete it once no other read model uses it"
	}
	if _, err := os.Lstat(named); named != "" && errors.Is(err, fs.ErrNotExist) {
		return keyFileOutcome{} // removed by an earlier run
	}
	if named != "" && (own == "" || !samePath(named, own)) {
		// A key named on the command line under another name: kept, and
		// a key file of its own beside it is not looked for (it would
		// hold another key, or this one twice).
		return keyFileOutcome{kept: named, why: sharedWhy}
	}
	if own == "" || !key.Valid() || key.IsPlaintext() {
		return keyFileOutcome{}
	}
	fi, err := os.Lstat(own)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return keyFileOutcome{}
	case err != nil:
		return keyFileOutcome{kept: own, why: err.Error()}
	case !fi.Mode().IsRegular():
		return keyFileOutcome{kept: own, why: "not a regular file (" + fi.Mode().Type().String() + "): the file it leads to may be other read models' key"}
	}
	k, err := readDBKeyFile(own)
	if err != nil {
		// Its error names the file and why (its mode, its content),
		// never the key.
		return keyFileOutcome{kept: own, why: "it cannot be read as a key file: " + err.Error()}
	}
	if !k.Equal(key) {
		// Not the key that opened the read model: not its key file.
		return keyFileOutcome{kept: own, why: "it does not hold the key the read model was opened with"}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return keyFileOutcome{kept: own, why: fmt.Sprintf("the file has %d names (hard links), one of which may be another read model's key", st.Nlink)}
	}
	if other := otherNameOf(own, fi); other != "" {
		return keyFileOutcome{kept: own, why: "the same file is also " + other + ", which may be another read model's key"}
	}
	if !proven(own) {
		return keyFileOutcome{kept: own, why: "no read model proved it is its key: " + db + " was not there to open with it, and no earlier erase of this installation opened it with this file; it may open another read model: delete it yourself if none uses it"}
	}
	if err := os.Remove(own); err != nil {
		return keyFileOutcome{kept: own, why: err.Error(), err: fmt.Errorf("installation erased, but its key file %s was not removed (erase again to finish): %w", own, err)}
	}
	if d, err := os.Open(filepath.Dir(own)); err == nil {
		_ = d.Sync() // the removal is durable; a failure leaves only the key of an erased read model
		d.Close()
	}
	return keyFileOutcome{removed: own}
}

// samePath reports whether a and b name the same path, once made
// absolute: "k.key" in the read model's directory is its own key file,
// however it is spelled.
func samePath(a, b string) bool {
	aa, err := filepath.Abs(a)
	if err != nil {
		return false
	}
	ab, err := filepath.Abs(b)
	return err == nil && aa == ab
}

// otherNameOf returns another entry of path's directory that is the file
// fi describes (a hard link, or a symbolic link to it), or "".
func otherNameOf(path string, fi os.FileInfo) string {
	dir := filepath.Dir(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	base := filepath.Base(path)
	for _, e := range ents {
		if e.Name() == base || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err == nil && os.SameFile(st, fi) {
			return p
		}
	}
	return ""
}

// eraseMarkerPath is the file beside read model db in which erase
// records, before deleting the read model, which key file opened it.
func eraseMarkerPath(db string) string { return db + ".erasing" }

// eraseMarker is what eraseMarkerPath holds: the installation and the
// identity of the key file (absolute path, device, inode, size, mtime),
// never a key.
type eraseMarker struct {
	Installation string `json:"installation"`
	KeyFile      string `json:"key_file"`
	Dev          uint64 `json:"dev"`
	Ino          uint64 `json:"ino"`
	Size         int64  `json:"size"`
	MtimeNS      int64  `json:"mtime_ns"`
}

// keyFileCandidate is the key file erase may remove with read model db:
// the one named by --db-key-file, else <db without .db>.key ("" for a
// read model not named *.db).
func keyFileCandidate(db, named string) string {
	if named != "" {
		return named
	}
	if !strings.HasSuffix(db, ".db") {
		return ""
	}
	return strings.TrimSuffix(db, ".db") + ".key"
}

// markerOf returns the marker of installation inst and key file path as
// it is now; ok false when path is not a regular file.
func markerOf(inst events.InstallationID, path string) (eraseMarker, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return eraseMarker{}, false
	}
	fi, err := os.Lstat(abs)
	if err != nil || !fi.Mode().IsRegular() {
		return eraseMarker{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return eraseMarker{}, false
	}
	return eraseMarker{Installation: string(inst), KeyFile: abs, Dev: uint64(st.Dev), Ino: st.Ino, Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}, true
}

// writeEraseMarker records, durably, that read model db, about to be
// deleted, was opened as inst's with the key in keyFile (nothing when
// there is no such file: no key file will be removed).
func writeEraseMarker(db string, inst events.InstallationID, keyFile string) error {
	m, ok := markerOf(inst, keyFile)
	if keyFile == "" || !ok {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	path := eraseMarkerPath(db)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("sync the directory of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync the directory of %s: %w", path, err)
	}
	return nil
}

// provenByMarker reports whether db's marker says an erase of inst
// opened the read model with the key in keyFile, the same file unchanged
// since.
func provenByMarker(db string, inst events.InstallationID, keyFile string) bool {
	b, err := os.ReadFile(eraseMarkerPath(db))
	if err != nil {
		return false
	}
	var rec eraseMarker
	if json.Unmarshal(b, &rec) != nil {
		return false
	}
	now, ok := markerOf(inst, keyFile)
	return ok && rec == now
}

// removeEraseMarker removes db's marker once its key file is dealt with
// (best effort: it names no secret, and proves only the same file).
func removeEraseMarker(db string) {
	if err := os.Remove(eraseMarkerPath(db)); err == nil {
		if d, err := os.Open(filepath.Dir(db)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
}
