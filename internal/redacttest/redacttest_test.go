package redacttest

import "testing"

// Check looks for a secret in every form fmt and slog print bytes in: a
// holder that does not redact shows it in each of them.
func TestRenderingsShowUnredactedBytes(t *testing.T) {
	secret := []byte("secret-\x01\xfe-0123456789")
	type holder struct {
		b []byte
		B []byte // exported: slog's JSON handler prints it, in base64
	}
	found := map[string]bool{}
	for _, out := range Renderings(holder{secret, secret}) {
		found[Leak(out, secret)] = true
	}
	for _, form := range []string{"raw", "hex", "HEX", "decimal", "Go hex", "quoted", "base64"} {
		if !found[form] {
			t.Errorf("no rendering matched as %s (matched: %v)", form, found)
		}
	}
	if form := Leak("nothing to see", secret); form != "" {
		t.Errorf("Leak found %s in a string without the secret", form)
	}
}
