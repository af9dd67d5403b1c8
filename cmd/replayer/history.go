package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
)

// history writes a sample event history: installations with identities and
// key packages, one group they all join through commits and Welcomes, then
// application messages fanned out through delivery queues and acknowledged.
// MLS payloads are random bytes standing in for real MLS messages.
type history struct {
	installations []events.InstallationID
	positions     map[events.Aggregate]uint64
	byKind        map[events.Kind]int
	appended      int
	now           time.Time
}

const demoChannel = "inbox"

func newHistory(run string, n int) *history {
	h := &history{
		positions: map[events.Aggregate]uint64{},
		byKind:    map[events.Kind]int{},
		now:       time.Now().UTC(),
	}
	for i := range n {
		h.installations = append(h.installations, events.InstallationID(fmt.Sprintf("demo-%s-%04d", run, i)))
	}
	return h
}

// append records bodies as one transition on one aggregate (one atomic
// batch), tracking positions.
func (h *history) append(ctx context.Context, log *engine.Log, agg events.Aggregate, bodies ...events.Body) error {
	expected := h.positions[agg]
	evs := make([]events.Event, len(bodies))
	for i, b := range bodies {
		h.now = h.now.Add(time.Millisecond)
		evs[i] = events.Event{Aggregate: agg, Position: expected + uint64(i) + 1, Time: h.now, Body: b}
	}
	if _, err := log.Append(ctx, expected, evs...); err != nil {
		return err
	}
	h.positions[agg] = expected + uint64(len(bodies))
	for _, b := range bodies {
		h.byKind[b.Kind()]++
	}
	h.appended += len(bodies)
	return nil
}

func (h *history) write(ctx context.Context, log *engine.Log, messages int) (int, error) {
	const suite = 0x0003
	groupID := randomBytes(16)
	groupHex := fmt.Sprintf("%x", groupID)
	kpRefs := map[events.InstallationID][]byte{}

	for _, id := range h.installations {
		inst := events.Aggregate{Installation: id, Type: events.AggInstallation}
		if err := h.append(ctx, log, inst, events.InstallationCreated{
			Installation: id, Ciphersuite: suite,
			SignaturePublicKey: randomBytes(32), SignaturePrivateKey: events.Secret(randomBytes(32)),
			Credential: []byte(id),
		}); err != nil {
			return h.appended, err
		}
		ref := randomBytes(32)
		kpRefs[id] = ref
		kp := events.Aggregate{Installation: id, Type: events.AggKeyPackage, ID: fmt.Sprintf("%x", ref)}
		if err := h.append(ctx, log, kp,
			events.KeyPackageGenerated{Ref: ref, Ciphersuite: suite, KeyPackage: randomBytes(300),
				InitPrivateKey: events.Secret(randomBytes(32)), EncryptionPrivateKey: events.Secret(randomBytes(32)), LastResort: true},
			events.KeyPackagePublished{Ref: ref, Destination: "directory"},
		); err != nil {
			return h.appended, err
		}
	}

	// The first installation creates the group and adds the others one
	// commit at a time; each joiner processes a Welcome.
	creator := h.installations[0]
	groupOf := func(id events.InstallationID) events.Aggregate {
		return events.Aggregate{Installation: id, Type: events.AggGroup, ID: groupHex}
	}
	if err := h.append(ctx, log, groupOf(creator), events.GroupCreated{
		GroupID: groupID, Ciphersuite: suite, Epoch: 0, State: events.Secret(randomBytes(256)),
	}); err != nil {
		return h.appended, err
	}
	epoch := uint64(0)
	for leaf, id := range h.installations[1:] {
		epoch++
		added := events.Member{Leaf: uint32(leaf + 1), Identity: []byte(id)}
		// Every current member records the commit as one atomic transition.
		for _, m := range h.installations[:leaf+1] {
			if err := h.append(ctx, log, groupOf(m),
				events.CommitApplied{GroupID: groupID, Epoch: epoch, EpochAuthenticator: randomBytes(32),
					ConfirmedTranscriptHash: randomBytes(32), Commit: randomBytes(400),
					State: events.Secret(randomBytes(256)), Added: []events.Member{added}},
				events.MemberAdded{GroupID: groupID, Epoch: epoch, Leaf: added.Leaf, Identity: added.Identity, KeyPackageRef: kpRefs[id]},
			); err != nil {
				return h.appended, err
			}
		}
		if err := h.append(ctx, log, groupOf(id), events.WelcomeProcessed{
			GroupID: groupID, Epoch: epoch, KeyPackageRef: kpRefs[id], Welcome: randomBytes(600),
			EpochAuthenticator: randomBytes(32), State: events.Secret(randomBytes(256)),
		}); err != nil {
			return h.appended, err
		}
		kp := events.Aggregate{Installation: id, Type: events.AggKeyPackage, ID: fmt.Sprintf("%x", kpRefs[id])}
		if err := h.append(ctx, log, kp, events.KeyPackageConsumed{Ref: kpRefs[id], GroupID: groupID, LastResort: true}); err != nil {
			return h.appended, err
		}
	}

	// Application messages: the sender records it, the service queues it
	// for every other member, each recipient records it as received.
	queueSeq := map[events.InstallationID]uint64{}
	for i := range messages {
		sender := h.installations[i%len(h.installations)]
		msgID := randomBytes(16)
		content := events.Secret(fmt.Sprintf("message %d from %s", i, sender))
		if err := h.append(ctx, log, groupOf(sender), events.ApplicationMessageSent{
			GroupID: groupID, Epoch: epoch, SenderLeaf: uint32(i % len(h.installations)), Sender: sender,
			MessageID: msgID, Content: content,
		}); err != nil {
			return h.appended, err
		}
		for _, r := range h.installations {
			if r == sender {
				continue
			}
			queueSeq[r]++
			q := events.Aggregate{Installation: r, Type: events.AggDelivery, ID: demoChannel}
			if err := h.append(ctx, log, q, events.DeliveryEnqueued{
				Recipient: r, Channel: demoChannel, Sequence: queueSeq[r], Payload: randomBytes(120),
				ExpiresAt: h.now.Add(24 * time.Hour), IdempotencyKey: fmt.Sprintf("%x/%s", msgID, r),
			}); err != nil {
				return h.appended, err
			}
			if err := h.append(ctx, log, groupOf(r), events.ApplicationMessageReceived{
				GroupID: groupID, Epoch: epoch, SenderLeaf: uint32(i % len(h.installations)), Sender: sender,
				MessageID: msgID, Content: content,
			}); err != nil {
				return h.appended, err
			}
		}
	}
	// Every recipient acknowledges its whole queue.
	for _, r := range h.installations {
		if queueSeq[r] == 0 {
			continue
		}
		q := events.Aggregate{Installation: r, Type: events.AggDelivery, ID: demoChannel}
		if err := h.append(ctx, log, q, events.DeliveryAcknowledged{Recipient: r, Channel: demoChannel, UpTo: queueSeq[r]}); err != nil {
			return h.appended, err
		}
	}
	return h.appended, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
