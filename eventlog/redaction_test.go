package eventlog

import (
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
	byField := openLog(t, Config{NATSURL: pwSrv.URL(), User: "logprint", Password: pw, RequestTimeout: 5 * time.Second}, ring)
	inURL := strings.Replace(pwSrv.URL(), "://", "://logprint:"+pw+"@", 1)
	byURL := openLog(t, Config{NATSURL: inURL, Stream: "URLCREDS", SubjectPrefix: "urlcreds", RequestTimeout: 5 * time.Second}, ring)
	tokSrv := natstest.Start(t, natstest.Options{Token: token})
	byToken := openLog(t, Config{NATSURL: tokSrv.URL(), Token: token, RequestTimeout: 5 * time.Second}, ring)

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
