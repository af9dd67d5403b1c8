package natstest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/internal/flock"
)

// Test servers listen on ports picked below the kernel's ephemeral range,
// each reserved for the life of the test process that picked it.
// A port in that range that a test picked free (or that a server listened
// on and gave up for a Restart) can be handed meanwhile to any outgoing
// connection as its local port: the test's own clients, a route between
// cluster nodes, another package's tests running beside it. Such a port
// stays taken for as long as that connection lives, and the node meant to
// listen on it never comes up. Below the range, only another test picking
// the same port at random can take it, and reserve (below) stops that:
// a server shut down for a restart keeps its port from every other test
// server on the machine, which its clients would otherwise reconnect to
// (a test that stops its server to see an operation fail once saw it
// succeed against another test's server).
const (
	// pickFloor is the lowest port picked: well above the ports services
	// commonly listen on.
	pickFloor = 20000
	// minPickRange is the fewest ports worth picking from; a machine whose
	// ephemeral range leaves fewer below it gets kernel-chosen ports.
	minPickRange = 2000
)

// pickRange is [lo, hi) to pick listening ports from, or 0, 0 when the
// ephemeral range leaves too few below it.
func pickRange() (lo, hi int) {
	hi = ephemeralLow()
	if hi-pickFloor < minPickRange {
		return 0, 0
	}
	return pickFloor, hi
}

// ephemeralLow is the lowest port of Linux's ephemeral range, or 0 where
// it cannot be read (the kernel chooses ports then).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}

// portFree reports whether a loopback port can be listened on now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// below the ephemeral range where the machine has one (see pickRange).
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	lo, hi := pickRange()
	ports := make([]int, n)
	for i := range ports {
		ln, err := listenPicked(lo, hi)
		if err != nil {
			tb.Fatalf("natstest: find a free port: %v", err)
		}
		// Held until all are picked, so the n ports differ.
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// listenPicked listens on a random free loopback port in [lo, hi) that
// it reserves, or on one the kernel chooses when hi is 0.
func listenPicked(lo, hi int) (net.Listener, error) {
	if hi == 0 {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	const tries = 200
	var err error
	for range tries {
		port := lo + rand.IntN(hi-lo)
		var ln net.Listener
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			continue
		}
		var ok bool
		if ok, err = reserve(port); ok {
			return ln, nil
		}
		ln.Close()
		if err == nil {
			err = fmt.Errorf("port %d: reserved by another test server", port)
		}
	}
	return nil, fmt.Errorf("no free port in %d-%d after %d tries: %w", lo, hi-1, tries, err)
}

// reserved holds the lock files of the ports this process reserved, open
// until it exits: a port is picked once per test process.
var reserved = struct {
	sync.Mutex
	files map[int]*os.File
}{files: map[int]*os.File{}}

// reserve reserves port for this process, for good: an exclusive flock(2)
// on a file named for it in a directory every test process on the
// machine shares, released when the process dies. False, and no error,
// when this process or another holds it. Where there is no flock(2),
// every port not reserved in this process is reserved.
func reserve(port int) (bool, error) {
	reserved.Lock()
	defer reserved.Unlock()
	if _, held := reserved.files[port]; held {
		return false, nil
	}
	dir := filepath.Join(os.TempDir(), "epochlog-natstest-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false, err
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return false, err
	}
	ok, err := flock.Lock(f.Fd(), true, false)
	if errors.Is(err, flock.ErrUnsupported) {
		ok, err = true, nil
	}
	if !ok || err != nil {
		f.Close()
		return false, err
	}
	reserved.files[port] = f
	return true, nil
}
