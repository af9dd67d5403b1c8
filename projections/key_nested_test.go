package projections

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A Key kept in an unexported field of the caller's own struct is printed
// by fmt through reflection, without its Format method: its bytes must
// not be reachable there either (events.RootKey's rule).
func TestKeyRedactedInUnexportedField(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	k, _ := RawKey(raw)
	p, _ := PassphraseKey([]byte("hunter2-passphrase"))
	type holder struct {
		name string
		key  Key
	}
	for _, key := range []Key{k, p} {
		h := holder{"svc", key}
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "holder", h)
		for _, s := range []string{
			fmt.Sprintf("%v|%+v|%#v", h, h, h),
			fmt.Sprintf("%v|%+v|%#v", &h, &h, &h),
			fmt.Sprintf("%+v", []holder{h}),
			logged.String(),
		} {
			if strings.Contains(s, "171") || strings.Contains(strings.ToLower(s), "abab") || strings.Contains(s, "hunter2") ||
				strings.Contains(s, "104 117 110") || strings.Contains(s, "68756e") {
				t.Fatalf("key bytes printed through an unexported field: %s", s)
			}
		}
	}
}
