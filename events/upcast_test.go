package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A delivery.enqueued written by v1 code (relative expiry) opens as v2
// with the absolute expiry computed from the event time.
func TestUpcastDeliveryEnqueuedV1(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggDelivery, ID: "inbox"}
	h := eventHeader{Aggregate: agg, Position: 3, Time: testTime}
	for _, c := range []struct {
		secs uint32
		want time.Time
	}{{90, testTime.Add(90 * time.Second)}, {0, time.Time{}}} {
		v1 := deliveryEnqueuedV1{Recipient: "inst-bob", Channel: "inbox", Sequence: 41, Payload: []byte("payload"),
			ExpiresInSeconds: c.secs, IdempotencyKey: "k-41"}
		env, err := seal(r, testBinding, testInst, KindDeliveryEnqueued, 1, h, v1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Open(r, testInst, testBinding, env)
		if err != nil {
			t.Fatalf("open v1: %v", err)
		}
		want := Event{Aggregate: agg, Position: 3, Time: testTime, Body: DeliveryEnqueued{
			Recipient: "inst-bob", Channel: "inbox", Sequence: 41, Payload: []byte("payload"),
			ExpiresAt: c.want, IdempotencyKey: "k-41"}}
		assertEventEqual(t, got, want)
		if got.Body.SchemaVersion() != 2 {
			t.Fatalf("upcast body reports version %d", got.Body.SchemaVersion())
		}
		// Re-sealing writes v2, which opens to the same event.
		again, err := Open(r, testInst, testBinding, mustSeal(t, r, testBinding, got))
		if err != nil {
			t.Fatal(err)
		}
		assertEventEqual(t, again, want)
	}
}

// v2 bytes are not accepted as v1 and vice versa: the version in the record
// selects the decoder, and unknown fields are refused.
func TestVersionSelectsDecoder(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindDeliveryEnqueued]
	h := eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time}
	env, err := seal(r, testBinding, testInst, KindDeliveryEnqueued, 1, h, e.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v2 body labelled v1: got %v, want ErrMalformed", err)
	}
}

func TestUnknownFutureVersionAndKind(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindCommitApplied]
	h := eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time}
	for _, c := range []struct {
		kind    Kind
		version uint16
		mention []string
	}{
		{KindCommitApplied, 6, []string{"group.commit_applied", "version 6"}},
		{KindCommitApplied, 0, []string{"group.commit_applied", "version 0"}},
		{KindDeliveryEnqueued, 3, []string{"delivery.enqueued", "version 3"}},
		{"group.teleported", 1, []string{"group.teleported"}},
	} {
		env, err := seal(r, testBinding, testInst, c.kind, c.version, h, e.Body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(r, testInst, testBinding, env)
		if !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("%s v%d: got %v, want ErrUnknownVersion", c.kind, c.version, err)
		}
		for _, m := range c.mention {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("error %q does not mention %q", err, m)
			}
		}
	}
}

