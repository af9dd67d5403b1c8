package events

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
)

// TestSecretsRedactedInSlog logs every secret type through slog's text and
// JSON handlers, as values and as LogValue: no byte of them may appear.
func TestSecretsRedactedInSlog(t *testing.T) {
	raw := bytes.Repeat([]byte{0xA7}, RootKeySize)
	k, err := NewRootKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	content := NewSecret([]byte("the plaintext of a message"))
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("secrets", "root", k, "content", content, "group", slog.GroupValue(slog.Any("nested", content)))
	}
	out := buf.String()
	for _, leak := range []string{string(content.Bytes()), hex.EncodeToString(raw), string(raw)} {
		if strings.Contains(out, leak) {
			t.Fatalf("slog output holds a secret: %s", out)
		}
	}
	if !strings.Contains(out, redactedRootKey) || strings.Count(out, "REDACTED") < 6 {
		t.Fatalf("slog output does not show the redacted forms: %s", out)
	}
	if got := k.LogValue().String(); got != redactedRootKey {
		t.Fatalf("RootKey.LogValue = %q", got)
	}
}
