package eventlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A password or token in Config.NATSURL (nats://user:pw@host, the form
// redactURL hides in errors and logs) does not print with the Config
// either: under every verb, in JSON and through slog.
func TestConfigRedactsURLCredentials(t *testing.T) {
	const pw = "hunter2-in-the-url"
	for _, u := range []string{"nats://u:" + pw + "@h:4222", "nats://" + pw + "@h:4222,nats://h2:4222"} {
		cfg := Config{NATSURL: u, User: "u"}
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var text, jsonLog bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("config", "cfg", cfg)
		slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "cfg", cfg)
		for _, s := range []string{
			fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg),
			fmt.Sprintf("%+v", struct{ C Config }{cfg}), string(js), text.String(), jsonLog.String(),
		} {
			if strings.Contains(s, pw) {
				t.Fatalf("URL credentials printed with the Config: %s", s)
			}
			if !strings.Contains(s, "h:4222") {
				t.Fatalf("the URL's host is not printed: %s", s)
			}
		}
	}
	// The Config itself is not changed.
	cfg := Config{NATSURL: "nats://u:" + pw + "@h"}
	_ = fmt.Sprint(cfg)
	if cfg.NATSURL != "nats://u:"+pw+"@h" {
		t.Fatalf("printing changed the Config: %s", cfg.NATSURL)
	}
}
