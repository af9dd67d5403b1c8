package projections

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// streamBuilder produces a realistic, deterministic event stream for one
// installation: contiguous stream sequences, contiguous positions per
// aggregate, event times one second apart.
type streamBuilder struct {
	inst events.InstallationID
	seq  uint64
	pos  map[events.Aggregate]uint64
	t0   time.Time
	recs []Record
	// mlsSizes pads MLS payloads to the sizes real groups produce (see
	// mlsSized): the read model's work depends on row sizes.
	mlsSizes bool
}

// Sizes measured in the demo's read models (10 installations, real MLS
// with ciphersuite 1): group state about 8 KiB, commit about 900 B, 32 B
// epoch authenticator and transcript hash, 16 B message ids.
const (
	mlsStateSize   = 8 << 10
	mlsCommitSize  = 900
	mlsHashSize    = 32
	mlsMsgIDSize   = 16
	mlsContentSize = 120
)

// mlsSized returns b, or with mlsSizes b padded (deterministically) to n
// bytes.
func (s *streamBuilder) mlsSized(b []byte, n int) []byte {
	if !s.mlsSizes || len(b) >= n {
		return b
	}
	out := make([]byte, n)
	copy(out, b)
	for i := len(b); i < n; i++ {
		out[i] = byte(i*31 + len(b))
	}
	return out
}