// Bodies written at version 1 of the kinds that gained fields for
// encrypted handshakes and proposals by reference open at their current
// version with those fields empty: a v1 commit names its sender in its
// PublicMessage, a v1 removal is no departure, a v1 proposal carries no
// message or state.
func TestUpcastGroupKindsV1(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	for _, c := range []struct {
		kind Kind
		v1   any
		want Body
	}{
		{KindCommitApplied, commitAppliedV1{GroupID: gid, Epoch: 5, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
			Commit: []byte("commit"), State: NewSecret([]byte("st")), Added: []Member{{Leaf: 1, Identity: []byte("bob")}}},
			CommitApplied{GroupID: gid, Epoch: 5, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
				Commit: []byte("commit"), State: NewSecret([]byte("st")), Added: []Member{{Leaf: 1, Identity: []byte("bob")}}}},
		{KindMemberRemoved, memberRemovedV1{GroupID: gid, Epoch: 7, Leaf: 2, Identity: []byte("carol")},
			MemberRemoved{GroupID: gid, Epoch: 7, Leaf: 2, Identity: []byte("carol")}},
		{KindProposalStaged, proposalStagedV1{GroupID: gid, Epoch: 4, ProposalRef: []byte{7}, ProposalType: 3, SenderLeaf: 1, Proposal: []byte("p")},
			ProposalStaged{GroupID: gid, Epoch: 4, ProposalRef: []byte{7}, ProposalType: 3, SenderLeaf: 1, Proposal: []byte("p")}},
		// The joins of v1 recorded their members as member_added events.
		{KindGroupCreated, groupCreatedV1{GroupID: gid, Ciphersuite: 3, State: NewSecret([]byte("st"))},
			GroupCreated{GroupID: gid, Ciphersuite: 3, State: NewSecret([]byte("st"))}},
		{KindWelcomeProcessed, welcomeProcessedV1{GroupID: gid, Epoch: 2, KeyPackageRef: []byte{9}, Welcome: []byte("w"), EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st"))},
			WelcomeProcessed{GroupID: gid, Epoch: 2, KeyPackageRef: []byte{9}, Welcome: []byte("w"), EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st"))}},
		{KindExternalJoined, externalJoinedV1{GroupID: gid, Epoch: 3, GroupInfo: []byte("gi"), Commit: []byte("c"), Resync: true, RemovedLeaf: 1, Reason: "lost",
			EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st"))},
			ExternalJoined{GroupID: gid, Epoch: 3, GroupInfo: []byte("gi"), Commit: []byte("c"), Resync: true, RemovedLeaf: 1, Reason: "lost",
				EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st"))}},
	} {
		env, err := seal(r, testBinding, testInst, c.kind, 1, h, c.v1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Open(r, testInst, testBinding, env)
		if err != nil {
			t.Fatalf("open %s v1: %v", c.kind, err)
		}
		assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: c.want})
		if got.Body.SchemaVersion() != c.want.SchemaVersion() {
			t.Fatalf("%s: upcast body reports version %d", c.kind, got.Body.SchemaVersion())
		}
	}
}

// A group.commit_applied of version 2 (its retirements in an event of
// their own) opens at version 3 with its committer and no retired epochs.
func TestUpcastCommitAppliedV2(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	committer := &Committer{Leaf: 3, Identity: []byte("dave"), Own: true}
	v2 := commitAppliedV2{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), State: NewSecret([]byte("st")), Removed: []Member{{Leaf: 2, Identity: []byte("carol")}}, Committer: committer}
	env, err := seal(r, testBinding, testInst, KindCommitApplied, 2, h, v2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.commit_applied v2: %v", err)
	}
	want := CommitApplied{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), State: NewSecret([]byte("st")), Removed: []Member{{Leaf: 2, Identity: []byte("carol")}}, Committer: committer}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
	// A v3 body under a v2 label is refused, not read with a field lost.
	withRetired := want
	withRetired.RetiredEpochs = []uint64{2}
	env, err = seal(r, testBinding, testInst, KindCommitApplied, 2, h, withRetired)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v3 body labelled v2: got %v, want ErrMalformed", err)
	}
}

// A group.created of version 2 (a successor's first commit an event of
// its own) opens at version 3 without a first commit; a v3 body with one
// under a v2 label is refused, not read with the commit lost.
func TestUpcastGroupCreatedV2(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 1, Time: testTime}
	gid := []byte{0xde, 0xad}
	members := []Member{{Leaf: 0, Identity: []byte("alice")}}
	v2 := groupCreatedV2{GroupID: gid, Ciphersuite: 3, State: NewSecret([]byte("st")), Members: members}
	env, err := seal(r, testBinding, testInst, KindGroupCreated, 2, h, v2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.created v2: %v", err)
	}
	want := GroupCreated{GroupID: gid, Ciphersuite: 3, State: NewSecret([]byte("st")), Members: members}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 1, Time: testTime, Body: want})
	if _, ok, _ := FirstCommitOf(got); ok {
		t.Fatal("an upcast v2 group.created stands for a first commit")
	}
	withFirst := want
	withFirst.FirstCommit = &CommitApplied{GroupID: gid, Epoch: 1, State: NewSecret([]byte("st1"))}
	env, err = seal(r, testBinding, testInst, KindGroupCreated, 2, h, withFirst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v3 body labelled v2: got %v, want ErrMalformed", err)
	}
}

