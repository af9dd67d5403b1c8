package mls_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// newClient makes a KeyPackage, with fresh keys, for a client named name.
// The KeyPackage is published; the secrets stay with the client.
func newClient(name string) (*mls.KeyPackage, *mls.KeyPackageSecrets) {
	kp, secrets, err := mls.NewKeyPackage(ciphersuite.Default, mls.NewBasicCredential([]byte(name)), nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	return kp, secrets
}

// A group round trip: Alice creates a group, adds Bob by a commit, Bob
// joins from the Welcome, and the two exchange an application message.
func Example() {
	aliceKP, aliceSecrets := newClient("alice")
	alice, err := mls.NewGroup([]byte("example-group"), aliceKP, aliceSecrets, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice created the group in epoch", alice.Epoch())

	// Bob publishes a KeyPackage; Alice commits adding it. Commit returns
	// Alice's state in the next epoch, the commit for the other members
	// (there are none yet) and the Welcome for Bob.
	bobKP, bobSecrets := newClient("bob")
	alice, res, err := alice.Commit(mls.CommitOptions{Add: []*mls.KeyPackage{bobKP}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice added bob, now in epoch", alice.Epoch())

	// Bob joins from the Welcome with the KeyPackage's private keys.
	bob, err := mls.Join(res.Welcome, bobKP, bobSecrets, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob joined in epoch", bob.Epoch(), "at leaf", bob.LeafIndex())
	fmt.Println("same epoch secrets:", bytes.Equal(alice.EpochAuthenticator(), bob.EpochAuthenticator()))

	// Sealing and opening use up a message key, so both return a new state
	// as well; a client keeps it for its next operation (this example ends
	// here, so it drops them).
	_, msg, err := alice.SealApplication([]byte("hello, bob"), nil)
	if err != nil {
		log.Fatal(err)
	}
	_, text, err := bob.OpenApplication(msg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob read %q\n", text)

	// Output:
	// alice created the group in epoch 0
	// alice added bob, now in epoch 1
	// bob joined in epoch 1 at leaf 1
	// same epoch secrets: true
	// bob read "hello, bob"
}

// Commit leaves the group it is called on untouched: the state before the
// commit is still in its epoch, and the returned one is in the next. A
// member that receives the commit moves to the same epoch with
// [mls.Group.Process].
func ExampleGroup_Commit() {
	aliceKP, aliceSecrets := newClient("alice")
	bobKP, bobSecrets := newClient("bob")
	alice, err := mls.NewGroup([]byte("example-group"), aliceKP, aliceSecrets, nil)
	if err != nil {
		log.Fatal(err)
	}
	alice, res, err := alice.Commit(mls.CommitOptions{Add: []*mls.KeyPackage{bobKP}})
	if err != nil {
		log.Fatal(err)
	}
	bob, err := mls.Join(res.Welcome, bobKP, bobSecrets, nil)
	if err != nil {
		log.Fatal(err)
	}

	// Bob refreshes his keys with an empty commit that carries a path.
	bobNext, res, err := bob.Commit(mls.CommitOptions{ForcePath: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob before the commit: epoch", bob.Epoch())
	fmt.Println("bob after the commit:  epoch", bobNext.Epoch())

	aliceNext, r, err := alice.Process(res.Commit)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("alice processed a commit from %s (leaf %d): epoch %d\n", r.SenderCredential.Identity, r.Sender, aliceNext.Epoch())
	fmt.Println("same epoch secrets:", bytes.Equal(aliceNext.EpochAuthenticator(), bobNext.EpochAuthenticator()))

	// Output:
	// bob before the commit: epoch 1
	// bob after the commit:  epoch 2
	// alice processed a commit from bob (leaf 1): epoch 2
	// same epoch secrets: true
}

// A Group's state is saved as bytes and loaded back, so that each state
// can be stored between transitions. The bytes hold secrets: store them
// encrypted.
func ExampleUnmarshalState() {
	kp, secrets := newClient("alice")
	alice, err := mls.NewGroup([]byte("example-group"), kp, secrets, nil)
	if err != nil {
		log.Fatal(err)
	}
	state, err := alice.MarshalBinary()
	if err != nil {
		log.Fatal(err)
	}
	loaded, err := mls.UnmarshalState(state)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("group %s, epoch %d, leaf %d\n", loaded.GroupID(), loaded.Epoch(), loaded.LeafIndex())
	fmt.Println("same epoch secrets:", bytes.Equal(loaded.EpochAuthenticator(), alice.EpochAuthenticator()))

	// Output:
	// group example-group, epoch 0, leaf 0
	// same epoch secrets: true
}
