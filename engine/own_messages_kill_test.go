package engine

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/projections"
)

// envKillChild carries what the child of TestOwnMessagesAfterSIGKILL
// needs: server URL, read-model directory, group id (hex), first message
// number, and whether it kills itself after its first Send ("self") or
// waits for the parent's SIGKILL ("wait"), separated by spaces.
const envKillChild = "EPOCHLOG_TEST_KILL_CHILD"

// killDBFill is the fill byte of alice's raw read-model key, which the
// child rebuilds.
const killDBFill = 0xa1

// TestOwnMessagesAfterSIGKILLChild is alice's service, run by
// TestOwnMessagesAfterSIGKILL: it sends messages (now and then after a
// commit), fanning each output out as the live path does, until it is
// killed. It does nothing when run alone.
func TestOwnMessagesAfterSIGKILLChild(t *testing.T) {
	arg := os.Getenv(envKillChild)
	if arg == "" {
		t.Skip("run by TestOwnMessagesAfterSIGKILL")
	}
	f := strings.Fields(arg)
	url, dir, mode := f[0], f[1], f[4]
	gid, err := hex.DecodeString(f[2])
	if err != nil {
		t.Fatal(err)
	}
	first, err := strconv.Atoi(f[3])
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg := eventlog.Config{NATSURL: url, RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
	l, err := eventlog.Open(ctx, cfg, keyring(t, 1, 0x42))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDeliveries(l, nil)
	alice, err := OpenInstallation(ctx, l, "alice", dir+"/alice.db", rawDBKey(t, killDBFill), &InstallationOptions{UpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	fanOut := func(recipients []events.InstallationID, payload []byte, key string) {
		if _, err := d.FanOut(ctx, recipients, mlsChannel, payload, time.Time{}, key); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	for i := first; ; i++ {
		if i%4 == 3 {
			co, err := alice.Update(ctx, gid)
			if err != nil {
				t.Fatal(err)
			}
			fanOut(co.Recipients, co.Commit, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch))
		}
		out, err := alice.Send(ctx, gid, []byte(fmt.Sprintf("m%d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if mode == "self" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL) // recorded, never queued
		}
		fanOut(out.Recipients, out.Message, fmt.Sprintf("msg-%x", out.MessageID))
	}
}

// A service killed (SIGKILL, a real child process) at any point of its
// sends, once right after a Send's append and before its fan-out, is
// restarted with the recovery of examples/backend (OwnCommits and
// OwnMessages fanned out again under the live keys, by a Deliveries that
// served the queues before): every member receives every message alice
// recorded exactly once, in order, and nothing is left queued.
func TestOwnMessagesAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; not with -short")
	}
	ctx := context.Background()
	b := newBackend(t)
	alice, err := CreateInstallation(ctx, b.log, "alice", b.dbPath("alice"), rawDBKey(t, killDBFill), b.opts())
	if err != nil {
		t.Fatal(err)
	}
	b.insts["alice"], b.keys["alice"] = alice, rawDBKey(t, killDBFill)
	b.create("bob")
	b.create("carol")
	gid := b.groupOf(alice, "bob", "carol")
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (the kill times)", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	received := map[events.InstallationID][]string{}
	next := 0
	for round, mode := range []string{"self", "wait", "wait", "wait"} {
		child := childproc.Start(t, "TestOwnMessagesAfterSIGKILLChild",
			[]string{fmt.Sprintf("%s=%s %s %x %d %s", envKillChild, b.srv.URL(), b.dir, gid, next, mode)}, "-test.count=1", "-test.v")
		if mode == "wait" {
			for {
				line, err := child.Next()
				if err != nil {
					child.Kill()
					child.Wait()
					t.Fatalf("round %d: child not ready: %v\n%s", round, err, child.Output())
				}
				if line == "ready" {
					break
				}
			}
			time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond) // kill it somewhere in its sends
			child.Kill()
		}
		if err := child.Wait(); !child.Killed() {
			t.Fatalf("round %d: child not killed (wait: %v)\n%s", round, err, child.Output())
		}

		// The restart: alice's read model as the killed process left it.
		alice, err := OpenInstallation(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], b.opts())
		if err != nil {
			t.Fatalf("round %d: reopen alice after SIGKILL: %v", round, err)
		}
		b.insts["alice"] = alice
		b.redeliver(alice, gid)
		delete(b.insts, "alice")
		for _, id := range []events.InstallationID{"bob", "carol"} {
			for _, r := range b.drain(id) { // fails on a refusal: a message twice, or before its commit
				received[id] = append(received[id], string(r.Content.Bytes()))
			}
		}
		// Every message alice recorded (OwnMessages leaves out those of
		// retired epochs): contents m0, m1, ... in the order sent.
		sent := sentCount(t, alice, gid)
		var want []string
		for i := range sent {
			want = append(want, "m"+strconv.Itoa(i))
		}
		if err := alice.Close(); err != nil {
			t.Fatal(err)
		}
		for _, id := range []events.InstallationID{"bob", "carol"} {
			if fmt.Sprint(received[id]) != fmt.Sprint(want) {
				t.Fatalf("round %d (%s): %s received %v, alice recorded %d messages: want %v", round, mode, id, received[id], sent, want)
			}
		}
		if mode == "self" && len(want) != 1 {
			t.Fatalf("round %d: %d messages recorded, want the one sent before the kill", round, len(want))
		}
		next = len(want)
		t.Logf("round %d (%s): %d messages recorded and received", round, mode, len(want))
	}
	for _, id := range []events.InstallationID{"bob", "carol"} {
		if ds, err := b.del.Fetch(ctx, id, mlsChannel, 0); err != nil || len(ds) != 0 {
			t.Fatalf("%s after the recoveries: %d deliveries still queued, %v", id, len(ds), err)
		}
	}
}

// sentCount is how many messages in's read model holds as sent to gid.
func sentCount(t *testing.T, in *Installation, gid []byte) int {
	t.Helper()
	return countMessages(t, in, gid, func(m projections.Message) bool { return m.Direction == "sent" })
}