// A group.created with a first commit stands for that commit at its own
// position and time, and is sealed under the key of the commit's epoch.
func TestFirstCommitOf(t *testing.T) {
	e := samples(testInst)[KindGroupCreated]
	gc := e.Body.(GroupCreated)
	if gc.FirstCommit == nil {
		t.Fatal("the group.created sample carries no first commit")
	}
	c, ok, err := FirstCommitOf(e)
	if err != nil || !ok || c.Aggregate != e.Aggregate || c.Position != e.Position || !c.Time.Equal(e.Time) || c.Body.Kind() != KindCommitApplied {
		t.Fatalf("FirstCommitOf: %v, %v, %+v", ok, err, c)
	}
	other := gc
	fc := *gc.FirstCommit
	fc.GroupID = []byte("another group")
	other.FirstCommit = &fc
	e2 := e
	e2.Body = other
	if _, _, err := FirstCommitOf(e2); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a first commit of another group: %v, want ErrMalformed", err)
	}
	if p := PeriodKeyOf(e, testTime); p.Class != ClassEpoch || p.Epoch != gc.FirstCommit.Epoch {
		t.Fatalf("a group.created with its first commit is keyed under %+v, want epoch %d", p, gc.FirstCommit.Epoch)
	}
	if _, ok, _ := FirstCommitOf(samples(testInst)[KindCommitApplied]); ok {
		t.Fatal("FirstCommitOf of a commit")
	}
}

// A keypackage.generated of version 1 (its publication an event of its
// own) opens at version 2 unpublished.
func TestUpcastKeyPackageGeneratedV1(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggKeyPackage, ID: "05"}
	h := eventHeader{Aggregate: agg, Position: 1, Time: testTime}
	v1 := keyPackageGeneratedV1{Ref: []byte{5}, Ciphersuite: 3, KeyPackage: []byte("kp"), InitPrivateKey: NewSecret([]byte("i")),
		EncryptionPrivateKey: NewSecret([]byte("e")), LastResort: true}
	env, err := seal(r, testBinding, testInst, KindKeyPackageGenerated, 1, h, v1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open keypackage.generated v1: %v", err)
	}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 1, Time: testTime, Body: KeyPackageGenerated{Ref: []byte{5}, Ciphersuite: 3,
		KeyPackage: []byte("kp"), InitPrivateKey: NewSecret([]byte("i")), EncryptionPrivateKey: NewSecret([]byte("e")), LastResort: true}})
}

// A group.commit_applied of version 3 (its state always whole) opens at
// version 4 with the same fields and no delta; a v4 body with a delta
// under a v3 label is refused, not read with its state lost.
func TestUpcastCommitAppliedV3(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	committer := &Committer{Leaf: 3, Identity: []byte("dave")}
	v3 := commitAppliedV3{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), State: NewSecret([]byte("st")), Committer: committer, RetiredEpochs: []uint64{3}}
	env, err := seal(r, testBinding, testInst, KindCommitApplied, 3, h, v3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.commit_applied v3: %v", err)
	}
	want := CommitApplied{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), State: NewSecret([]byte("st")), Committer: committer, RetiredEpochs: []uint64{3}}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
	withDelta := want.WithStateFrom([]byte("the state before"), []byte("the state before, and after"))
	env, err = seal(r, testBinding, testInst, KindCommitApplied, 3, h, withDelta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v4 body labelled v3: got %v, want ErrMalformed", err)
	}
}

// An application.message_sent of version 1 opens at version 2 with the
// same fields and Message nil (its output was not recorded); a v2 body
// with Message labelled v1 is refused.
func TestUpcastApplicationMessageSentV1(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	v1 := applicationMessageSentV1{GroupID: gid, Epoch: 6, SenderLeaf: 2, Sender: testInst, MessageID: []byte("m"),
		Content: NewSecret([]byte("hello")), AuthenticatedData: []byte("ad")}
	env, err := seal(r, testBinding, testInst, KindApplicationMessageSent, 1, h, v1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open application.message_sent v1: %v", err)
	}
	want := ApplicationMessageSent{GroupID: gid, Epoch: 6, SenderLeaf: 2, Sender: testInst, MessageID: []byte("m"),
		Content: NewSecret([]byte("hello")), AuthenticatedData: []byte("ad")}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
	want.Message = []byte("private-message")
	env, err = seal(r, testBinding, testInst, KindApplicationMessageSent, 1, h, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v2 body labelled v1: got %v, want ErrMalformed", err)
	}
}

