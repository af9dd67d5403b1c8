package engine

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// envFullTree1000 adds the group of 1,000 to
// BenchmarkMLSThroughEngineFullTree (its set-up takes about a minute).
const envFullTree1000 = "EPOCHLOG_BENCH_FULLTREE_1000"

// BenchmarkMLSThroughEngineFullTree is BenchmarkMLSThroughEngine in a
// group grown as a long-lived group's tree fills: the committer adds one
// bare member, and from then on each new member, joined from its
// Welcome, adds the next one by a commit with a path, which both engine
// installations process. Every parent node then holds a key, so a commit
// with a path is a few KiB (encrypted to one node per level) where the
// other benchmark's, after one commit adding everyone, is encrypted to
// every member. 100 members by default; 1,000 with
// $EPOCHLOG_BENCH_FULLTREE_1000 set.
func BenchmarkMLSThroughEngineFullTree(b *testing.B) {
	sizes := []int{100}
	if os.Getenv(envFullTree1000) != "" {
		sizes = append(sizes, 1000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			env := mlsBenchGroup(b, n, true)
			env.run(b)
		})
	}
}

// growOneByOne fills the group (the committer and the receiver in it) to
// env.size members one at a time: the committer adds the first bare
// member; each bare member, once joined, commits the next one's Add with
// a path and is not used again; the installations receive every commit.
func (env *mlsBenchEnv) growOneByOne(ctx context.Context) error {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(DefaultCiphersuite))
	if err != nil {
		return err
	}
	newPeer := func(i int) (*mls.KeyPackage, *mls.KeyPackageSecrets, error) {
		sig, err := cs.GenerateSignatureKey()
		if err != nil {
			return nil, nil, err
		}
		return mls.NewKeyPackage(cs.ID(), mls.NewBasicCredential(fmt.Appendf(nil, "peer-%05d", i)), sig, nil)
	}
	kp, secrets, err := newPeer(0)
	if err != nil {
		return err
	}
	raw, err := kp.Marshal()
	if err != nil {
		return err
	}
	co, err := env.committer.AddMembers(ctx, env.gid, raw)
	if err != nil {
		return err
	}
	if _, err := env.receiver.Receive(ctx, co.Commit); err != nil {
		return fmt.Errorf("receiver processes the first add: %w", err)
	}
	welcome := co.Welcome
	for i := 1; i < env.size-2; i++ {
		var wm mls.MLSMessage
		if err := wm.Unmarshal(welcome); err != nil {
			return err
		}
		peer, err := mls.Join(&wm, kp, secrets, nil)
		if err != nil {
			return fmt.Errorf("peer %d joins: %w", i-1, err)
		}
		if kp, secrets, err = newPeer(i); err != nil {
			return err
		}
		_, res, err := peer.Commit(mls.CommitOptions{Add: []*mls.KeyPackage{kp}, ForcePath: true})
		if err != nil {
			return fmt.Errorf("peer %d adds peer %d: %w", i-1, i, err)
		}
		commit, err := res.Commit.Marshal()
		if err != nil {
			return err
		}
		if welcome, err = res.Welcome.Marshal(); err != nil {
			return err
		}
		for _, in := range []*Installation{env.committer, env.receiver} {
			if _, err := in.Receive(ctx, commit); err != nil {
				return fmt.Errorf("%s processes peer %d's commit: %w", in.id, i-1, err)
			}
		}
	}
	return nil
}
