package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// TestOneGroupFromManyGoroutinesAndTwoProcesses: goroutines of one
// Installation and of a second process of it (its own read model) send,
// update and commit proposals on one group at once; then the outputs go
// out in epoch order. Every operation that returned is recorded once,
// the member receives every message, nobody forks, and both histories
// verify and rebuild.
func TestOneGroupFromManyGoroutinesAndTwoProcesses(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	b.create("bob")
	gid := b.groupOf(alice, "bob")
	alice2, err := OpenInstallation(ctx, b.log, "alice", filepath.Join(b.dir, "alice-2.db"), b.keys["alice"], b.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	host := NewHost(b.log, b.del, nil)

	var mu sync.Mutex
	commits := map[uint64]*CommitOutput{}
	var sends []*SendOutput
	sent := map[string]bool{}
	record := func(c *CommitOutput, s *SendOutput) {
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			if prev := commits[c.Epoch]; prev != nil {
				t.Errorf("two commits returned for epoch %d", c.Epoch)
			}
			commits[c.Epoch] = c
		}
		if s != nil {
			if s.Update != nil {
				if prev := commits[s.Update.Epoch]; prev != nil {
					t.Errorf("two commits returned for epoch %d", s.Update.Epoch)
				}
				commits[s.Update.Epoch] = s.Update
			}
			sends = append(sends, s)
		}
	}
	// An operation may lose every race to the other process's
	// (ErrTooManyConflicts, documented): nothing of it is recorded but
	// a path update Send made first, which it returns beside the error.
	conflicts := 0
	lost := func(w int, s *SendOutput, err error) {
		if !errors.Is(err, ErrTooManyConflicts) {
			t.Errorf("worker %d: %v", w, err)
			return
		}
		mu.Lock()
		conflicts++
		mu.Unlock()
		if s != nil {
			if s.Update != nil {
				record(s.Update, nil)
			}
		}
	}
	const perWorker = 12
	var wg sync.WaitGroup
	for w, in := range []*Installation{alice, alice, alice2, alice2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				text := fmt.Sprintf("w%d-%d", w, i)
				switch {
				case i%5 == 4:
					c, err := in.Update(ctx, gid)
					if err != nil {
						lost(w, nil, err)
						continue
					}
					record(c, nil)
				case i%5 == 2 && w%2 == 1:
					res := host.Send(ctx, []SendRequest{{Installation: in, GroupID: gid, Content: []byte(text)}})
					if res[0].Err != nil {
						lost(w, res[0].Output, res[0].Err)
						continue
					}
					mu.Lock()
					sent[text] = true
					mu.Unlock()
					record(nil, res[0].Output)
				default:
					s, err := in.Send(ctx, gid, []byte(text), nil)
					if err != nil {
						lost(w, s, err)
						continue
					}
					mu.Lock()
					sent[text] = true
					mu.Unlock()
					record(nil, s)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Deliver in epoch order: the commit that starts an epoch, then the
	// messages of the epoch.
	sort.SliceStable(sends, func(i, j int) bool { return sends[i].Epoch < sends[j].Epoch })
	var epochs []uint64
	for e := range commits {
		epochs = append(epochs, e)
	}
	sort.Slice(epochs, func(i, j int) bool { return epochs[i] < epochs[j] })
	for k, e := range epochs {
		if k > 0 && e != epochs[k-1]+1 {
			t.Fatalf("commits returned for epochs %v: a gap", epochs)
		}
	}
	si := 0
	for _, e := range epochs {
		for si < len(sends) && sends[si].Epoch < e {
			b.deliverSend(&SendOutput{Message: sends[si].Message, Recipients: sends[si].Recipients, MessageID: sends[si].MessageID})
			si++
		}
		b.deliverCommit(commits[e])
	}
	for ; si < len(sends); si++ {
		b.deliverSend(&SendOutput{Message: sends[si].Message, Recipients: sends[si].Recipients, MessageID: sends[si].MessageID})
	}
	got := b.drain("bob")
	have := map[string]bool{}
	for _, r := range got {
		have[string(r.Content.Bytes())] = true
	}
	for text := range sent {
		if !have[text] {
			t.Errorf("bob did not receive %q", text)
		}
	}
	if len(got) != len(sent) {
		t.Errorf("bob received %d messages, %d were sent", len(got), len(sent))
	}
	for _, in := range []*Installation{alice, alice2} {
		if err := in.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ea, aa, err := alice.EpochAuthenticator(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*Installation{alice2, b.insts["bob"]} {
		if err := in.CheckEpochAuthenticator(ctx, gid, ea, aa); errors.Is(err, ErrForked) {
			t.Fatalf("%s at epoch %d: %v", in, ea, err)
		} else if err != nil {
			t.Errorf("%s at epoch %d: %v", in, ea, err)
		}
	}
	t.Logf("%d operations lost every race", conflicts)
	b.checkRebuild("alice")
	b.checkRebuild("bob")
}
