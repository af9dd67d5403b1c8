package eventlog

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/internal/redacttest"
)

// A Log holds its Config, credentials included, in an unexported field,
// where fmt cannot call Config's redacting methods: printing the Log
// (log.Printf("%v", l), slog.Any) must still show none of them.
func TestLogPrintsNoSecret(t *testing.T) {
	const pw, token = "pw-LogPrint-7c1e9a", "tok-LogPrint-3d8b2f"
	root := []byte("ROOT-LogPrint-0123456789abcdef!!")
	k, err := events.NewRootKey(root)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := events.NewKeyring(1, k)
	if err != nil {
		t.Fatal(err)
	}

	pwSrv := natstest.Start(t, natstest.Options{User: "logprint", Password: pw})
	byField := openLog(t, Config{NATSURL: pwSrv.URL(), User: "logprint", Password: NewSecret(pw), RequestTimeout: 5 * time.Second}, ring)
	inURL := strings.Replace(pwSrv.URL(), "://", "://logprint:"+pw+"@", 1)
	byURL := openLog(t, Config{NATSURL: inURL, Stream: "URLCREDS", SubjectPrefix: "urlcreds", RequestTimeout: 5 * time.Second}, ring)
	tokSrv := natstest.Start(t, natstest.Options{Token: token})
	byToken := openLog(t, Config{NATSURL: tokSrv.URL(), Token: NewSecret(token), RequestTimeout: 5 * time.Second}, ring)

	secrets := map[string][]byte{"password": []byte(pw), "token": []byte(token), "root key": root}
	for name, l := range map[string]*Log{"password": byField, "URL credentials": byURL, "token": byToken} {
		t.Run(name, func(t *testing.T) {
			redacttest.Check(t, l, secrets)
			if s := fmt.Sprint(l); !strings.Contains(s, l.cfg.Stream) {
				t.Errorf("String %q does not name the stream %s", s, l.cfg.Stream)
			}
		})
	}
}

// A Secret, and a Config holding one, print nothing of the credential
// however they are held: in an unexported field of a caller's struct,
// where fmt cannot call their methods and prints a string raw, behind a
// pointer, in a slice or a map, and through slog (internal/redacttest).
func TestSecretPrintsNothingWhereverHeld(t *testing.T) {
	const pw, token = "pw-SecretHeld-5e2a91", "tok-SecretHeld-8c4d07"
	secrets := map[string][]byte{"password": []byte(pw), "token": []byte(token)}
	p, tok := NewSecret(pw), NewSecret(token)
	cfg := Config{NATSURL: "nats://h:4222", User: "u", Password: p, Token: tok}
	redacttest.Check(t, p, map[string][]byte{"password": []byte(pw)})
	redacttest.Check(t, []Secret{p, tok}, secrets)
	redacttest.Check(t, map[string]Secret{"password": p, "token": tok}, secrets)
	redacttest.Check(t, cfg, secrets)
	redacttest.Check(t, &cfg, secrets)
	redacttest.Check(t, []Config{cfg}, secrets)
	redacttest.Check(t, map[string]*Config{"svc": &cfg}, secrets)
	if p.Reveal() != pw || tok.Reveal() != token {
		t.Fatalf("Reveal does not give back the credential")
	}
	if !NewSecret("").IsZero() || !(Secret{}).IsZero() || p.IsZero() {
		t.Fatalf("IsZero: NewSecret(\"\") and Secret{} must be zero, NewSecret(pw) not")
	}
	// A JSON document (a nats CLI context) fills a Secret; marshalling it
	// again redacts it.
	var doc struct{ Password Secret }
	if err := json.Unmarshal([]byte(`{"Password":"`+pw+`"}`), &doc); err != nil || doc.Password.Reveal() != pw {
		t.Fatalf("json.Unmarshal into a Secret: %v, got %d bytes", err, len(doc.Password.Reveal()))
	}
	if js, err := json.Marshal(doc); err != nil || strings.Contains(string(js), pw) {
		t.Fatalf("json.Marshal of a Secret: %v, %s", err, js)
	}
}
