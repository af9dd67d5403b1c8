package eventlog

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/epochlog/epochlog/internal/flock"
)

// lockFileName is the embedded server's lock file in Config.DataDir.
const lockFileName = "epochlog.lock"

// inProcessLine is the lock file's second line for a server that does not
// listen (Config.EmbeddedInProcess).
const inProcessLine = "in-process, not reachable from outside"

// StoreLockedError is Open's error when another embedded server holds the
// data directory's lock: two servers on one store would corrupt each
// other's files. It names the directory and the holder as the holder
// described itself in the lock file, and unwraps to [ErrStoreLocked].
type StoreLockedError struct {
	Dir       string // the data directory (Config.DataDir)
	Holder    string // the holder's own line: "pid N <command> since <time> host <name>"; "" if not written yet
	PID       int    // the holder's process id; 0 if unknown
	URL       string // the holder's client URL; "" if it does not listen or has not said yet
	InProcess bool   // the holder runs with Config.EmbeddedInProcess: nothing outside its process can reach it
}

// Error names the directory and the holder, with what to do: connect to
// the holder's server (its URL, when it has one), or stop it.
func (e *StoreLockedError) Error() string {
	holder := e.Holder
	if holder == "" {
		holder = "holder not yet described: it is starting"
	}
	msg := fmt.Sprintf("eventlog: data directory %s is locked by another embedded server (%s)", e.Dir, holder)
	switch {
	case e.URL != "":
		return msg + fmt.Sprintf(": a server for this store runs at %s; connect to it with --nats %s (Config.NATSURL), or stop it", e.URL, e.URL)
	case e.InProcess:
		return msg + ": it is " + inProcessLine + "; stop that process (or close its Log) first"
	default:
		return msg + ": connect to that server with --nats <its URL> (Config.NATSURL), or stop it"
	}
}

// Unwrap returns ErrStoreLocked.
func (e *StoreLockedError) Unwrap() error { return ErrStoreLocked }

// storeLock is a held lock on a data directory. It lives as long as the
// embedded server on that directory.
type storeLock struct {
	path     string
	f        *os.File // holds the flock; closing it releases the lock
	info     os.FileInfo
	since    time.Time
	srv      atomic.Pointer[server.Server] // set once the server exists
	once     sync.Once
	released chan struct{} // closed once the lock is released
}

// heldLocks are the locks this process holds. flock(2) locks belong to
// open files, so a second Open in this process is refused like one in
// another process; the list only lets that Open wait out a Log being
// closed, whose lock is released just after its server has shut down.
var heldLocks struct {
	sync.Mutex
	locks []*storeLock
}

// lockStore takes the exclusive lock on dir/epochlog.lock (created 0600)
// and writes the holder's line into it. If another embedded server holds
// it, the error is a *StoreLockedError.
func lockStore(dir string) (*storeLock, error) {
	path := filepath.Join(dir, lockFileName)
	// Never through a symbolic link: the file is written and truncated.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|flock.NoFollow, 0o600)
	if err != nil {
		return nil, fmt.Errorf("eventlog: embedded server: lock file: %w", err)
	}
	info, err := f.Stat()
	if err == nil && !info.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("eventlog: embedded server: lock file: %w", err)
	}
	deadline := time.Now().Add(embeddedReadyTimeout)
	for retried := false; ; {
		ok, err := flock.Lock(f.Fd(), true, false)
		if errors.Is(err, flock.ErrUnsupported) {
			// The lock file is written, but a second embedded server on
			// the same store is not refused here.
			ok, err = true, nil
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("eventlog: embedded server: lock %s: %w", path, err)
		}
		if ok {
			break
		}
		h, found := inProcessHolder(info)
		switch {
		case found && h.closing() && time.Now().Before(deadline):
			// A Log of this process on the same store is closing: its
			// lock goes as soon as its server has shut down.
			select {
			case <-h.released:
			case <-time.After(time.Until(deadline)):
			}
			continue
		case !found && !retried:
			// The holder may have released it since (in this process,
			// the lock is released before it leaves the list).
			retried = true
			continue
		}
		f.Close()
		return nil, lockedError(dir, path)
	}
	lk := &storeLock{path: path, f: f, info: info, since: time.Now().UTC(), released: make(chan struct{})}
	if err := lk.describe(""); err != nil {
		f.Close()
		return nil, err
	}
	heldLocks.Lock()
	heldLocks.locks = append(heldLocks.locks, lk)
	heldLocks.Unlock()
	return lk, nil
}

// inProcessHolder finds the lock this process holds on the lock file info.
func inProcessHolder(info os.FileInfo) (*storeLock, bool) {
	heldLocks.Lock()
	defer heldLocks.Unlock()
	for _, h := range heldLocks.locks {
		if os.SameFile(h.info, info) {
			return h, true
		}
	}
	return nil, false
}

// closing reports whether the lock's server has begun to shut down.
func (lk *storeLock) closing() bool {
	srv := lk.srv.Load()
	return srv != nil && !srv.Running()
}

// describe writes the holder's line and, once the server is up, its
// client URL (or that it is in-process) as the second line.
func (lk *storeLock) describe(second string) error {
	cmd := "?"
	if len(os.Args) > 0 {
		// The command's name only: its arguments may hold secrets, and the
		// file outlives the process.
		cmd = filepath.Base(os.Args[0])
	}
	host, _ := os.Hostname()
	s := fmt.Sprintf("pid %d %s since %s host %s\n", os.Getpid(), oneWord(cmd), lk.since.Format(time.RFC3339), oneWord(host))
	if second != "" {
		s += second + "\n"
	}
	if _, err := lk.f.WriteAt([]byte(s), 0); err != nil {
		return fmt.Errorf("eventlog: embedded server: write lock file %s: %w", lk.path, err)
	}
	if err := lk.f.Truncate(int64(len(s))); err != nil {
		return fmt.Errorf("eventlog: embedded server: write lock file %s: %w", lk.path, err)
	}
	return nil
}

// oneWord makes s safe as one word of the lock file's line: no spaces, no
// control characters (they would break the line or a terminal).
func oneWord(s string) string {
	if s == "" {
		return "?"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// release empties the lock file (its content would describe a holder that
// is gone) and releases the lock. It is safe to call more than once.
func (lk *storeLock) release() {
	lk.once.Do(func() {
		_ = lk.f.Truncate(0)
		_ = lk.f.Close()
		heldLocks.Lock()
		for i, h := range heldLocks.locks {
			if h == lk {
				heldLocks.locks = append(heldLocks.locks[:i], heldLocks.locks[i+1:]...)
				break
			}
		}
		heldLocks.Unlock()
		close(lk.released)
	})
}

// lockedError reads what the holder wrote of itself into the lock file.
func lockedError(dir, path string) error {
	e := &StoreLockedError{Dir: dir}
	f, err := os.Open(path)
	if err != nil {
		return e
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan() && i < 2; i++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case i == 0:
			e.Holder = line
			_, _ = fmt.Sscanf(line, "pid %d", &e.PID)
		case strings.HasPrefix(line, "url "):
			e.URL = strings.TrimPrefix(line, "url ")
		case line == inProcessLine:
			e.InProcess = true
		}
	}
	return e
}
