package replay

import (
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// A recorded group state of an encoding version this build does not load
// (version 1, which the first builds recorded, or a newer build's) cannot
// be re-derived: the MLS check says so and how to replay without it, and
// is no verification failure (exit 3, as if the history were forged). A
// state that does not decode is one.
func TestRecordedStateOfAnotherVersion(t *testing.T) {
	gid := []byte("group-0001")
	for _, v := range []byte{1, 0xFF} {
		_, err := recorded(events.NewSecret([]byte{v, 0, 0, 0}), gid, 1, nil)
		if !errors.Is(err, mls.ErrStateVersion) || IsVerificationFailure(err) {
			t.Errorf("state version %d: %v, want mls.ErrStateVersion and no verification failure", v, err)
		}
	}
	if _, err := recorded(events.NewSecret([]byte{4, 0, 0, 0}), gid, 1, nil); !errors.Is(err, ErrMLSMismatch) {
		t.Errorf("a state that does not decode: %v, want ErrMLSMismatch", err)
	}
}
