package events

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSnapshotSealOpen(t *testing.T) {
	r := mustRing(t, 1, 0x21)
	b := SnapshotBinding{Stream: "EPOCHLOG", Installation: testInst, Checkpoint: 42}
	plain := bytes.Repeat([]byte("read model rows "), 100)
	sealed, err := SealSnapshot(r, b, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(plain)+SnapshotOverhead {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(plain)+SnapshotOverhead)
	}
	if bytes.Contains(sealed, []byte("read model rows")) {
		t.Fatal("plaintext visible in the sealed snapshot")
	}
	got, err := OpenSnapshot(r, b, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v (equal %v)", err, bytes.Equal(got, plain))
	}
	if id, err := SnapshotKeyID(sealed); err != nil || id != 1 {
		t.Fatalf("key id %d, %v", id, err)
	}

	t.Run("flipped byte", func(t *testing.T) {
		for _, at := range []int{snapOffNonce, snapshotHeaderSize, len(sealed) / 2, len(sealed) - 1} {
			bad := bytes.Clone(sealed)
			bad[at] ^= 0x01
			if _, err := OpenSnapshot(r, b, bad); !errors.Is(err, ErrTampered) {
				t.Fatalf("flip at %d: %v, want ErrTampered", at, err)
			}
		}
	})
	t.Run("other binding", func(t *testing.T) {
		for _, o := range []SnapshotBinding{
			{Stream: "OTHER", Installation: testInst, Checkpoint: 42},
			{Stream: "EPOCHLOG", Installation: "inst-bob", Checkpoint: 42},
			{Stream: "EPOCHLOG", Installation: testInst, Checkpoint: 43},
		} {
			if _, err := OpenSnapshot(r, o, sealed); !errors.Is(err, ErrTampered) {
				t.Fatalf("%+v: %v, want ErrTampered", o, err)
			}
		}
	})
	t.Run("wrong and unknown key", func(t *testing.T) {
		if _, err := OpenSnapshot(mustRing(t, 1, 0x22), b, sealed); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("other key under id 1: %v", err)
		}
		if _, err := OpenSnapshot(mustRing(t, 2, 0x21), b, sealed); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("no key id 1: %v", err)
		}
	})
	t.Run("header", func(t *testing.T) {
		size := uint64(len(sealed))
		if err := CheckSnapshotHeader(r, testInst, sealed[:SnapshotHeaderSize], size); err != nil {
			t.Fatalf("a sealed snapshot's header: %v", err)
		}
		for _, c := range []struct {
			name   string
			r      *Keyring
			header []byte
			size   uint64
			want   error
		}{
			{"garbage", r, bytes.Repeat([]byte("x"), SnapshotHeaderSize), size, ErrMalformed},
			{"short", r, sealed[:SnapshotHeaderSize], minSnapshotSize - 1, ErrMalformed},
			{"header cut", r, sealed[:SnapshotHeaderSize-1], size, ErrMalformed},
			{"other key under id 1", mustRing(t, 1, 0x22), sealed[:SnapshotHeaderSize], size, ErrWrongKey},
			{"no key id 1", mustRing(t, 2, 0x21), sealed[:SnapshotHeaderSize], size, ErrUnknownKey},
		} {
			if err := CheckSnapshotHeader(c.r, testInst, c.header, c.size); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
			full := append(bytes.Clone(c.header), make([]byte, max(int(c.size), len(c.header))-len(c.header))...)
			if c.name != "header cut" {
				if _, err := OpenSnapshot(c.r, b, full); !errors.Is(err, c.want) {
					t.Errorf("%s: OpenSnapshot says %v, CheckSnapshotHeader %v", c.name, err, c.want)
				}
			}
		}
	})
	t.Run("short envelope named by its size", func(t *testing.T) {
		// A header followed by one byte is 41 bytes, not the 40 read of
		// it (until this test the error said 40).
		err := CheckSnapshotHeader(r, testInst, sealed[:SnapshotHeaderSize], SnapshotHeaderSize+1)
		if want := fmt.Sprintf("is %d bytes", SnapshotHeaderSize+1); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
			t.Fatalf("a %d-byte envelope: %v, want ErrMalformed saying %q", SnapshotHeaderSize+1, err, want)
		}
	})
	t.Run("never an event", func(t *testing.T) {
		eb := Binding{Stream: "EPOCHLOG", Subject: "el.x.installation.y"}
		if _, err := Open(r, testInst, eb, sealed); err == nil {
			t.Fatal("a snapshot opened as an event")
		}
		env := mustSeal(t, r, eb, samples(testInst)[KindInstallationCreated])
		if _, err := OpenSnapshot(r, b, env); !errors.Is(err, ErrMalformed) {
			t.Fatalf("an event envelope as a snapshot: %v, want ErrMalformed", err)
		}
	})
	t.Run("rotated ring", func(t *testing.T) {
		if err := r.Rotate(2, mustRootKey(t, 0x23)); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenSnapshot(r, b, sealed); err != nil {
			t.Fatalf("an older key's snapshot after rotation: %v", err)
		}
		s2, err := SealSnapshot(r, b, plain)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := SnapshotKeyID(s2); id != 2 {
			t.Fatalf("new snapshot under key %d, want 2", id)
		}
	})
}
