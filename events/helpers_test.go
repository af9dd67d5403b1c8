package events

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// secretMark is planted in every Secret of the samples, so a redaction test
// can look for it (and its hex, base64 and decimal forms) in output.
var secretMark = []byte("TOPSECRET-plaintext-4b1d")

func secret(tag string) Secret {
	return NewSecret(append(append([]byte{}, secretMark...), tag...))
}

const testInst InstallationID = "inst-alice-01"

var testTime = time.Date(2026, 11, 23, 2, 30, 15, 123456789, time.UTC)

// sample returns one populated event of every kind in the catalogue,
// keyed by kind.
func samples(inst InstallationID) map[Kind]Event {
	gid := []byte{0xde, 0xad, 0xbe, 0xef}
	ref := []byte{0x01, 0x02, 0x03}
	grp := Aggregate{Installation: inst, Type: AggGroup, ID: "deadbeef"}
	kp := Aggregate{Installation: inst, Type: AggKeyPackage, ID: "010203"}
	dlv := Aggregate{Installation: inst, Type: AggDelivery, ID: "inbox"}
	bodies := []struct {
		agg  Aggregate
		body Body
	}{
		{Aggregate{Installation: inst, Type: AggInstallation}, InstallationCreated{
			Installation: inst, Ciphersuite: 3, SignaturePublicKey: []byte("sigpub"),
			SignaturePrivateKey: secret("sig"), Credential: []byte("cred")}},
		{Aggregate{Installation: inst, Type: AggInstallation}, ExternalPSKRegistered{PSKID: []byte("psk-1"), Secret: secret("psk")}},
		{Aggregate{Installation: inst, Type: AggInstallation}, ExternalPSKRetired{PSKID: []byte("psk-1")}},
		{kp, KeyPackageGenerated{Ref: ref, Ciphersuite: 3, KeyPackage: []byte("kp-tls"),
			InitPrivateKey: secret("init"), EncryptionPrivateKey: secret("enc"), LastResort: true}},
		{kp, KeyPackagePublished{Ref: ref, Destination: "directory"}},
		{kp, KeyPackageConsumed{Ref: ref, GroupID: gid, LastResort: true}},
		{kp, KeyPackageRotated{Ref: ref, ReplacedBy: []byte{9, 9}}},
		{grp, GroupCreated{GroupID: gid, Ciphersuite: 1, Epoch: 0, State: secret("state0"), Members: []Member{{Leaf: 0, Identity: []byte("alice")}},
			FirstCommit: &CommitApplied{GroupID: gid, Epoch: 1, EpochAuthenticator: []byte("auth1"), ConfirmedTranscriptHash: []byte("cth1"),
				Commit: []byte("commit1"), StateDelta: secret("delta1"), StateSHA256: []byte("sum1"), Added: []Member{{Leaf: 1, Identity: []byte("bob")}},
				Committer: &Committer{Leaf: 0, Identity: []byte("alice"), Own: true}, OwnOutput: &OwnOutput{Welcome: []byte("welcome1")}}}},
		{grp, ProposalStaged{GroupID: gid, Epoch: 4, ProposalRef: []byte{7}, ProposalType: 2, SenderLeaf: 5, Sender: []byte("erin"),
			Proposal: []byte("prop"), Message: []byte("prop-msg"), MessageID: []byte("pm1"), State: secret("state4p")}},
		{grp, CommitApplied{GroupID: gid, Epoch: 5, EpochAuthenticator: []byte("auth"), ConfirmedTranscriptHash: []byte("cth"),
			Commit: []byte("commit"), State: secret("state5"),
			Added: []Member{{Leaf: 3, Identity: []byte("bob")}}, Removed: []Member{{Leaf: 1, Identity: []byte("carol")}},
			Committer: &Committer{Leaf: 2, Identity: []byte("erin")}, RetiredEpochs: []uint64{1}, OwnOutput: &OwnOutput{Welcome: []byte("welcome5")}}},
		{grp, WelcomeProcessed{GroupID: gid, Epoch: 2, KeyPackageRef: ref, Welcome: []byte("welcome"), EpochAuthenticator: []byte("a2"), State: secret("state2"),
			Members: []Member{{Leaf: 0, Identity: []byte("alice")}, {Leaf: 2, Identity: []byte("carol")}}}},
		{grp, ExternalJoined{GroupID: gid, Epoch: 3, GroupInfo: []byte("gi"), RatchetTree: []byte("tree"), Commit: []byte("ext-commit"),
			Resync: true, RemovedLeaf: 2, Reason: "forked", EpochAuthenticator: []byte("a3"), State: secret("state3"),
			Members: []Member{{Leaf: 0, Identity: []byte("alice")}, {Leaf: 2, Identity: []byte(testInst)}}, OwnOutput: &OwnOutput{}}},
		{grp, MemberAdded{GroupID: gid, Epoch: 6, Leaf: 4, Identity: []byte("dave"), KeyPackageRef: ref}},
		{grp, MemberRemoved{GroupID: gid, Epoch: 7, Leaf: 4, Identity: []byte("dave"), Left: true}},
		{grp, EpochSecretsRetired{GroupID: gid, Epochs: []uint64{1, 2, 3}}},
		{grp, HandshakeFormatSet{GroupID: gid, WireFormat: 2}},
		{grp, StateRecorded{GroupID: gid, Epoch: 7, State: secret("state7r")}},
		{grp, ApplicationMessageSent{GroupID: gid, Epoch: 7, SenderLeaf: 0, Sender: inst, MessageID: []byte("m1"),
			Content: secret("hello"), AuthenticatedData: []byte("ad"), Message: []byte("private-message-1")}},
		{grp, ApplicationMessageReceived{GroupID: gid, Epoch: 7, SenderLeaf: 2, Sender: "inst-bob", MessageID: []byte("m2"),
			Content: secret("hi"), AuthenticatedData: []byte("ad2"), Generation: 41, GenerationKnown: true}},
		{dlv, DeliveryEnqueued{Recipient: "inst-bob", Channel: "inbox", Sequence: 12, Payload: []byte("ciphertext"),
			ExpiresAt: testTime.Add(time.Hour), IdempotencyKey: "idem-1"}},
		{dlv, DeliveryAcknowledged{Recipient: "inst-bob", Channel: "inbox", UpTo: 12}},
		{dlv, DeliveryExpired{Recipient: "inst-bob", Channel: "inbox", Sequence: 13, ExpiresAt: testTime}},
	}
	out := make(map[Kind]Event, len(bodies))
	for i, b := range bodies {
		out[b.body.Kind()] = Event{Aggregate: b.agg, Position: uint64(i + 1), Time: testTime, Body: b.body}
	}
	return out
}

func mustRootKey(t testing.TB, fill byte) RootKey {
	t.Helper()
	k, err := NewRootKey(bytes.Repeat([]byte{fill}, RootKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRing(t testing.TB, id KeyID, fill byte) *Keyring {
	t.Helper()
	r, err := NewKeyring(id, mustRootKey(t, fill))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var testBinding = Binding{Stream: "EPOCHLOG", Subject: "el.ev.p1.group.p2"}

func mustSeal(t testing.TB, r *Keyring, b Binding, e Event) []byte {
	t.Helper()
	env, err := Seal(r, b, e)
	if err != nil {
		t.Fatalf("seal %s: %v", e.Body.Kind(), err)
	}
	return env
}

// assertEventEqual compares events exactly, times included (Open returns
// UTC without a monotonic reading, so the input is normalized the same way).
func assertEventEqual(t testing.TB, got, want Event) {
	t.Helper()
	want.Time = want.Time.UTC().Round(0)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event differs\n got: %+v\nwant: %+v", got, want)
	}
}