// A group.commit_applied of version 4 opens at version 5 with the same
// fields, the state delta kept, and OwnOutput nil (its output was not
// recorded); a v5 body with OwnOutput labelled v4 is refused.
func TestUpcastCommitAppliedV4(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	committer := &Committer{Leaf: 3, Identity: []byte("dave"), Own: true}
	added := []Member{{Leaf: 4, Identity: []byte("erin")}}
	v4 := commitAppliedV4{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), StateDelta: NewSecret([]byte("delta")), StateSHA256: []byte("sum"), Added: added,
		Committer: committer, RetiredEpochs: []uint64{3}}
	env, err := seal(r, testBinding, testInst, KindCommitApplied, 4, h, v4)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.commit_applied v4: %v", err)
	}
	want := CommitApplied{GroupID: gid, Epoch: 6, EpochAuthenticator: []byte("a"), ConfirmedTranscriptHash: []byte("c"),
		Commit: []byte("commit"), StateDelta: NewSecret([]byte("delta")), StateSHA256: []byte("sum"), Added: added,
		Committer: committer, RetiredEpochs: []uint64{3}}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
	want.OwnOutput = &OwnOutput{Welcome: []byte("welcome")}
	env, err = seal(r, testBinding, testInst, KindCommitApplied, 4, h, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v5 body labelled v4: got %v, want ErrMalformed", err)
	}
}

// A group.external_joined of version 2 opens at version 3 with the same
// fields and OwnOutput nil (its output not recorded); a v3 body with
// OwnOutput labelled v2 is refused.
func TestUpcastExternalJoinedV2(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	ms := []Member{{Leaf: 0, Identity: []byte("alice")}, {Leaf: 1, Identity: []byte(testInst)}}
	v2 := externalJoinedV2{GroupID: gid, Epoch: 3, GroupInfo: []byte("gi"), Commit: []byte("c"),
		EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st")), Members: ms}
	env, err := seal(r, testBinding, testInst, KindExternalJoined, 2, h, v2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.external_joined v2: %v", err)
	}
	want := ExternalJoined{GroupID: gid, Epoch: 3, GroupInfo: []byte("gi"), Commit: []byte("c"),
		EpochAuthenticator: []byte("a"), State: NewSecret([]byte("st")), Members: ms}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
	want.OwnOutput = &OwnOutput{}
	env, err = seal(r, testBinding, testInst, KindExternalJoined, 2, h, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r, testInst, testBinding, env); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v3 body labelled v2: got %v, want ErrMalformed", err)
	}
}

// A group.proposal_staged of version 2 (its state always whole) opens at
// version 3 with the same fields and no delta.
func TestUpcastProposalStagedV2(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	agg := Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"}
	h := eventHeader{Aggregate: agg, Position: 9, Time: testTime}
	gid := []byte{0xde, 0xad}
	v2 := proposalStagedV2{GroupID: gid, Epoch: 4, ProposalRef: []byte{7}, ProposalType: 2, SenderLeaf: 1, Sender: []byte("bob"),
		SenderType: 2, Own: true, Proposal: []byte("p"), Message: []byte("m"), MessageID: []byte("id"), State: NewSecret([]byte("st"))}
	env, err := seal(r, testBinding, testInst, KindProposalStaged, 2, h, v2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(r, testInst, testBinding, env)
	if err != nil {
		t.Fatalf("open group.proposal_staged v2: %v", err)
	}
	want := ProposalStaged{GroupID: gid, Epoch: 4, ProposalRef: []byte{7}, ProposalType: 2, SenderLeaf: 1, Sender: []byte("bob"),
		SenderType: 2, Own: true, Proposal: []byte("p"), Message: []byte("m"), MessageID: []byte("id"), State: NewSecret([]byte("st"))}
	assertEventEqual(t, got, Event{Aggregate: agg, Position: 9, Time: testTime, Body: want})
}
