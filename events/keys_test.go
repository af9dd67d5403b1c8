package events

import "testing"

func TestZeroKeyringIsSafe(t *testing.T) {
	var r Keyring
	if r.Pseudonym("a") != "" || r.Current() != 0 || r.Has(1) || len(r.IDs()) != 0 {
		t.Fatal("an empty keyring claims keys")
	}
	if _, err := Seal(&r, testBinding, samples(testInst)[KindGroupCreated]); err == nil {
		t.Fatal("sealed with an empty keyring")
	}
	if err := r.Rotate(4, mustRootKey(t, 0x44)); err != nil {
		t.Fatal(err)
	}
	if r.Current() != 4 || r.Pseudonym("a") != mustRing(t, 4, 0x44).Pseudonym("a") {
		t.Fatal("a zero keyring with a key behaves differently from NewKeyring")
	}
	var nilRing *Keyring
	if nilRing.Pseudonym("a") != "" {
		t.Fatal("nil keyring returned a pseudonym")
	}
	if _, err := Open(nilRing, testInst, testBinding, make([]byte, 100)); err == nil {
		t.Fatal("opened with a nil keyring")
	}
}

// Seal, Open, Pseudonym and Rotate may run concurrently (run with -race).
func TestKeyringConcurrentUse(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindApplicationMessageSent]
	keys := map[KeyID]RootKey{}
	for id := KeyID(2); id < 12; id++ {
		keys[id] = mustRootKey(t, byte(id))
	}
	done := make(chan error, 4)
	for g := 0; g < 3; g++ {
		go func() {
			for i := 0; i < 50; i++ {
				env, err := Seal(r, testBinding, e)
				if err == nil {
					_, err = Open(r, testInst, testBinding, env)
				}
				if err != nil {
					done <- err
					return
				}
				_ = r.Pseudonym("x", string(rune('a'+i%26)))
			}
			done <- nil
		}()
	}
	go func() {
		for id := KeyID(2); id < 12; id++ {
			if err := r.Rotate(id, keys[id]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if r.Current() != 11 || len(r.IDs()) != 11 {
		t.Fatalf("after concurrent rotation: current %d, ids %v", r.Current(), r.IDs())
	}
}