func newStream(inst string) *streamBuilder {
	return &streamBuilder{inst: events.InstallationID(inst), pos: map[events.Aggregate]uint64{}, t0: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (s *streamBuilder) add(typ events.AggregateType, id string, b events.Body) Record {
	agg := events.Aggregate{Installation: s.inst, Type: typ, ID: id}
	s.pos[agg]++
	s.seq++
	r := Record{Seq: s.seq, Event: events.Event{Aggregate: agg, Position: s.pos[agg], Time: s.t0.Add(time.Duration(s.seq) * time.Second), Body: b}}
	s.recs = append(s.recs, r)
	return r
}

func gid(i int) []byte  { return []byte(fmt.Sprintf("group-%04d", i)) }
func kref(i int) []byte { return []byte(fmt.Sprintf("kp-%04d", i)) }

func (s *streamBuilder) installation() {
	s.add(events.AggInstallation, "", events.InstallationCreated{
		Installation: s.inst, Ciphersuite: 3, SignaturePublicKey: []byte("sigpub-" + s.inst),
		SignaturePrivateKey: events.NewSecret([]byte("sigpriv-" + s.inst)), Credential: []byte("cred-" + s.inst),
	})
}

func (s *streamBuilder) keyPackage(i int, lastResort bool) {
	s.add(events.AggKeyPackage, hex.EncodeToString(kref(i)), events.KeyPackageGenerated{
		Ref: kref(i), Ciphersuite: 3, KeyPackage: []byte(fmt.Sprintf("kp-bytes-%d", i)),
		InitPrivateKey: events.NewSecret([]byte(fmt.Sprintf("init-priv-%d", i))), EncryptionPrivateKey: events.NewSecret([]byte(fmt.Sprintf("enc-priv-%d", i))),
		LastResort: lastResort,
	})
}

func (s *streamBuilder) kpEvent(i int, b events.Body) {
	s.add(events.AggKeyPackage, hex.EncodeToString(kref(i)), b)
}

func (s *streamBuilder) group(i int, b events.Body) Record {
	return s.add(events.AggGroup, hex.EncodeToString(gid(i)), b)
}

func (s *streamBuilder) commit(g int, epoch uint64, added, removed []events.Member) Record {
	return s.group(g, events.CommitApplied{
		GroupID: gid(g), Epoch: epoch, EpochAuthenticator: s.mlsSized([]byte(fmt.Sprintf("auth-%d-%d", g, epoch)), mlsHashSize),
		ConfirmedTranscriptHash: s.mlsSized([]byte(fmt.Sprintf("cth-%d-%d", g, epoch)), mlsHashSize),
		Commit:                  s.mlsSized([]byte(fmt.Sprintf("commit-%d-%d", g, epoch)), mlsCommitSize),
		State:                   events.NewSecret(s.mlsSized([]byte(fmt.Sprintf("state-%d-%d", g, epoch)), mlsStateSize)), Added: added, Removed: removed,
	})
}

func (s *streamBuilder) message(g int, epoch uint64, n int, sent bool) Record {
	id := s.mlsSized([]byte(fmt.Sprintf("msg-%d-%d", g, n)), mlsMsgIDSize)
	content := events.NewSecret(s.mlsSized([]byte(fmt.Sprintf("hello %d in group %d", n, g)), mlsContentSize))
	if sent {
		return s.group(g, events.ApplicationMessageSent{GroupID: gid(g), Epoch: epoch, SenderLeaf: 0, Sender: s.inst, MessageID: id, Content: content, AuthenticatedData: []byte("ad")})
	}
	return s.group(g, events.ApplicationMessageReceived{GroupID: gid(g), Epoch: epoch, SenderLeaf: 1, Sender: "peer-1", MessageID: id, Content: content})
}

func (s *streamBuilder) delivery(channel string, b events.Body) Record {
	return s.add(events.AggDelivery, channel, b)
}

// sampleStream covers every kind of the catalogue: an installation, key
// packages through their whole lifecycle, groups created and joined,
// commits over several epochs with retirements, members, proposals,
// messages both ways, and a delivery queue with acks and an expiry.
func sampleStream(t testing.TB, inst string, groups, msgs int) []Record {
	t.Helper()
	return buildSample(newStream(inst), groups, msgs)
}

// mlsSizedStream is sampleStream with MLS payloads of real sizes.
func mlsSizedStream(t testing.TB, inst string, groups, msgs int) []Record {
	t.Helper()
	s := newStream(inst)
	s.mlsSizes = true
	return buildSample(s, groups, msgs)
}

func buildSample(s *streamBuilder, groups, msgs int) []Record {
	inst := string(s.inst)
	s.installation()
	s.keyPackage(1, true)
	s.kpEvent(1, events.KeyPackagePublished{Ref: kref(1), Destination: "directory"})
	s.keyPackage(2, false)
	s.kpEvent(2, events.KeyPackagePublished{Ref: kref(2), Destination: "directory"})
	for g := 0; g < groups; g++ {
		s.group(g, events.GroupCreated{GroupID: gid(g), Ciphersuite: 3, Epoch: 0, State: events.NewSecret(s.mlsSized([]byte(fmt.Sprintf("state-%d-0", g)), mlsStateSize))})
		s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 0, Leaf: 0, Identity: []byte(inst)})
		s.group(g, events.ProposalStaged{GroupID: gid(g), Epoch: 0, ProposalRef: []byte("prop-1"), ProposalType: 1, SenderLeaf: 0, Proposal: []byte("add peer-1")})
		s.commit(g, 1, []events.Member{{Leaf: 1, Identity: []byte("peer-1")}}, nil)
		s.group(g, events.MemberAdded{GroupID: gid(g), Epoch: 1, Leaf: 1, Identity: []byte("peer-1")})
		epoch := uint64(1)
		for n := 0; n < msgs; n++ {
			if n > 0 && n%7 == 0 {
				epoch++
				var added, removed []events.Member
				if epoch == 3 {
					added = []events.Member{{Leaf: 2, Identity: []byte("peer-2")}}
				}
				if epoch == 5 {
					removed = []events.Member{{Leaf: 2, Identity: []byte("peer-2")}}
				}
				s.commit(g, epoch, added, removed)
				if epoch == 5 {
					s.group(g, events.MemberRemoved{GroupID: gid(g), Epoch: 5, Leaf: 2, Identity: []byte("peer-2")})
				}
				if epoch > 3 {
					s.group(g, events.EpochSecretsRetired{GroupID: gid(g), Epochs: []uint64{epoch - 4}})
				}
			}
			s.message(g, epoch, n, n%2 == 0)
		}
	}
	// Joined from a Welcome, consuming the one-time key package.
	s.kpEvent(2, events.KeyPackageConsumed{Ref: kref(2), GroupID: gid(900)})
	s.group(900, events.WelcomeProcessed{GroupID: gid(900), Epoch: 4, KeyPackageRef: kref(2), Welcome: []byte("welcome"), EpochAuthenticator: []byte("auth-900-4"), State: events.NewSecret(s.mlsSized([]byte("state-900-4"), mlsStateSize))})
	s.group(900, events.MemberAdded{GroupID: gid(900), Epoch: 4, Leaf: 3, Identity: []byte(inst)})
	s.message(900, 4, 1, false)
	// The last-resort package rotates twice: only current + previous keep
	// private keys.
	s.kpEvent(1, events.KeyPackageConsumed{Ref: kref(1), GroupID: gid(901), LastResort: true})
	s.keyPackage(3, true)
	s.kpEvent(1, events.KeyPackageRotated{Ref: kref(1), ReplacedBy: kref(3)})
	s.keyPackage(4, true)
	s.kpEvent(3, events.KeyPackageRotated{Ref: kref(3), ReplacedBy: kref(4)})
	// A delivery queue.
	far := s.t0.AddDate(100, 0, 0) // PendingDeliveries compares with the wall clock
	for i := uint64(1); i <= 5; i++ {
		s.delivery("welcome", events.DeliveryEnqueued{Recipient: s.inst, Channel: "welcome", Sequence: i, Payload: []byte(fmt.Sprintf("payload-%d", i)), ExpiresAt: far, IdempotencyKey: fmt.Sprintf("%s-welcome-%d", inst, i)})
	}
	s.delivery("welcome", events.DeliveryAcknowledged{Recipient: s.inst, Channel: "welcome", UpTo: 2})
	s.delivery("welcome", events.DeliveryExpired{Recipient: s.inst, Channel: "welcome", Sequence: 4, ExpiresAt: far})
	return s.recs
}

func applyAll(t testing.TB, db *DB, recs []Record) {
	t.Helper()
	if err := db.Apply(context.Background(), recs); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// sameAsFresh fails unless migrated, a file of the previous schema
// migrated in place to schema, holds what fresh, a build of the same
// events at schema, holds.
func sameAsFresh(t *testing.T, fresh, migrated *DB, schema int, when string) {
	t.Helper()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != schema {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	got, err := migrated.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("%s: v%d migrated in place differs from a fresh v%d build: %v", when, schema-1, schema, d)
	}
}
